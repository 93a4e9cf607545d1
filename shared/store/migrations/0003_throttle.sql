-- Windowed counters for the gateways' registration and authentication throttles, shared by
-- every gateway of the DC (docs/security/throttles.md). A row counts events for one key
-- ('reg:<address>', 'auth-addr:<address>', 'auth-user:<name>') from its first event until
-- expires_at; a later event after that starts a new window. Gateways delete expired rows.
--
-- UNLOGGED: counters are worth no WAL. After a database crash they restart at zero, which
-- costs an attacker's head start, nothing else; they are never replicated to other DCs.
CREATE UNLOGGED TABLE throttle (
    key         text        PRIMARY KEY,
    hits        integer     NOT NULL CHECK (hits >= 0),
    expires_at  timestamptz NOT NULL
);

CREATE INDEX throttle_expires_at ON throttle (expires_at);
