-- A webhook delivery id is accepted once per pipeline: a replay finds the
-- event (and the run) the first delivery created.
ALTER TABLE events ADD COLUMN delivery TEXT;
CREATE UNIQUE INDEX events_by_delivery ON events (pipeline, delivery);
