-- Whether an `up` run applies, on this target, a version below the highest
-- one the target already had when the run was requested (decided then, so
-- the approver sees what was asked for).
ALTER TABLE target_executions ADD COLUMN out_of_order boolean NOT NULL DEFAULT false;
