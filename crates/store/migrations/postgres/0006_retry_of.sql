-- A retried run names the run it retries.
ALTER TABLE runs ADD COLUMN retry_of TEXT;
