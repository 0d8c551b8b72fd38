-- The card of each model version (JSON), written once when it registers;
-- its SHA-256 is in the registration's audit entry, so a card edited
-- afterwards no longer matches.
ALTER TABLE model_versions ADD COLUMN card TEXT;
CREATE INDEX audit_by_subject ON audit (subject, action);
