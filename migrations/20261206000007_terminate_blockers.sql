-- Opt-in termination of idle-in-transaction blockers: after the
-- pre-flight's wait, a session still blocking a target whose transaction is
-- `idle in transaction` and older than this many milliseconds is terminated
-- (PostgreSQL `pg_terminate_backend`, MySQL `KILL`), audited with its
-- description. NULL: never (the default). Runs pin it.
ALTER TABLE environments
    ADD COLUMN terminate_idle_blockers_after_ms integer
        CHECK (terminate_idle_blockers_after_ms BETWEEN 1 AND 86400000);
ALTER TABLE runs
    ADD COLUMN terminate_idle_blockers_after_ms integer
        CHECK (terminate_idle_blockers_after_ms BETWEEN 1 AND 86400000);
