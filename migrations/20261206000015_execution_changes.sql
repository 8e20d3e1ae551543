-- A target execution changes many times a second in a large run (claimed,
-- progressing, finished). It is announced apart from the run's own changes,
-- as `execution:<run id>`, so replicas can treat it as progress: they start
-- the next read of the run at once and wake its live streams, without
-- making every request wait for a new read as a change of the run's state
-- or an approval (`run:<id>`) does. Ids only, as before.
CREATE FUNCTION announce_execution_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('migrate_hub_changes', 'execution:' || NEW.run_id::text);
    RETURN NULL;
END
$$;

DROP TRIGGER target_executions_announce_change ON target_executions;
CREATE TRIGGER target_executions_announce_change
    AFTER INSERT OR UPDATE ON target_executions
    FOR EACH ROW EXECUTE FUNCTION announce_execution_change();
