-- Multi-user chat (XEP-0045, issue 19): rooms and their occupants, replicated to every DC so
-- that whichever DC serves a room (its home, docs/muc.md) has it. Both tables have the shape
-- of the personal documents of 0006 (`username`, `key`, `body`, stamp) so that the same
-- replication code serves them (shared/store/src/replication/docs.rs): per row the larger
-- stamp wins, a deletion is a tombstone. `username` holds the room's bare JID (it contains an
-- '@', so no account ever has it: nothing is deleted with an account).
--
--   muc_rooms      key ''          body = the room's configuration and state (JSON, router-defined)
--                  key 'subject'   body = the subject message as the room sent it
--                  key 'a\n<jid>'  body = the affiliation of that bare JID (owner, admin, member, outcast)
--   muc_occupants  key = the nick, body = the occupant (JSON: real full JID, role, presence, DC)
--
-- The room's archive is rows of `archive` owned by the room's bare JID (migration 0004).
CREATE TABLE muc_rooms (
    username  text   NOT NULL,
    key       text   NOT NULL,
    body      text   NOT NULL,
    hlc       bigint NOT NULL,
    hlc_dc    text   NOT NULL,
    PRIMARY KEY (username, key)
);

CREATE TABLE muc_occupants (
    username  text   NOT NULL,
    key       text   NOT NULL,
    body      text   NOT NULL,
    hlc       bigint NOT NULL,
    hlc_dc    text   NOT NULL,
    PRIMARY KEY (username, key)
);

-- A user's rooms when its presence ends; the rooms with occupants at a DC declared down.
CREATE INDEX muc_occupants_by_jid ON muc_occupants ((body::jsonb ->> 'jid'));
CREATE INDEX muc_occupants_by_dc ON muc_occupants ((body::jsonb ->> 'dc'));
