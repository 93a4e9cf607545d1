-- Persistent-data replication between DCs: stamps on every replicated row, tombstones, the
-- per-DC outbox and what has been applied of the other DCs. See docs/replication.md.

-- The DC's clock and outbox sequence, one row. Every write transaction takes this row's lock
-- first: that makes `seq` gap-free and in commit order, and `hlc` monotonic.
CREATE TABLE replication_clock (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    -- The DC this database belongs to (set by the first service that opens it).
    dc        text,
    -- Names this database's life: a database rebuilt empty starts a new one, and the other
    -- DCs then follow its stream from 1 again. Ordered by creation time.
    epoch     text    NOT NULL DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS')
                                   || '-' || substr(md5(random()::text), 1, 8),
    seq       bigint  NOT NULL DEFAULT 0,
    hlc       bigint  NOT NULL DEFAULT 0
);
INSERT INTO replication_clock DEFAULT VALUES;

CREATE TABLE outbox (
    seq         bigint      PRIMARY KEY,
    record      jsonb       NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now()
);

-- Per origin DC: the epoch and last sequence applied here.
CREATE TABLE replication_applied (
    origin      text        PRIMARY KEY,
    epoch       text        NOT NULL,
    seq         bigint      NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Per other DC: what it last reported of itself (its outbox head) and of this DC (how far it
-- has applied our outbox: trimming waits for every peer).
CREATE TABLE replication_peers (
    dc          text        PRIMARY KEY,
    epoch       text        NOT NULL,
    head        bigint      NOT NULL,
    acked_epoch text        NOT NULL,
    acked       bigint      NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);

-- Deleted items, kept so that an older write arriving later does not bring them back.
-- kind: account | roster | request | offline; key as in docs/replication.md.
CREATE TABLE tombstones (
    kind        text        NOT NULL,
    key         text        NOT NULL,
    username    text        NOT NULL,
    hlc         bigint      NOT NULL,
    hlc_dc      text        NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);

ALTER TABLE accounts
    ADD COLUMN hlc      bigint NOT NULL DEFAULT 0,
    ADD COLUMN hlc_dc   text   NOT NULL DEFAULT '',
    ADD COLUMN born     bigint NOT NULL DEFAULT 0,
    ADD COLUMN born_dc  text   NOT NULL DEFAULT '';
ALTER TABLE roster_items
    ADD COLUMN hlc      bigint NOT NULL DEFAULT 0,
    ADD COLUMN hlc_dc   text   NOT NULL DEFAULT '';
ALTER TABLE subscription_requests
    ADD COLUMN hlc      bigint NOT NULL DEFAULT 0,
    ADD COLUMN hlc_dc   text   NOT NULL DEFAULT '';
ALTER TABLE offline_messages
    ADD COLUMN uid      uuid   NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    ADD COLUMN hlc      bigint NOT NULL DEFAULT 0,
    ADD COLUMN hlc_dc   text   NOT NULL DEFAULT '';

-- A user's data may arrive from another DC before their account does (or outlive it until the
-- account's deletion arrives): rows no longer need an account row. Deleting an account deletes
-- its data explicitly.
ALTER TABLE roster_items DROP CONSTRAINT roster_items_username_fkey;
ALTER TABLE subscription_requests DROP CONSTRAINT subscription_requests_username_fkey;
ALTER TABLE offline_messages DROP CONSTRAINT offline_messages_username_fkey;
