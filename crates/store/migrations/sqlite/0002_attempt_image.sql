-- The image an attempt ran, resolved to its id, for lineage.
ALTER TABLE attempts ADD COLUMN image TEXT;
