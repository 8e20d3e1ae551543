-- Every commit that notifies takes PostgreSQL's one notification lock until
-- it is durable, so notifying commits are written one after another. A
-- target's progress (the migration it has reached, the statement) is
-- written many times per target; announcing each made the commits of every
-- running target queue behind each other. Only a change of an execution's
-- state is announced now; live run streams pick up progress on their own
-- (see control-plane/src/live.rs).
DROP TRIGGER target_executions_announce_change ON target_executions;
CREATE TRIGGER target_executions_announce_change
    AFTER UPDATE OF state ON target_executions
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION announce_execution_change();
