-- A migration's down script is either absent (the version cannot be rolled
-- back) or present, possibly empty (rolling back needs no SQL), as
-- golang-migrate, dbmate, diesel and Flyway read their files.
--
-- Before this migration an empty (or whitespace-only) down_sql meant
-- "absent". Those rows keep that meaning and their text, so their checksums
-- (also recorded in targets' migrate_hub_history tables) stay valid; see
-- common/src/domain/checksum.rs for the encoding.
ALTER TABLE migrations ADD COLUMN reversible boolean;
UPDATE migrations SET reversible = down_sql !~ '^\s*$';
ALTER TABLE migrations
    ALTER COLUMN reversible SET NOT NULL,
    ADD CONSTRAINT migrations_absent_down_is_blank CHECK (reversible OR down_sql ~ '^\s*$');
COMMENT ON COLUMN migrations.reversible IS
    'false: no down script (cannot be rolled back); down_sql is then blank';

ALTER TABLE migration_revisions ADD COLUMN reversible boolean;
UPDATE migration_revisions SET reversible = down_sql !~ '^\s*$';
ALTER TABLE migration_revisions
    ALTER COLUMN reversible SET NOT NULL,
    ADD CONSTRAINT migration_revisions_absent_down_is_blank CHECK (reversible OR down_sql ~ '^\s*$');
