-- What each replay of a model version's run found: the replay run, the
-- run it replayed, and the comparison of their artifacts (JSON).
CREATE TABLE replays (
    run_id      TEXT PRIMARY KEY,
    model       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    original    TEXT NOT NULL,
    reproduced  BOOLEAN NOT NULL,
    result      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX replays_by_version ON replays (model, version, created_at);
