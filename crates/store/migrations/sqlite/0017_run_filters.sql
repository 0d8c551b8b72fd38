-- A filtered page of runs is read from an index whatever the filter: by
-- cause, and by pipeline and state together (a pipeline's few failed runs
-- among a year of its successes), not by scanning the history.
CREATE INDEX runs_by_trigger ON runs (trigger, created_at, id);
CREATE INDEX runs_by_pipeline_state ON runs (pipeline, state, created_at, id);
