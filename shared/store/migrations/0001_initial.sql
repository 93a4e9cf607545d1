-- Accounts, rosters, pending subscription requests and offline messages.
-- See docs/storage.md for why the schema looks like this.

CREATE TABLE accounts (
    username            text        PRIMARY KEY,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- SCRAM keys only (RFC 5802 §3); the password is never stored.
    sha1_salt           bytea       NOT NULL,
    sha1_iterations     integer     NOT NULL CHECK (sha1_iterations > 0),
    sha1_stored_key     bytea       NOT NULL,
    sha1_server_key     bytea       NOT NULL,
    sha256_salt         bytea       NOT NULL,
    sha256_iterations   integer     NOT NULL CHECK (sha256_iterations > 0),
    sha256_stored_key   bytea       NOT NULL,
    sha256_server_key   bytea       NOT NULL,
    -- RFC 6121 roster version: bumped by every roster write; the row lock serialises them.
    roster_version      bigint      NOT NULL DEFAULT 0
);

CREATE TABLE roster_items (
    username      text    NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    contact       text    NOT NULL,
    name          text,
    subscription  text    NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask_out       boolean NOT NULL DEFAULT false,
    approved      boolean NOT NULL DEFAULT false,
    groups        text[]  NOT NULL DEFAULT '{}',
    -- The roster version at which this item last changed.
    version       bigint  NOT NULL,
    PRIMARY KEY (username, contact)
);

-- Inbound subscription requests not yet answered, one per (user, contact), redelivered at login.
CREATE TABLE subscription_requests (
    username    text        NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    contact     text        NOT NULL,
    stanza      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (username, contact)
);

CREATE TABLE offline_messages (
    id         bigserial   PRIMARY KEY,
    username   text        NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    stanza     text        NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX offline_messages_by_user ON offline_messages (username, id);
