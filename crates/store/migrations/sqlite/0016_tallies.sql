-- What /metrics counts, kept as it changes so a scrape reads a few rows
-- instead of counting a year of runs: runs and step instances by state
-- (they move between states and go when pruned), events by kind and
-- outcome (a counter: an event dropped from the store stays counted).
-- Triggers keep it in every write of those tables; SQLite has one writer
-- at a time, so the rows are updated in place.
CREATE TABLE tallies (
    tbl  TEXT NOT NULL,
    k1   TEXT NOT NULL,
    k2   TEXT NOT NULL DEFAULT '',
    n    INTEGER NOT NULL,
    PRIMARY KEY (tbl, k1, k2)
);

INSERT INTO tallies (tbl, k1, k2, n) SELECT 'runs', state, '', COUNT(*) FROM runs GROUP BY state;
INSERT INTO tallies (tbl, k1, k2, n) SELECT 'steps', state, '', COUNT(*) FROM steps GROUP BY state;
INSERT INTO tallies (tbl, k1, k2, n)
    SELECT 'events', kind, outcome, SUM(n) FROM (
        SELECT kind, outcome, COUNT(*) AS n FROM events GROUP BY kind, outcome
        UNION ALL SELECT kind, outcome, dropped AS n FROM event_drops
    ) GROUP BY kind, outcome;
DROP TABLE event_drops;

CREATE TRIGGER runs_tally_insert AFTER INSERT ON runs BEGIN
    INSERT INTO tallies (tbl, k1, k2, n) VALUES ('runs', NEW.state, '', 1)
        ON CONFLICT (tbl, k1, k2) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER runs_tally_update AFTER UPDATE OF state ON runs WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE tallies SET n = n - 1 WHERE tbl = 'runs' AND k1 = OLD.state AND k2 = '';
    INSERT INTO tallies (tbl, k1, k2, n) VALUES ('runs', NEW.state, '', 1)
        ON CONFLICT (tbl, k1, k2) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER runs_tally_delete AFTER DELETE ON runs BEGIN
    UPDATE tallies SET n = n - 1 WHERE tbl = 'runs' AND k1 = OLD.state AND k2 = '';
END;

CREATE TRIGGER steps_tally_insert AFTER INSERT ON steps BEGIN
    INSERT INTO tallies (tbl, k1, k2, n) VALUES ('steps', NEW.state, '', 1)
        ON CONFLICT (tbl, k1, k2) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER steps_tally_update AFTER UPDATE OF state ON steps WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE tallies SET n = n - 1 WHERE tbl = 'steps' AND k1 = OLD.state AND k2 = '';
    INSERT INTO tallies (tbl, k1, k2, n) VALUES ('steps', NEW.state, '', 1)
        ON CONFLICT (tbl, k1, k2) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER steps_tally_delete AFTER DELETE ON steps BEGIN
    UPDATE tallies SET n = n - 1 WHERE tbl = 'steps' AND k1 = OLD.state AND k2 = '';
END;

CREATE TRIGGER events_tally_insert AFTER INSERT ON events BEGIN
    INSERT INTO tallies (tbl, k1, k2, n) VALUES ('events', NEW.kind, NEW.outcome, 1)
        ON CONFLICT (tbl, k1, k2) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER events_tally_update AFTER UPDATE OF kind, outcome ON events
    WHEN OLD.kind IS NOT NEW.kind OR OLD.outcome IS NOT NEW.outcome BEGIN
    UPDATE tallies SET n = n - 1 WHERE tbl = 'events' AND k1 = OLD.kind AND k2 = OLD.outcome;
    INSERT INTO tallies (tbl, k1, k2, n) VALUES ('events', NEW.kind, NEW.outcome, 1)
        ON CONFLICT (tbl, k1, k2) DO UPDATE SET n = n + 1;
END;
