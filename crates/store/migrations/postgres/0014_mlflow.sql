-- The MLflow mirror's outbox: what is to be written to an MLflow server
-- (a run's params and metrics, a registered version, an alias), tried
-- again with backoff while the server is away, and what came of it.
CREATE TABLE mlflow_outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          TEXT NOT NULL,
    subject       TEXT NOT NULL,
    tracking_uri  TEXT NOT NULL,
    experiment    TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    next_at       TIMESTAMPTZ NOT NULL,
    last_error    TEXT,
    result        TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (kind, subject)
);
CREATE INDEX mlflow_outbox_due ON mlflow_outbox (state, next_at, id);
