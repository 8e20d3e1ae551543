-- Schema snapshots: what each target's schema is after each execution
-- (docs/Requirements.md, "Schema snapshots"). The text of a schema is stored
-- once per distinct hash, so a fleet of identical shards keeps one copy;
-- PostgreSQL compresses it (TOAST, `pglz`) as any long text.
CREATE TABLE schema_texts (
    hash       text PRIMARY KEY CHECK (hash ~ '^sha256:[0-9a-f]{64}$'),
    engine     text NOT NULL CHECK (engine IN ('postgres', 'mysql')),
    schema     text NOT NULL,
    objects    integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One snapshot of one target: taken before an execution's first migration
-- (only when the target has none yet) and after every execution that
-- reached the target, under the target lock. Table sizes (the planner's
-- row estimate, bytes) are kept beside the schema, never in its hash.
CREATE TABLE schema_snapshots (
    id           uuid PRIMARY KEY,
    target_id    uuid NOT NULL REFERENCES targets (id),
    execution_id uuid REFERENCES target_executions (id),
    hash         text NOT NULL REFERENCES schema_texts (hash),
    taken        text NOT NULL CHECK (taken IN ('before', 'after')),
    sizes        jsonb NOT NULL DEFAULT '[]',
    taken_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schema_snapshots_target_idx ON schema_snapshots (target_id, taken_at DESC);
CREATE INDEX schema_snapshots_execution_idx ON schema_snapshots (execution_id);
CREATE INDEX schema_snapshots_hash_idx ON schema_snapshots (hash);
