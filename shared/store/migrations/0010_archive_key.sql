-- The routed envelope an archived row came from, so that a handling repeated after its archive
-- write (a retry, a redelivery to another router of the DC) finds the row it wrote rather than
-- archiving the message twice. This DC's own rows only: rows applied from another DC have none
-- (the envelope is handled at the sender's DC alone).
ALTER TABLE archive ADD COLUMN msg_key uuid;
CREATE UNIQUE INDEX archive_by_key ON archive (username, msg_key) WHERE msg_key IS NOT NULL;
