-- Which targets a migration was applied to, found by the migration: the
-- foreign key's own column, read when a run is approved or executed (the
-- promotion gate), when a migration is listed or edited (applied anywhere).
-- Without it each of those read every row on record, once per migration,
-- and the table grows with every target and every migration.
CREATE INDEX applied_migrations_migration_idx ON applied_migrations (migration_id);
