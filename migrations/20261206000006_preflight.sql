-- The pre-flight (docs/Requirements.md, "Executing runs"): before a
-- target's first migration and before every retry, the worker looks for
-- sessions that would block it and waits up to `preflight_wait_ms` for them
-- to go. A session holding a table the migration touches blocks it; so does
-- any transaction in the same database open longer than `blocker_age_ms`.
-- Runs pin both (NULL for runs from before: no pre-flight).
ALTER TABLE environments
    ADD COLUMN preflight_wait_ms integer NOT NULL DEFAULT 60000
        CHECK (preflight_wait_ms BETWEEN 0 AND 3600000),
    ADD COLUMN blocker_age_ms integer NOT NULL DEFAULT 60000
        CHECK (blocker_age_ms BETWEEN 0 AND 86400000);

ALTER TABLE runs
    ADD COLUMN preflight_wait_ms integer CHECK (preflight_wait_ms BETWEEN 0 AND 3600000),
    ADD COLUMN blocker_age_ms integer CHECK (blocker_age_ms BETWEEN 0 AND 86400000);
