-- The SHA-256 of a webhook delivery's signed body, so the same body sent
-- again with a new delivery id within the pipeline's dedupe window starts
-- nothing; and what was dropped of the rejected deliveries kept (the
-- newest 1,000 per pipeline), counted so /metrics still says how many
-- there were.
ALTER TABLE events ADD COLUMN body_sha256 TEXT;
CREATE INDEX events_body ON events (pipeline, body_sha256);
CREATE INDEX events_outcome ON events (pipeline, kind, outcome, id);
CREATE TABLE event_drops (
    pipeline TEXT NOT NULL,
    kind     TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    dropped  BIGINT NOT NULL,
    PRIMARY KEY (pipeline, kind, outcome)
);
