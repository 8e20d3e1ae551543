-- Deciding what a run starts next and whether it is over happens after each
-- finished target; these indexes let it probe the run's pending, active and
-- failed executions and its canary instead of reading every execution, so
-- it costs the same whatever the size of the fleet.
CREATE INDEX target_executions_run_pending_idx ON target_executions (run_id, position)
    WHERE state = 'pending';
CREATE INDEX target_executions_run_active_idx ON target_executions (run_id)
    WHERE state IN ('queued', 'running', 'waiting_for_window');
CREATE INDEX target_executions_run_failed_idx ON target_executions (run_id)
    WHERE state IN ('failed', 'interrupted');
-- The canary (positions 1..N) and the run page's rows in order.
CREATE INDEX target_executions_run_position_idx ON target_executions (run_id, position);
