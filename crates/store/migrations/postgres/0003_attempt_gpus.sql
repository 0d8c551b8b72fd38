-- The GPU device ids granted to an attempt (a JSON array).
ALTER TABLE attempts ADD COLUMN gpus TEXT NOT NULL DEFAULT '[]';
