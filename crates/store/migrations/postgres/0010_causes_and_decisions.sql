-- A run's cause and an event's decision as a kind plus JSON: runs.trigger
-- keeps the cause's kind and runs.cause all of it; events.outcome holds
-- the decision's kind and events.detail all of it (events.decision stays
-- the text shown to people). Rows written before this migration are
-- carried over by the store when it opens (upgrade.rs), which records
-- that it did in `upgrades`.
ALTER TABLE runs ADD COLUMN cause TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN outcome TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN detail TEXT NOT NULL DEFAULT '';
CREATE TABLE upgrades (
    name  TEXT PRIMARY KEY
);
