-- Lineage: the git commit of the pipelines folder a run came from, and
-- the SHA-256 of each artifact an attempt declared.
ALTER TABLE runs ADD COLUMN source_commit TEXT;
ALTER TABLE attempts ADD COLUMN artifacts TEXT NOT NULL DEFAULT '{}';
