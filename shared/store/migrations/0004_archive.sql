-- The message archive (XEP-0313) and each user's archiving preferences, replicated to every
-- DC like the rest of a user's data (docs/storage.md, docs/replication.md).

-- One row per archived message per owner. (hlc, hlc_dc) is the write's stamp, unique per row
-- (a write of several messages advances the clock once per message): it is the message's
-- place in the owner's archive, the same at every DC; `id` encodes it.
CREATE TABLE archive (
    id             text    PRIMARY KEY,
    username       text    NOT NULL,
    -- The other party, bare; and its resource when the message named one ('' otherwise).
    with_jid       text    NOT NULL,
    with_resource  text    NOT NULL DEFAULT '',
    stanza         text    NOT NULL,
    hlc            bigint  NOT NULL,
    hlc_dc         text    NOT NULL
);
-- A user's whole archive in order, and one conversation in order (the usual query).
CREATE INDEX archive_by_owner ON archive (username, hlc, hlc_dc);
CREATE INDEX archive_by_conversation ON archive (username, with_jid, hlc, hlc_dc);

-- XEP-0313 §6.1 preferences; no row = the server's default, no lists.
CREATE TABLE archive_prefs (
    username      text    PRIMARY KEY,
    default_mode  text    NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
    always        text[]  NOT NULL DEFAULT '{}',
    never         text[]  NOT NULL DEFAULT '{}',
    hlc           bigint  NOT NULL,
    hlc_dc        text    NOT NULL
);
