-- A roster item is three things written apart: its name and groups (by the owner's clients),
-- the owner's subscription to the contact with the pending `ask` (the "to" half) and the
-- contact's to the owner with the pre-approval (the "from" half). Two DCs may each change
-- another part of one item at the same moment (both users of a pair approving each other, one
-- at each DC): each part keeps the stamp of its last change, and replication merges an item
-- part by part, the later stamp winning each, rather than the whole row by its newest stamp.
ALTER TABLE roster_items
    ADD COLUMN meta_hlc bigint, ADD COLUMN meta_dc text,
    ADD COLUMN to_hlc bigint, ADD COLUMN to_dc text,
    ADD COLUMN from_hlc bigint, ADD COLUMN from_dc text;
UPDATE roster_items SET meta_hlc = hlc, meta_dc = hlc_dc, to_hlc = hlc, to_dc = hlc_dc,
    from_hlc = hlc, from_dc = hlc_dc;
ALTER TABLE roster_items
    ALTER COLUMN meta_hlc SET NOT NULL, ALTER COLUMN meta_dc SET NOT NULL,
    ALTER COLUMN to_hlc SET NOT NULL, ALTER COLUMN to_dc SET NOT NULL,
    ALTER COLUMN from_hlc SET NOT NULL, ALTER COLUMN from_dc SET NOT NULL;
