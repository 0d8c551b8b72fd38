-- What /metrics counts, kept as it changes so a scrape reads a few rows
-- instead of counting a year of runs: runs and step instances by state
-- (they move between states and go when pruned), events by kind and
-- outcome (a counter: an event dropped from the store stays counted).
-- Writers only append to tally_deltas, so concurrent transactions on
-- several nodes never wait on (or deadlock over) a shared counter row;
-- a reader folds the deltas into tallies, one reader at a time
-- (Store::counts).
CREATE TABLE tallies (
    tbl  TEXT NOT NULL,
    k1   TEXT NOT NULL,
    k2   TEXT NOT NULL DEFAULT '',
    n    BIGINT NOT NULL,
    PRIMARY KEY (tbl, k1, k2)
);
CREATE TABLE tally_deltas (
    id   BIGSERIAL PRIMARY KEY,
    tbl  TEXT NOT NULL,
    k1   TEXT NOT NULL,
    k2   TEXT NOT NULL DEFAULT '',
    n    BIGINT NOT NULL
);

INSERT INTO tallies (tbl, k1, k2, n) SELECT 'runs', state, '', COUNT(*) FROM runs GROUP BY state;
INSERT INTO tallies (tbl, k1, k2, n) SELECT 'steps', state, '', COUNT(*) FROM steps GROUP BY state;
INSERT INTO tallies (tbl, k1, k2, n)
    SELECT 'events', kind, outcome, SUM(n) FROM (
        SELECT kind, outcome, COUNT(*) AS n FROM events GROUP BY kind, outcome
        UNION ALL SELECT kind, outcome, dropped AS n FROM event_drops
    ) AS counted GROUP BY kind, outcome;
DROP TABLE event_drops;

-- Runs and steps: by state.
CREATE FUNCTION tally_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO tally_deltas (tbl, k1, n) VALUES (TG_TABLE_NAME, OLD.state, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO tally_deltas (tbl, k1, n) VALUES (TG_TABLE_NAME, NEW.state, 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_tally AFTER INSERT OR DELETE ON runs
    FOR EACH ROW EXECUTE FUNCTION tally_state();
CREATE TRIGGER runs_tally_update AFTER UPDATE OF state ON runs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION tally_state();
CREATE TRIGGER steps_tally AFTER INSERT OR DELETE ON steps
    FOR EACH ROW EXECUTE FUNCTION tally_state();
CREATE TRIGGER steps_tally_update AFTER UPDATE OF state ON steps
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION tally_state();

-- Events: by kind and outcome, counted when written (never uncounted).
CREATE FUNCTION tally_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO tally_deltas (tbl, k1, k2, n) VALUES ('events', OLD.kind, OLD.outcome, -1);
    END IF;
    INSERT INTO tally_deltas (tbl, k1, k2, n) VALUES ('events', NEW.kind, NEW.outcome, 1);
    RETURN NULL;
END $$;
CREATE TRIGGER events_tally AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION tally_event();
CREATE TRIGGER events_tally_update AFTER UPDATE OF kind, outcome ON events
    FOR EACH ROW WHEN (OLD.kind IS DISTINCT FROM NEW.kind OR OLD.outcome IS DISTINCT FROM NEW.outcome)
    EXECUTE FUNCTION tally_event();
