-- migrate-hub tool database: the whole domain in one baseline.
-- Later changes go into new files; this one is never edited once released.

-- People and credentials ------------------------------------------------------

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    email       text NOT NULL,
    name        text NOT NULL DEFAULT '',
    role        text NOT NULL CHECK (role IN ('user', 'manager', 'admin')),
    disabled    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    CONSTRAINT users_email_lower CHECK (email = lower(email))
);
CREATE UNIQUE INDEX users_email_key ON users (email);

-- API tokens: only the SHA-256 of the secret is kept; the secret is shown once.
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id),
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('user', 'manager', 'admin')),
    token_hash   bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE UNIQUE INDEX api_tokens_token_hash_key ON api_tokens (token_hash);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

-- Browser sessions (tower-sessions store). `data` is the serialized record.
CREATE TABLE sessions (
    id          text PRIMARY KEY,
    user_id     uuid REFERENCES users (id),
    data        bytea NOT NULL,
    expiry_date timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_expiry_date_idx ON sessions (expiry_date);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Environments and their approval policy --------------------------------------

CREATE TABLE environments (
    name                     text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,29}$'),
    position                 integer NOT NULL,
    required_approvals       integer NOT NULL DEFAULT 1 CHECK (required_approvals >= 1),
    allow_self_approval      boolean NOT NULL DEFAULT true,
    require_previous_success boolean NOT NULL DEFAULT false,
    lock_timeout_ms          integer NOT NULL DEFAULT 5000 CHECK (lock_timeout_ms >= 0),
    statement_timeout_ms     integer NOT NULL DEFAULT 600000 CHECK (statement_timeout_ms >= 0),
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    -- `prd` never lets the requester or an author approve.
    CONSTRAINT environments_prd_no_self_approval CHECK (name <> 'prd' OR NOT allow_self_approval)
);
CREATE UNIQUE INDEX environments_position_key ON environments (position);

INSERT INTO environments (name, position, required_approvals, allow_self_approval, require_previous_success)
VALUES ('daily', 10, 1, true, false),
       ('stg', 20, 1, true, true),
       ('prd', 30, 2, false, true);

-- Inventory --------------------------------------------------------------------

