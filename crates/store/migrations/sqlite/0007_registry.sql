-- The model registry: versions (one per register step of a run, so a
-- retried attempt finds the version it made), aliases, and every alias
-- move, which answers "which version was production at time T".
CREATE TABLE model_versions (
    model       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    artifact    TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    metrics     TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    step        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (model, version),
    UNIQUE (run_id, step)
);

CREATE TABLE model_aliases (
    model    TEXT NOT NULL,
    alias    TEXT NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (model, alias)
);

CREATE TABLE alias_moves (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    model         TEXT NOT NULL,
    alias         TEXT NOT NULL,
    version       INTEGER NOT NULL,
    from_version  INTEGER,
    actor         TEXT NOT NULL,
    run_id        TEXT,
    moved_at      TEXT NOT NULL
);
CREATE INDEX alias_moves_by_alias ON alias_moves (model, alias, moved_at);
