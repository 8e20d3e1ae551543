-- Every control-plane replica shares reads of a run between the requests
-- watching it, and pushes its changes to the run's live streams. A change
-- made on another replica or by a worker must reach every replica at once:
-- these triggers announce `run:<id>` on the channel `migrate_hub_changes`
-- (ids only, never content) in the writing transaction. PostgreSQL delivers
-- the notification at commit, never for a rollback, and sends one per
-- distinct payload per transaction: a transaction that changes many of a
-- run's executions announces the run once.

-- A run's state, decisions pinned on it (waivers, invalidation), schedule.
CREATE FUNCTION announce_run_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('migrate_hub_changes', 'run:' || NEW.id::text);
    RETURN NULL;
END
$$;

-- A row that belongs to a run: an approval, a target execution.
CREATE FUNCTION announce_run_part_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('migrate_hub_changes', 'run:' || COALESCE(NEW.run_id, OLD.run_id)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_announce_change
    AFTER UPDATE ON runs
    FOR EACH ROW EXECUTE FUNCTION announce_run_change();

CREATE TRIGGER approvals_announce_change
    AFTER INSERT OR UPDATE OR DELETE ON approvals
    FOR EACH ROW EXECUTE FUNCTION announce_run_part_change();

CREATE TRIGGER target_executions_announce_change
    AFTER INSERT OR UPDATE ON target_executions
    FOR EACH ROW EXECUTE FUNCTION announce_run_part_change();
