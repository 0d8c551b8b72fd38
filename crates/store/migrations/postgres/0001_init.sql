-- weir's state on PostgreSQL. JSON values are TEXT, as on SQLite, so the
-- queries are the same on both; times are TIMESTAMPTZ.
CREATE TABLE pipelines (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE runs (
    id             TEXT PRIMARY KEY,
    pipeline       TEXT NOT NULL,
    pipeline_hash  TEXT NOT NULL REFERENCES pipelines (hash),
    trigger        TEXT NOT NULL,
    params         TEXT NOT NULL,
    event          TEXT NOT NULL,
    models         TEXT NOT NULL,
    state          TEXT NOT NULL,
    reason         TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    started_at     TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ,
    deadline       TIMESTAMPTZ,
    stopping       TEXT
);
CREATE INDEX runs_by_state ON runs (state, created_at);
CREATE INDEX runs_by_pipeline ON runs (pipeline, created_at);

CREATE TABLE steps (
    run_id         TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx            BIGINT NOT NULL,
    id             TEXT NOT NULL,
    step           BIGINT NOT NULL,
    matrix         TEXT NOT NULL,
    state          TEXT NOT NULL,
    reason         TEXT,
    not_before     TIMESTAMPTZ,
    waiting_until  TIMESTAMPTZ,
    evidence       TEXT NOT NULL,
    started_at     TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE attempts (
    run_id       TEXT NOT NULL,
    step_idx     BIGINT NOT NULL,
    number       BIGINT NOT NULL,
    state        TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    deadline     TIMESTAMPTZ,
    stopping     TEXT,
    exit_code    BIGINT,
    metrics      TEXT NOT NULL,
    outputs      TEXT NOT NULL,
    reason       TEXT,
    log_bytes    BIGINT NOT NULL DEFAULT 0,
    log_dropped  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, step_idx, number),
    FOREIGN KEY (run_id, step_idx) REFERENCES steps (run_id, idx) ON DELETE CASCADE
);

CREATE TABLE logs (
    run_id      TEXT NOT NULL,
    step_idx    BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, step_idx, attempt, seq),
    FOREIGN KEY (run_id, step_idx, attempt) REFERENCES attempts (run_id, step_idx, number) ON DELETE CASCADE
);

CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        TEXT NOT NULL,
    pipeline    TEXT,
    run_id      TEXT,
    payload     TEXT NOT NULL,
    decision    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_by_time ON events (created_at);
