-- XEP-0153 (issue 17): the photo hash of each stored vCard, computed from the body whenever a
-- vCard is written here or applied from another DC (shared/store/src/replication/docs.rs), so
-- that an available presence needs one indexed read of a short value, not the vCard.
--
--   photo_hash  SHA-1 (lowercase hex) of the decoded PHOTO/BINVAL; '' for no photo
--   photo_hlc   the `hlc` of the body the hash was computed from. A row whose photo_hlc is not
--               its hlc (rows from before this migration, or written by a process of the
--               previous version during a rolling upgrade, which leaves these columns alone)
--               has its hash computed from the body when read, until its next write.
ALTER TABLE vcards ADD COLUMN photo_hash text;
ALTER TABLE vcards ADD COLUMN photo_hlc bigint;
