-- Recurring maintenance windows (grammar in docs/Requirements.md), e.g.
-- `Mon-Fri 02:00-05:00 Europe/Berlin`. On an environment: NULL, no window
-- (migrations run at any time). On a DB set: NULL follows its environment;
-- a schedule of its own (or `always`) overrides it. Windows decide when a
-- run's targets start, not what they execute: they are read when a target
-- starts and between its migrations, and are not part of a run's digest.
ALTER TABLE environments
    ADD COLUMN maintenance_window text CHECK (length(maintenance_window) <= 500);
ALTER TABLE db_sets
    ADD COLUMN maintenance_window text CHECK (length(maintenance_window) <= 500);

-- When an Execute outside the window queued the run's first targets: the
-- window's next opening (after `not_before`, if any).
ALTER TABLE runs ADD COLUMN scheduled_for timestamptz;

-- A target that stopped between two migrations at the window's end, or was
-- not started outside a window, waits for the next one; its job is due then.
ALTER TABLE target_executions DROP CONSTRAINT target_executions_state_check;
ALTER TABLE target_executions ADD CONSTRAINT target_executions_state_check
    CHECK (state IN ('pending', 'queued', 'running', 'waiting_for_window', 'succeeded', 'failed',
                     'skipped', 'interrupted', 'cancelled'));