CREATE TABLE projects (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL CHECK (slug ~ '^[a-z0-9-]{2,40}$'),
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    archived_at timestamptz,
    created_by  uuid REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX projects_slug_key ON projects (slug);

CREATE TABLE db_sets (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id),
    environment text NOT NULL REFERENCES environments (name) ON UPDATE CASCADE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX db_sets_project_name_key ON db_sets (project_id, name) WHERE deleted_at IS NULL;

CREATE TABLE targets (
    id                  uuid PRIMARY KEY,
    db_set_id           uuid NOT NULL REFERENCES db_sets (id),
    name                text NOT NULL,
    engine              text NOT NULL CHECK (engine IN ('postgres', 'mysql')),
    host                text NOT NULL,
    port                integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    database_name       text NOT NULL,
    username            text NOT NULL,
    -- AES-SIV ciphertext of the password, associated data = the target id.
    password_ciphertext bytea,
    password_key_id     text,
    tls_mode            text NOT NULL DEFAULT 'prefer'
                        CHECK (tls_mode IN ('disable', 'prefer', 'require', 'verify-full')),
    session_settings    text NOT NULL DEFAULT '',
    worker_pool         text NOT NULL DEFAULT 'default',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    CONSTRAINT targets_password_key CHECK ((password_ciphertext IS NULL) = (password_key_id IS NULL))
);
CREATE UNIQUE INDEX targets_db_set_name_key ON targets (db_set_id, name) WHERE deleted_at IS NULL;
CREATE INDEX targets_db_set_id_idx ON targets (db_set_id);

-- A target whose last execution stopped part-way through a non-transactional
-- script. It takes no new run until an admin resolves it.
CREATE TABLE target_dirty_states (
    target_id        uuid PRIMARY KEY REFERENCES targets (id),
    run_id           uuid NOT NULL,
    version          text NOT NULL,
    direction        text NOT NULL CHECK (direction IN ('up', 'down')),
    statement_index  integer NOT NULL,
    statements_hash  text NOT NULL,
    error            text NOT NULL,
    since            timestamptz NOT NULL DEFAULT now(),
    -- Set when an admin asked to resume the script from this 1-based
    -- statement (the run's execution on the target is queued again).
    resume_from      integer CHECK (resume_from >= 1)
);

-- Migrations ---------------------------------------------------------------------

CREATE TABLE migrations (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id),
    version     text NOT NULL,
    -- Numeric sort key: the dot-separated components of the version.
    version_key numeric[] NOT NULL,
    name        text NOT NULL,
    up_sql      text NOT NULL,
    down_sql    text NOT NULL DEFAULT '',
    checksum    text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    transactional boolean NOT NULL DEFAULT true,
    revision    integer NOT NULL DEFAULT 1,
    author_id   uuid NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX migrations_project_version_key ON migrations (project_id, version);
CREATE INDEX migrations_project_order_idx ON migrations (project_id, version_key);

-- Every revision of a migration, so edits can be diffed and attributed.
CREATE TABLE migration_revisions (
    migration_id uuid NOT NULL REFERENCES migrations (id),
    revision     integer NOT NULL,
    name         text NOT NULL,
    up_sql       text NOT NULL,
    down_sql     text NOT NULL,
    checksum     text NOT NULL,
    author_id    uuid NOT NULL REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, revision)
);

-- Runs, approvals, executions -------------------------------------------------------

CREATE TABLE runs (
    id                   uuid PRIMARY KEY,
    project_id           uuid NOT NULL REFERENCES projects (id),
    db_set_id            uuid NOT NULL REFERENCES db_sets (id),
    environment          text NOT NULL REFERENCES environments (name) ON UPDATE CASCADE,
    direction            text NOT NULL CHECK (direction IN ('up', 'down')),
    target_version       text NOT NULL,
    state                text NOT NULL CHECK (state IN ('pending_approval', 'approved', 'queued', 'running',
                             'succeeded', 'failed', 'partially_failed', 'denied', 'cancelled', 'invalidated')),
    note                 text NOT NULL DEFAULT '',
    requested_by         uuid NOT NULL REFERENCES users (id),
    -- Execution settings pinned into the digest.
    stop_on_failure      boolean NOT NULL DEFAULT false,
    concurrency          integer NOT NULL DEFAULT 8 CHECK (concurrency >= 1),
    canary               integer NOT NULL DEFAULT 0 CHECK (canary >= 0),
    lock_timeout_ms      integer NOT NULL,
    statement_timeout_ms integer NOT NULL,
    digest               text NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),
    state_reason         text,
    not_before           timestamptz,
    executed_by          uuid REFERENCES users (id),
    -- W3C traceparent of the Execute request: every job of the run joins its trace.
    traceparent          text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    queued_at            timestamptz,
    finished_at          timestamptz
);
CREATE INDEX runs_project_created_idx ON runs (project_id, created_at DESC);
CREATE INDEX runs_state_idx ON runs (state);
CREATE INDEX runs_db_set_idx ON runs (db_set_id);

-- The migrations a run covers, in execution order, with the checksum at request time.
CREATE TABLE run_migrations (
    run_id       uuid NOT NULL REFERENCES runs (id),
    position     integer NOT NULL,
    migration_id uuid NOT NULL REFERENCES migrations (id),
    version      text NOT NULL,
    checksum     text NOT NULL,
    PRIMARY KEY (run_id, position)
);
CREATE INDEX run_migrations_migration_idx ON run_migrations (migration_id);

