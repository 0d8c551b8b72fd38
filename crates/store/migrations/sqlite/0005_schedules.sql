-- Cron slots: each fired slot once per pipeline (a restart or a replayed
-- backfill never fires it again), and how far each schedule was considered.
CREATE TABLE schedule_fires (
    pipeline    TEXT NOT NULL,
    slot        TEXT NOT NULL,
    run_id      TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (pipeline, slot)
);

CREATE TABLE schedule_marks (
    pipeline  TEXT NOT NULL,
    cron      TEXT NOT NULL,
    mark      TEXT NOT NULL,
    PRIMARY KEY (pipeline, cron)
);
