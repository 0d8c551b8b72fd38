-- weir's state on SQLite. JSON values are TEXT; times are RFC 3339 TEXT.
CREATE TABLE pipelines (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  TEXT NOT NULL
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
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    deadline       TEXT,
    stopping       TEXT
);
CREATE INDEX runs_by_state ON runs (state, created_at);
CREATE INDEX runs_by_pipeline ON runs (pipeline, created_at);

CREATE TABLE steps (
    run_id         TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx            INTEGER NOT NULL,
    id             TEXT NOT NULL,
    step           INTEGER NOT NULL,
    matrix         TEXT NOT NULL,
    state          TEXT NOT NULL,
    reason         TEXT,
    not_before     TEXT,
    waiting_until  TEXT,
    evidence       TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE attempts (
    run_id       TEXT NOT NULL,
    step_idx     INTEGER NOT NULL,
    number       INTEGER NOT NULL,
    state        TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    deadline     TEXT,
    stopping     TEXT,
    exit_code    INTEGER,
    metrics      TEXT NOT NULL,
    outputs      TEXT NOT NULL,
    reason       TEXT,
    log_bytes    INTEGER NOT NULL DEFAULT 0,
    log_dropped  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, step_idx, number),
    FOREIGN KEY (run_id, step_idx) REFERENCES steps (run_id, idx) ON DELETE CASCADE
);

CREATE TABLE logs (
    run_id      TEXT NOT NULL,
    step_idx    INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    data        BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, step_idx, attempt, seq),
    FOREIGN KEY (run_id, step_idx, attempt) REFERENCES attempts (run_id, step_idx, number) ON DELETE CASCADE
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    pipeline    TEXT,
    run_id      TEXT,
    payload     TEXT NOT NULL,
    decision    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (created_at);
