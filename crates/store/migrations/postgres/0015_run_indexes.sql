-- Retention picks the runs that finished longest ago first; listings page
-- newest first from a cursor.
CREATE INDEX runs_by_finish ON runs (finished_at);
CREATE INDEX runs_by_created ON runs (created_at, id);
