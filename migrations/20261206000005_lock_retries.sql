-- Short lock budgets, retried (docs/Requirements.md, "Executing runs").
--
-- An environment says how many times a migration whose lock budget
-- (`lock_timeout_ms`) ran out is tried again; a run pins it with its other
-- execution settings (NULL for runs requested before retries existed: they
-- are not retried). New environments get a 2 s budget.
ALTER TABLE environments
    ADD COLUMN lock_retries integer NOT NULL DEFAULT 5 CHECK (lock_retries BETWEEN 0 AND 20),
    ALTER COLUMN lock_timeout_ms SET DEFAULT 2000;

ALTER TABLE runs ADD COLUMN lock_retries integer CHECK (lock_retries BETWEEN 0 AND 20);

-- Each execution counts its retries, and says what it waits for while it
-- waits (shown live on the run page and in the API).
ALTER TABLE target_executions
    ADD COLUMN lock_retries integer NOT NULL DEFAULT 0,
    ADD COLUMN waiting text;
