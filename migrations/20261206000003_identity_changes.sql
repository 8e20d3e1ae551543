-- Every control-plane replica shares reads of API tokens (and the user
-- behind them) between concurrent requests. A change that takes rights away
-- must reach every replica at once, whichever replica (or command) made it:
-- these triggers announce it on the channel `migrate_hub_changes`, in the
-- writing transaction (PostgreSQL delivers it at commit, never for a
-- rollback), with ids only. Each replica listens and retires its shared
-- reads when it hears one (control-plane/src/changes.rs).
CREATE FUNCTION announce_identity_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('migrate_hub_changes',
                      TG_ARGV[0] || ':' || COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END
$$;

-- A role change or a disabled account; sign-in times are not announced.
CREATE TRIGGER users_announce_change
    AFTER UPDATE OF role, disabled OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION announce_identity_change('user');

-- A new, revoked, re-scoped or shortened token; `last_used_at` is not announced.
CREATE TRIGGER api_tokens_announce_change
    AFTER INSERT OR UPDATE OF role, expires_at, revoked_at, user_id OR DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION announce_identity_change('token');
