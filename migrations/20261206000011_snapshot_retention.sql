-- Retention of schema snapshots (MH_SNAPSHOT_RETENTION_DAYS): a schema text
-- is removed once no snapshot refers to it and it was last used before the
-- retention horizon. Recording a snapshot of a known schema touches
-- `last_used_at` (a row lock), so a text in use is never removed under it.
ALTER TABLE schema_texts ADD COLUMN last_used_at timestamptz NOT NULL DEFAULT now();
