-- The version a target was at (the newest the hub records as applied) when
-- a snapshot was taken: what "the schema a version produces" looks up.
ALTER TABLE schema_snapshots ADD COLUMN version text;
CREATE INDEX schema_snapshots_version_idx ON schema_snapshots (version, taken_at DESC);