CREATE TABLE approvals (
    id          uuid PRIMARY KEY,
    run_id      uuid NOT NULL REFERENCES runs (id),
    user_id     uuid NOT NULL REFERENCES users (id),
    decision    text NOT NULL CHECK (decision IN ('approved', 'denied')),
    comment     text NOT NULL DEFAULT '',
    -- The run digest the approver saw; an approval covers exactly this digest.
    digest      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX approvals_run_user_key ON approvals (run_id, user_id);

-- State history of a run, shown on the run page.
CREATE TABLE run_transitions (
    id         bigserial PRIMARY KEY,
    run_id     uuid NOT NULL REFERENCES runs (id),
    from_state text,
    to_state   text NOT NULL,
    actor_id   uuid REFERENCES users (id),
    reason     text,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_transitions_run_idx ON run_transitions (run_id, id);

-- One row per (run, target), pinned when the run is requested.
CREATE TABLE target_executions (
    id              uuid PRIMARY KEY,
    run_id          uuid NOT NULL REFERENCES runs (id),
    target_id       uuid NOT NULL REFERENCES targets (id),
    position        integer NOT NULL,
    state           text NOT NULL CHECK (state IN ('pending', 'queued', 'running', 'succeeded', 'failed',
                        'skipped', 'interrupted', 'cancelled')),
    worker_pool     text NOT NULL,
    worker_id       uuid,
    attempt         integer NOT NULL DEFAULT 0,
    queued_at       timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    duration_ms     bigint,
    current_version text,
    statement_index integer,
    -- Hash of the statements of current_version applied before
    -- statement_index, reported with the progress of a script run statement
    -- by statement: what a target whose worker died is marked dirty with.
    statements_hash text,
    error           text,
    CONSTRAINT target_executions_run_target_key UNIQUE (run_id, target_id)
);
CREATE INDEX target_executions_target_idx ON target_executions (target_id);
CREATE INDEX target_executions_state_idx ON target_executions (state) WHERE state IN ('queued', 'running');

-- Per target, per migration, per run: what happened (rule 4).
CREATE TABLE migration_executions (
    id                  bigserial PRIMARY KEY,
    target_execution_id uuid NOT NULL REFERENCES target_executions (id),
    target_id           uuid NOT NULL REFERENCES targets (id),
    version             text NOT NULL,
    direction           text NOT NULL CHECK (direction IN ('up', 'down')),
    checksum            text NOT NULL,
    outcome             text NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL,
    duration_ms         bigint NOT NULL,
    statements          integer NOT NULL DEFAULT 0,
    error               text
);
CREATE INDEX migration_executions_te_idx ON migration_executions (target_execution_id);

-- The hub's record of what is applied on each target (mirrored in the target's
-- own `migrate_hub_history`).
CREATE TABLE applied_migrations (
    target_id    uuid NOT NULL REFERENCES targets (id),
    version      text NOT NULL,
    version_key  numeric[] NOT NULL,
    migration_id uuid REFERENCES migrations (id),
    checksum     text NOT NULL,
    run_id       uuid REFERENCES runs (id),
    applied_at   timestamptz NOT NULL DEFAULT now(),
    duration_ms  bigint NOT NULL DEFAULT 0,
    baseline     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (target_id, version)
);

-- Workers ----------------------------------------------------------------------------

CREATE TABLE workers (
    id                uuid PRIMARY KEY,
    pool              text NOT NULL,
    hostname          text NOT NULL,
    pid               integer NOT NULL,
    version           text NOT NULL,
    concurrency       integer NOT NULL,
    running_jobs      integer NOT NULL DEFAULT 0,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz
);
CREATE INDEX workers_pool_idx ON workers (pool, last_heartbeat_at DESC);

-- Audit log: append-only, hash-chained ---------------------------------------------

CREATE TABLE audit_log (
    seq         bigint PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor_id    uuid,
    actor       text NOT NULL,
    action      text NOT NULL,
    object_type text NOT NULL DEFAULT '',
    object_id   text NOT NULL DEFAULT '',
    project_id  uuid,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    ip          text,
    prev_hash   text NOT NULL,
    hash        text NOT NULL
);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, seq);
CREATE INDEX audit_log_action_idx ON audit_log (action, seq);
CREATE INDEX audit_log_project_idx ON audit_log (project_id, seq);
CREATE INDEX audit_log_at_idx ON audit_log (at);

-- The head of the chain. Appenders lock this single row, which serializes
-- appends without a table lock and makes `seq` gap-free.
CREATE TABLE audit_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (true, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Audit rows are never updated or deleted.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- Notifications ------------------------------------------------------------------------

CREATE TABLE webhooks (
    id             uuid PRIMARY KEY,
    project_id     uuid NOT NULL REFERENCES projects (id),
    -- The URL may carry a secret (Slack-style): stored encrypted, never shown again.
    url_ciphertext bytea NOT NULL,
    url_key_id     text NOT NULL,
    url_hint       text NOT NULL,
    events         text[] NOT NULL,
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_project_idx ON webhooks (project_id);

CREATE TABLE webhook_deliveries (
    id            bigserial PRIMARY KEY,
    webhook_id    uuid NOT NULL REFERENCES webhooks (id),
    event         text NOT NULL,
    payload       jsonb NOT NULL,
    state         text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status   integer,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
