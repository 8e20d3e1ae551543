-- SQL review before approval (docs/SQL_Review.md).
--
-- Each environment carries a review policy: a setting per analyzer
-- (`off`, `warning`, `error`; absent ones follow the defaults) and whether
-- every migration must have a down script. High-risk runs may need more
-- approvals, and one of them from an admin.
ALTER TABLE environments
    ADD COLUMN review_policy jsonb NOT NULL DEFAULT '{"settings": {}, "require_down": false}'
        CHECK (jsonb_typeof(review_policy) = 'object'),
    ADD COLUMN high_risk_approvals integer NOT NULL DEFAULT 0
        CHECK (high_risk_approvals BETWEEN 0 AND 10),
    ADD COLUMN high_risk_requires_admin boolean NOT NULL DEFAULT false;

-- A run's review as it was computed when requested (and again after each
-- waiver): findings per pinned migration and engine, the risk, and the
-- digest of it all, which the run's digest covers. NULL for runs requested
-- before reviews existed.
ALTER TABLE runs
    ADD COLUMN review jsonb,
    ADD COLUMN review_digest text,
    ADD COLUMN risk text CHECK (risk IN ('low', 'medium', 'high'));

-- The role an approver acted with (the lesser of the user's and the
-- token's): a high-risk run may need an admin among its approvers.
ALTER TABLE approvals ADD COLUMN role text CHECK (role IN ('user', 'manager', 'admin'));

-- Admin waivers of a run's findings, each with a reason. They are part of
-- the review, hence of the digest: approvals given before a waiver do not
-- count after it.
CREATE TABLE run_waivers (
    id uuid PRIMARY KEY,
    run_id uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    version text NOT NULL,
    code text NOT NULL,
    line integer NOT NULL CHECK (line >= 0),
    reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    created_by uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, version, code, line)
);
