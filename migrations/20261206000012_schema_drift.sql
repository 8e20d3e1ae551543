-- Schema drift (docs/Requirements.md, "Schema drift"): each worker pool
-- scans its targets now and then and compares what their schema is with the
-- baseline — the newest snapshot that is not a drift reading: the one the
-- last execution left, an admin's acceptance, or the first reading of a
-- target the hub had never read.
--   `scan`:     a scan's reading that differed from the baseline (drift)
--   `accepted`: an admin accepted the drift as the new baseline
--   `initial`:  the first reading of a target without any snapshot
ALTER TABLE schema_snapshots DROP CONSTRAINT schema_snapshots_taken_check;
ALTER TABLE schema_snapshots ADD CONSTRAINT schema_snapshots_taken_check
    CHECK (taken IN ('before', 'after', 'scan', 'accepted', 'initial'));

-- When each target was last scanned (the pool's workers share the scans:
-- each claims the target whose scan is most overdue), and why the last scan
-- could not read it (NULL: it could).
ALTER TABLE targets ADD COLUMN schema_scanned_at timestamptz;
ALTER TABLE targets ADD COLUMN schema_scan_error text;
CREATE INDEX targets_schema_scan_idx ON targets (worker_pool, schema_scanned_at NULLS FIRST)
    WHERE deleted_at IS NULL;

-- A drifted target: its schema differs from its baseline. The row goes when
-- a scan finds the drift reverted, an execution records a new baseline, or
-- an admin accepts the drift.
CREATE TABLE schema_drift (
    target_id   uuid PRIMARY KEY REFERENCES targets (id),
    baseline_id uuid NOT NULL REFERENCES schema_snapshots (id),
    snapshot_id uuid NOT NULL REFERENCES schema_snapshots (id),
    detected_at timestamptz NOT NULL DEFAULT now(),
    checked_at  timestamptz NOT NULL DEFAULT now()
);

-- What runs do with a drifted target of the environment: `warn` (shown to
-- approvers, runs go on) or `block` (its executions are refused until an
-- admin accepts the drift or it is reverted).
ALTER TABLE environments
    ADD COLUMN on_drift text NOT NULL DEFAULT 'warn' CHECK (on_drift IN ('warn', 'block'));
