-- Retention picks the runs that finished longest ago first.
CREATE INDEX runs_by_finish ON runs (finished_at);
