//! Runs: request, approvals, state changes, and the digest they pin.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::{
        Checksum, Engine, RunState, TargetState, TlsMode, Version,
        run::{Direction, ExecutionSettings, PinnedMigration, PinnedTarget, RunPin},
    },
    review::run::{AdminWaiver, RunReview},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub db_set_id: Uuid,
    pub environment: String,
    #[sqlx(try_from = "String")]
    pub direction: Direction,
    pub target_version: String,
    #[sqlx(try_from = "String")]
    pub state: RunState,
    pub note: String,
    pub requested_by: Uuid,
    pub requester: String,
    pub stop_on_failure: bool,
    pub concurrency: i32,
    pub canary: i32,
    pub lock_timeout_ms: i32,
    pub statement_timeout_ms: i32,
    pub lock_retries: Option<i32>,
    pub preflight_wait_ms: Option<i32>,
    pub blocker_age_ms: Option<i32>,
    pub terminate_idle_blockers_after_ms: Option<i32>,
    pub digest: String,
    /// The digest of the run's SQL review; `None` for runs requested before
    /// reviews existed.
    pub review_digest: Option<String>,
    /// `low`, `medium` or `high`, from the review.
    pub risk: Option<String>,
    pub state_reason: Option<String>,
    pub not_before: Option<OffsetDateTime>,
    /// When Execute outside the maintenance window queued the first
    /// targets: the window's next opening (after `not_before`).
    pub scheduled_for: Option<OffsetDateTime>,
    /// W3C `traceparent` of the Execute request, carried by every job of
    /// the run (also those queued later) so they share one trace.
    pub traceparent: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub queued_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
}

impl RunRow {
    pub fn settings(&self) -> ExecutionSettings {
        ExecutionSettings {
            direction: self.direction,
            target_version: Version::parse(&self.target_version)
                .expect("stored versions are canonical"),
            stop_on_failure: self.stop_on_failure,
            concurrency: self.concurrency,
            canary: self.canary,
            lock_timeout_ms: self.lock_timeout_ms,
            statement_timeout_ms: self.statement_timeout_ms,
            lock_retries: self.lock_retries,
            preflight_wait_ms: self.preflight_wait_ms,
            blocker_age_ms: self.blocker_age_ms,
            terminate_idle_blockers_after_ms: self.terminate_idle_blockers_after_ms,
        }
    }
}

const RUN_COLUMNS: &str = "r.id, r.project_id, r.db_set_id, r.environment, r.direction, r.target_version, r.state, r.note,
    r.requested_by, u.email AS requester, r.stop_on_failure, r.concurrency, r.canary, r.lock_timeout_ms,
    r.statement_timeout_ms, r.lock_retries, r.preflight_wait_ms, r.blocker_age_ms,
    r.terminate_idle_blockers_after_ms, r.digest, r.review_digest, r.risk, r.state_reason, r.not_before, r.scheduled_for, r.traceparent, r.created_at, r.updated_at, r.queued_at, r.finished_at";

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN users u ON u.id = r.requested_by WHERE r.id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Reads the run and locks its row until the transaction ends, so that
/// approvals, execution, cancellation, the run's outcome and the dispatch
/// decisions a finished target cannot take alone (stop on failure, the
/// canary) are serialized. `NO KEY UPDATE`: the rows that reference the
/// run (what its targets record as applied, their executions) take a key
/// share on it for their foreign key, and must not wait for this lock —
/// with `FOR UPDATE` every target's record waited for every other target's
/// settling.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN users u ON u.id = r.requested_by WHERE r.id = $1 FOR NO KEY UPDATE OF r"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Runs still `queued` or `running` although none of their executions is
/// open any more: their last finisher stopped between its commit and the
/// run's settling. At most `limit`.
pub async fn unsettled(conn: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT r.id FROM runs r
         WHERE r.state IN ('queued', 'running')
           AND EXISTS (SELECT 1 FROM target_executions te WHERE te.run_id = r.id)
           AND NOT EXISTS (SELECT 1 FROM target_executions te
                           WHERE te.run_id = r.id AND te.state = 'pending')
           AND NOT EXISTS (SELECT 1 FROM target_executions te
                           WHERE te.run_id = r.id
                             AND te.state IN ('queued', 'running', 'waiting_for_window'))
         ORDER BY r.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    before: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN users u ON u.id = r.requested_by
         WHERE r.project_id = $1 AND ($2::timestamptz IS NULL OR (r.created_at, r.id) < ($2, $3))
         ORDER BY r.created_at DESC, r.id DESC LIMIT $4"
    )))
    .bind(project_id)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A migration pinned by a run, with its current text and checksum.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunMigrationRow {
    pub position: i32,
    pub migration_id: Uuid,
    pub version: String,
    /// The checksum when the run was requested.
    pub checksum: String,
    pub name: String,
    /// The checksum now; differs from `checksum` after an edit.
    pub current_checksum: String,
    pub up_sql: String,
    /// The stored down text; meaningful only when `reversible`.
    pub down_sql: String,
    /// Whether the migration has a down script (possibly empty).
    pub reversible: bool,
    pub transactional: bool,
    pub author_id: Uuid,
}

pub async fn migrations(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Vec<RunMigrationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rm.position, rm.migration_id, rm.version, rm.checksum, m.name, m.checksum AS current_checksum,
                m.up_sql, m.down_sql, m.reversible, m.transactional, m.author_id
         FROM run_migrations rm JOIN migrations m ON m.id = rm.migration_id
         WHERE rm.run_id = $1 ORDER BY rm.position",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await
}

/// Everyone who wrote or edited any revision of a migration the run covers:
/// an editor is as much an author as the creator for separation of duties.
pub async fn covered_authors(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT m.author_id FROM run_migrations rm JOIN migrations m ON m.id = rm.migration_id
         WHERE rm.run_id = $1
         UNION
         SELECT r.author_id FROM run_migrations rm JOIN migration_revisions r ON r.migration_id = rm.migration_id
         WHERE rm.run_id = $1
         ORDER BY 1",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await
}

/// Everything needed to create a run.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub project_id: Uuid,
    pub db_set_id: Uuid,
    pub environment: &'a str,
    pub requested_by: Uuid,
    pub note: &'a str,
    pub settings: &'a ExecutionSettings,
    /// (migration id, pinned migration) in execution order.
    pub migrations: &'a [(Uuid, PinnedMigration)],
    pub targets: &'a [PinnedTarget],
    /// The targets on which the run applies a version below one they have.
    pub out_of_order: &'a [Uuid],
    pub review: &'a RunReview,
}

/// How many of `targets` have each version applied (by the hub's records).
pub async fn applied_counts(
    conn: &mut PgConnection,
    targets: &[Uuid],
) -> Result<std::collections::HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT version, count(*) FROM applied_migrations WHERE target_id = ANY($1) GROUP BY version",
    )
    .bind(targets)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The name of a target of the DB set that is dirty, if one is.
pub async fn dirty_target_in(
    conn: &mut PgConnection,
    db_set_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT t.name FROM target_dirty_states d JOIN targets t ON t.id = d.target_id
         WHERE t.db_set_id = $1 ORDER BY t.name LIMIT 1",
    )
    .bind(db_set_id)
    .fetch_optional(conn)
    .await
}

/// The environment that comes right before `position` in the promotion order.
pub async fn previous_environment(
    conn: &mut PgConnection,
    position: i32,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM environments WHERE position < $1 ORDER BY position DESC LIMIT 1",
    )
    .bind(position)
    .fetch_optional(conn)
    .await
}

/// For the promotion gate: how many live targets the project has in
/// `environment`, and the lowest of `migrations` not applied on all of them.
pub async fn promotion_gap(
    conn: &mut PgConnection,
    project_id: Uuid,
    environment: &str,
    migrations: &[Uuid],
) -> Result<(i64, Option<String>), sqlx::Error> {
    sqlx::query_as(
        "WITH prev AS (
             SELECT t.id FROM targets t JOIN db_sets d ON d.id = t.db_set_id
             WHERE d.project_id = $1 AND d.environment = $2 AND d.deleted_at IS NULL AND t.deleted_at IS NULL
         )
         SELECT (SELECT count(*) FROM prev),
                (SELECT m.version FROM migrations m
                 WHERE m.id = ANY($3)
                   AND (SELECT count(*) FROM applied_migrations a WHERE a.migration_id = m.id AND a.target_id IN (SELECT id FROM prev))
                       < (SELECT count(*) FROM prev)
                 ORDER BY m.version_key LIMIT 1)",
    )
    .bind(project_id)
    .bind(environment)
    .bind(migrations)
    .fetch_one(conn)
    .await
}

/// A migration a run pinned, at `version`: its id, pinned checksum and name,
/// and the run's project.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PinnedVersion {
    pub migration_id: Uuid,
    pub checksum: String,
    pub name: String,
    pub project_id: Uuid,
}

pub async fn pinned_version(
    conn: &mut PgConnection,
    run_id: Uuid,
    version: &str,
) -> Result<Option<PinnedVersion>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.id AS migration_id, rm.checksum, m.name, r.project_id
         FROM run_migrations rm JOIN migrations m ON m.id = rm.migration_id JOIN runs r ON r.id = rm.run_id
         WHERE rm.run_id = $1 AND rm.version = $2",
    )
    .bind(run_id)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// Records who executed the run, when its targets may start (`not_before`
/// as asked; `scheduled_for` when the maintenance window moved it later),
/// and the trace its jobs continue.
pub async fn mark_executed(
    conn: &mut PgConnection,
    run_id: Uuid,
    executed_by: Uuid,
    not_before: Option<OffsetDateTime>,
    scheduled_for: Option<OffsetDateTime>,
    traceparent: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET executed_by = $2, not_before = $3, scheduled_for = $4, traceparent = $5
         WHERE id = $1",
    )
    .bind(run_id)
    .bind(executed_by)
    .bind(not_before)
    .bind(scheduled_for)
    .bind(traceparent)
    .execute(conn)
    .await?;
    Ok(())
}

/// The maintenance windows that apply to the run's DB set: its
/// environment's and the DB set's own (either may be absent).
pub async fn windows(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<(Option<String>, Option<String>), sqlx::Error> {
    sqlx::query_as(
        "SELECT e.maintenance_window, d.maintenance_window
         FROM runs r JOIN environments e ON e.name = r.environment JOIN db_sets d ON d.id = r.db_set_id
         WHERE r.id = $1",
    )
    .bind(run_id)
    .fetch_one(conn)
    .await
}

/// The versions the hub records as applied on each of `targets`.
pub async fn applied_versions(
    conn: &mut PgConnection,
    targets: &[Uuid],
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("SELECT target_id, version FROM applied_migrations WHERE target_id = ANY($1)")
        .bind(targets)
        .fetch_all(conn)
        .await
}

/// Inserts the run, its pinned migrations and one `pending` execution per
/// target, and returns the run id and digest.
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewRun<'_>,
) -> Result<(Uuid, String), sqlx::Error> {
    let pinned: Vec<PinnedMigration> = new.migrations.iter().map(|(_, m)| m.clone()).collect();
    let review_digest = new.review.digest();
    let digest = RunPin {
        migrations: &pinned,
        targets: new.targets,
        settings: new.settings,
        review: Some(&review_digest),
    }
    .digest();
    let id = Uuid::now_v7();
    let s = new.settings;
    sqlx::query(
        "INSERT INTO runs (id, project_id, db_set_id, environment, direction, target_version, state, note, requested_by,
                           stop_on_failure, concurrency, canary, lock_timeout_ms, statement_timeout_ms, digest,
                           review, review_digest, risk, lock_retries, preflight_wait_ms, blocker_age_ms,
                           terminate_idle_blockers_after_ms)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending_approval', $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(id)
    .bind(new.project_id)
    .bind(new.db_set_id)
    .bind(new.environment)
    .bind(s.direction.as_str())
    .bind(s.target_version.to_string())
    .bind(new.note)
    .bind(new.requested_by)
    .bind(s.stop_on_failure)
    .bind(s.concurrency)
    .bind(s.canary)
    .bind(s.lock_timeout_ms)
    .bind(s.statement_timeout_ms)
    .bind(&digest)
    .bind(sqlx::types::Json(new.review))
    .bind(&review_digest)
    .bind(new.review.risk.as_str())
    .bind(s.lock_retries)
    .bind(s.preflight_wait_ms)
    .bind(s.blocker_age_ms)
    .bind(s.terminate_idle_blockers_after_ms)
    .execute(&mut *conn)
    .await?;

    let (ids, versions, checksums): (Vec<Uuid>, Vec<String>, Vec<String>) = new
        .migrations
        .iter()
        .map(|(mid, m)| (*mid, m.version.to_string(), m.checksum.to_string()))
        .fold((vec![], vec![], vec![]), |mut acc, (a, b, c)| {
            acc.0.push(a);
            acc.1.push(b);
            acc.2.push(c);
            acc
        });
    sqlx::query(
        "INSERT INTO run_migrations (run_id, position, migration_id, version, checksum)
         SELECT $1, ord::int, mid, ver, sum FROM unnest($2::uuid[], $3::text[], $4::text[]) WITH ORDINALITY AS t(mid, ver, sum, ord)",
    )
    .bind(id)
    .bind(&ids)
    .bind(&versions)
    .bind(&checksums)
    .execute(&mut *conn)
    .await?;

    let target_ids: Vec<Uuid> = new.targets.iter().map(|t| t.id).collect();
    let pools: Vec<String> = new.targets.iter().map(|t| t.worker_pool.clone()).collect();
    let exec_ids: Vec<Uuid> = new.targets.iter().map(|_| Uuid::now_v7()).collect();
    let out_of_order: Vec<bool> = new
        .targets
        .iter()
        .map(|t| new.out_of_order.contains(&t.id))
        .collect();
    sqlx::query(
        "INSERT INTO target_executions (id, run_id, target_id, position, state, worker_pool, out_of_order)
         SELECT eid, $1, tid, ord::int, 'pending', pool, ooo
         FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::bool[]) WITH ORDINALITY AS t(eid, tid, pool, ooo, ord)",
    )
    .bind(id)
    .bind(&exec_ids)
    .bind(&target_ids)
    .bind(&pools)
    .bind(&out_of_order)
    .execute(&mut *conn)
    .await?;
    record_transition(
        conn,
        id,
        None,
        RunState::PendingApproval,
        Some(new.requested_by),
        None,
    )
    .await?;
    Ok((id, digest))
}

/// Whether the run's pinned digest still describes what it covers: the
/// current checksums of its migrations, the DB set's current targets, and
/// its settings with the environment's current timeouts. It does not
/// exactly when something an approval covers has changed.
pub async fn digest_is_current(conn: &mut PgConnection, run: &RunRow) -> Result<bool, sqlx::Error> {
    let migrations: Vec<PinnedMigration> = self::migrations(conn, run.id)
        .await?
        .into_iter()
        .map(|m| PinnedMigration {
            version: Version::parse(&m.version).expect("stored versions are canonical"),
            checksum: Checksum::from_stored(m.current_checksum),
        })
        .collect();
    let targets = pinned_targets(conn, run.db_set_id).await?;
    let timeouts: Option<(i32, i32, i32, i32, i32, Option<i32>)> = sqlx::query_as(
        "SELECT lock_timeout_ms, statement_timeout_ms, lock_retries, preflight_wait_ms, blocker_age_ms,
                terminate_idle_blockers_after_ms
         FROM environments WHERE name = $1",
    )
    .bind(&run.environment)
    .fetch_optional(&mut *conn)
    .await?;
    let mut settings = run.settings();
    if let Some((lock, statement, retries, wait, age, terminate)) = timeouts {
        settings.terminate_idle_blockers_after_ms = terminate;
        settings.lock_timeout_ms = lock;
        settings.statement_timeout_ms = statement;
        // Runs from before retries and the pre-flight existed pin none, and
        // keep their digest.
        settings.lock_retries = settings.lock_retries.map(|_| retries);
        settings.preflight_wait_ms = settings.preflight_wait_ms.map(|_| wait);
        settings.blocker_age_ms = settings.blocker_age_ms.map(|_| age);
    }
    Ok(RunPin {
        migrations: &migrations,
        targets: &targets,
        settings: &settings,
        review: run.review_digest.as_deref(),
    }
    .matches(&run.digest))
}

/// The run's digest with a new review (after an admin waiver): the pin is
/// otherwise what it covers now, which the caller checked is current.
pub async fn set_review(
    conn: &mut PgConnection,
    run: &RunRow,
    review: &RunReview,
) -> Result<String, sqlx::Error> {
    let migrations: Vec<PinnedMigration> = self::migrations(conn, run.id)
        .await?
        .into_iter()
        .map(|m| PinnedMigration {
            version: Version::parse(&m.version).expect("stored versions are canonical"),
            checksum: Checksum::from_stored(m.checksum),
        })
        .collect();
    let targets = pinned_targets(conn, run.db_set_id).await?;
    let review_digest = review.digest();
    let digest = RunPin {
        migrations: &migrations,
        targets: &targets,
        settings: &run.settings(),
        review: Some(&review_digest),
    }
    .digest();
    sqlx::query(
        "UPDATE runs SET review = $2, review_digest = $3, risk = $4, digest = $5, updated_at = now()
         WHERE id = $1",
    )
    .bind(run.id)
    .bind(sqlx::types::Json(review))
    .bind(&review_digest)
    .bind(review.risk.as_str())
    .bind(&digest)
    .execute(conn)
    .await?;
    Ok(digest)
}

/// The run's stored SQL review (`None` for runs requested before reviews
/// existed).
pub async fn review(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Option<RunReview>, sqlx::Error> {
    let review: Option<Option<sqlx::types::Json<RunReview>>> =
        sqlx::query_scalar("SELECT review FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(conn)
            .await?;
    Ok(review.flatten().map(|r| r.0))
}

/// The admin waivers given on the run, oldest first.
pub async fn waivers(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Vec<AdminWaiver>, sqlx::Error> {
    let rows: Vec<(String, String, i32, String, String)> = sqlx::query_as(
        "SELECT w.version, w.code, w.line, w.reason, u.email
         FROM run_waivers w JOIN users u ON u.id = w.created_by
         WHERE w.run_id = $1 ORDER BY w.created_at, w.id",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(version, code, line, reason, by)| AdminWaiver {
            version,
            code,
            line: line.max(0) as usize,
            reason,
            by,
        })
        .collect())
}

/// Records an admin's waiver of one finding; `false` when the run already
/// has a waiver of that finding.
pub async fn insert_waiver(
    conn: &mut PgConnection,
    run_id: Uuid,
    waiver: &AdminWaiver,
    admin: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO run_waivers (id, run_id, version, code, line, reason, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id, version, code, line) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(run_id)
    .bind(&waiver.version)
    .bind(&waiver.code)
    .bind(i32::try_from(waiver.line).unwrap_or(i32::MAX))
    .bind(&waiver.reason)
    .bind(admin)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The runs of `environment` still waiting for approval or execution,
/// oldest first: those a change of its review policy reviews again.
pub async fn waiting_in(
    conn: &mut PgConnection,
    environment: &str,
) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN users u ON u.id = r.requested_by
         WHERE r.environment = $1 AND r.state IN ('pending_approval', 'approved')
         ORDER BY r.created_at, r.id FOR UPDATE OF r"
    )))
    .bind(environment)
    .fetch_all(conn)
    .await
}

/// The DB set's live targets as a run pins them.
pub async fn pinned_targets(
    conn: &mut PgConnection,
    db_set_id: Uuid,
) -> Result<Vec<PinnedTarget>, sqlx::Error> {
    type Row = (
        Uuid,
        Engine,
        String,
        i32,
        String,
        String,
        TlsMode,
        String,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, engine, host, port, database_name, username, tls_mode, session_settings, worker_pool
         FROM targets WHERE db_set_id = $1 AND deleted_at IS NULL ORDER BY name, id",
    )
    .bind(db_set_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                engine,
                host,
                port,
                database,
                username,
                tls_mode,
                session_settings,
                worker_pool,
            )| {
                PinnedTarget {
                    id,
                    engine,
                    host,
                    port,
                    database,
                    username,
                    tls_mode,
                    session_settings,
                    worker_pool,
                }
            },
        )
        .collect())
}

/// Moves a run to `to`, with a line in its state history.
pub async fn set_state(
    conn: &mut PgConnection,
    run: &RunRow,
    to: RunState,
    actor: Option<Uuid>,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET state = $2, state_reason = COALESCE($3, state_reason), updated_at = now(),
                queued_at = CASE WHEN $2 = 'queued' THEN now() ELSE queued_at END,
                finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'partially_failed', 'cancelled') THEN now() ELSE finished_at END
         WHERE id = $1",
    )
    .bind(run.id)
    .bind(to.as_str())
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    record_transition(conn, run.id, Some(run.state), to, actor, reason).await
}

async fn record_transition(
    conn: &mut PgConnection,
    run_id: Uuid,
    from: Option<RunState>,
    to: RunState,
    actor: Option<Uuid>,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO run_transitions (run_id, from_state, to_state, actor_id, reason) VALUES ($1, $2, $3, $4, $5)")
        .bind(run_id)
        .bind(from.map(RunState::as_str))
        .bind(to.as_str())
        .bind(actor)
        .bind(reason)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct ApprovalRow {
    pub user_id: Uuid,
    pub email: String,
    pub decision: String,
    /// The role the decision was made with (`None` before roles were
    /// recorded).
    pub role: Option<String>,
    pub comment: String,
    pub digest: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub async fn approvals(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Vec<ApprovalRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.user_id, u.email, a.decision, a.role, a.comment, a.digest, a.created_at
         FROM approvals a JOIN users u ON u.id = a.user_id WHERE a.run_id = $1 ORDER BY a.created_at",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await
}

pub async fn insert_decision(
    conn: &mut PgConnection,
    run_id: Uuid,
    user_id: Uuid,
    role: &str,
    decision: &str,
    comment: &str,
    digest: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO approvals (id, run_id, user_id, role, decision, comment, digest) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(run_id)
    .bind(user_id)
    .bind(role)
    .bind(decision)
    .bind(comment)
    .bind(digest)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct TransitionRow {
    pub from_state: Option<String>,
    pub to_state: String,
    pub actor: Option<String>,
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// One (run, target) row as shown to people.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct ExecutionRow {
    #[serde(skip)]
    pub id: Uuid,
    pub target_id: Uuid,
    pub target_name: String,
    pub engine: String,
    #[sqlx(try_from = "String")]
    pub state: TargetState,
    #[serde(skip)]
    pub worker_pool: String,
    /// When its job was queued (the run's concurrency let it start).
    #[serde(with = "time::serde::rfc3339::option")]
    pub queued_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When its first migration started: between `started_at` and this the
    /// worker connected, ran the pre-flight and waited for the target lock.
    /// `null` until then (and when it had nothing to apply).
    #[serde(with = "time::serde::rfc3339::option")]
    pub executing_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub duration_ms: Option<i64>,
    pub current_version: Option<String>,
    pub statement: Option<i32>,
    pub error: Option<String>,
    pub worker: Option<Uuid>,
    /// The run applies here a version below one the target already had
    /// when the run was requested.
    pub out_of_order: bool,
    /// Times a migration was tried again after its lock budget ran out.
    pub lock_retries: i32,
    /// What the target waits for right now (a lock, before its next
    /// attempt), while it does.
    pub waiting: Option<String>,
    /// The target is dirty now (a script stopped part-way; an admin must
    /// resolve it).
    pub dirty: bool,
}

pub async fn executions(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Vec<ExecutionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, e.target_id, t.name AS target_name, t.engine, e.state, e.worker_pool,
                e.queued_at, e.started_at,
                (SELECT min(m.started_at) FROM migration_executions m
                 WHERE m.target_execution_id = e.id) AS executing_at,
                e.finished_at, e.duration_ms, e.current_version, e.statement_index AS statement,
                e.error, e.worker_id AS worker, e.out_of_order, e.lock_retries, e.waiting,
                EXISTS (SELECT 1 FROM target_dirty_states d WHERE d.target_id = e.target_id) AS dirty
         FROM target_executions e JOIN targets t ON t.id = e.target_id
         WHERE e.run_id = $1 ORDER BY e.position",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await
}

/// A run as listed on the dashboard.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct RunSummary {
    pub id: Uuid,
    pub project: String,
    pub environment: String,
    pub direction: String,
    pub target_version: String,
    pub state: String,
    pub requester: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// `null` once the DB set is deleted.
    pub db_set: Option<String>,
    /// From the run's SQL review (`null` before reviews existed).
    pub risk: Option<String>,
    /// For the recent failures: the targets that failed or were
    /// interrupted (at most five, by name) with the first line of their
    /// error, and how many there are.
    pub failed_targets: sqlx::types::Json<Vec<FailedTarget>>,
    pub failed_count: i64,
}

/// A target on which a run failed, as the dashboard names it.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct FailedTarget {
    pub id: Uuid,
    pub name: String,
    /// The first line of its error.
    pub error: String,
}

/// Which dashboard list.
#[derive(Debug, Clone, Copy)]
pub enum DashboardList {
    /// Waiting for approval, requested by someone else, not yet approved by `user`.
    AwaitingApprovalBy(Uuid),
    RequestedBy(Uuid),
    Active,
    RecentFailures,
}

pub async fn dashboard(
    pool: &PgPool,
    list: DashboardList,
    limit: i64,
) -> Result<Vec<RunSummary>, sqlx::Error> {
    let failures = matches!(list, DashboardList::RecentFailures);
    let (filter, user): (&str, Option<Uuid>) = match list {
        DashboardList::AwaitingApprovalBy(u) => (
            "r.state = 'pending_approval' AND r.requested_by <> $1
             AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = r.id AND a.user_id = $1)",
            Some(u),
        ),
        DashboardList::RequestedBy(u) => ("r.requested_by = $1", Some(u)),
        DashboardList::Active => (
            "r.state IN ('queued', 'running') AND $1::uuid IS NULL",
            None,
        ),
        DashboardList::RecentFailures => (
            "r.state IN ('failed', 'partially_failed') AND r.finished_at > now() - interval '7 days' AND $1::uuid IS NULL",
            None,
        ),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT r.id, p.slug AS project, r.environment, r.direction, r.target_version, r.state, u.email AS requester,
                r.created_at, r.finished_at, d.name AS db_set, r.risk,
                CASE WHEN $3 THEN
                    (SELECT COALESCE(json_agg(f ORDER BY f.name), '[]')
                     FROM (SELECT t.id, t.name, split_part(COALESCE(e.error, ''), E'\n', 1) AS error
                           FROM target_executions e JOIN targets t ON t.id = e.target_id
                           WHERE e.run_id = r.id AND e.state IN ('failed', 'interrupted')
                           ORDER BY t.name LIMIT 5) f)
                ELSE '[]' END AS failed_targets,
                CASE WHEN $3 THEN
                    (SELECT count(*) FROM target_executions e
                     WHERE e.run_id = r.id AND e.state IN ('failed', 'interrupted'))
                ELSE 0 END AS failed_count
         FROM runs r JOIN projects p ON p.id = r.project_id JOIN users u ON u.id = r.requested_by
         LEFT JOIN db_sets d ON d.id = r.db_set_id AND d.deleted_at IS NULL
         WHERE {filter} ORDER BY r.created_at DESC LIMIT $2"
    )))
    .bind(user)
    .bind(limit)
    .bind(failures)
    .fetch_all(pool)
    .await
}

/// Which runs an inventory change concerns.
#[derive(Debug, Clone, Copy)]
pub enum RunScope<'a> {
    Project(Uuid),
    DbSet(Uuid),
    Environment(&'a str),
    /// Runs that pin this migration.
    Migration(Uuid),
    /// These runs.
    Runs(&'a [Uuid]),
}

impl RunScope<'_> {
    /// The condition on `runs` and its single bind value, as text.
    fn filter(&self) -> (&'static str, String) {
        match self {
            RunScope::Project(id) => ("project_id = $1::uuid", id.to_string()),
            RunScope::DbSet(id) => ("db_set_id = $1::uuid", id.to_string()),
            RunScope::Environment(name) => ("environment = $1", (*name).to_owned()),
            RunScope::Migration(id) => (
                "id IN (SELECT run_id FROM run_migrations WHERE migration_id = $1::uuid)",
                id.to_string(),
            ),
            RunScope::Runs(ids) => (
                "id = ANY($1::uuid[])",
                format!(
                    "{{{}}}",
                    ids.iter()
                        .map(Uuid::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
        }
    }
}

/// A run that is executing or waiting for a worker in `scope`, if any:
/// inventory under such a run must not change or disappear.
pub async fn in_progress(
    conn: &mut PgConnection,
    scope: RunScope<'_>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let (filter, value) = scope.filter();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM runs WHERE {filter} AND state IN ('queued', 'running') ORDER BY created_at LIMIT 1"
    )))
    .bind(value)
    .fetch_optional(conn)
    .await
}

/// Runs in `scope` that are `queued` or `running` with executions that
/// have not started or wait for their window: `(run, not_before,
/// [execution])`.
pub async fn waiting_to_start(
    conn: &mut PgConnection,
    scope: RunScope<'_>,
) -> Result<Vec<(Uuid, Option<OffsetDateTime>, Vec<Uuid>)>, sqlx::Error> {
    // Every scope's condition starts with a column of `runs`.
    let (filter, value) = scope.filter();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT r.id, r.not_before, array_agg(t.id ORDER BY t.position)
         FROM runs r JOIN target_executions t ON t.run_id = r.id
         WHERE r.{filter} AND r.state IN ('queued', 'running')
           AND t.state IN ('queued', 'waiting_for_window')
         GROUP BY r.id, r.not_before ORDER BY r.id"
    )))
    .bind(value)
    .fetch_all(conn)
    .await
}

/// Sets when a queued run's first targets are due (`None`: at once).
pub async fn set_scheduled_for(
    conn: &mut PgConnection,
    run_id: Uuid,
    scheduled_for: Option<OffsetDateTime>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE runs SET scheduled_for = $2 WHERE id = $1 AND state = 'queued'")
        .bind(run_id)
        .bind(scheduled_for)
        .execute(conn)
        .await?;
    Ok(())
}

/// A run moved to `invalidated` by [`invalidate_where`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvalidatedRun {
    pub id: Uuid,
    pub project_id: Uuid,
    pub from_state: String,
    pub digest: String,
}

/// Invalidates every run in `scope` that waits for approval or execution,
/// because something its approval covers changed (rule 2), with a line in
/// each run's state history. Runs the caller's transaction: the change and
/// the invalidation commit together, so no approval of the old facts can
/// slip in between. The caller audits each returned run.
pub async fn invalidate_where(
    conn: &mut PgConnection,
    scope: RunScope<'_>,
    reason: &str,
    actor: Option<Uuid>,
) -> Result<Vec<InvalidatedRun>, sqlx::Error> {
    let (filter, value) = scope.filter();
    // The subquery locks the runs (waiting for a concurrent approve or
    // execute to finish) and re-checks their state afterwards, and it keeps
    // the state before the update for the history.
    let runs: Vec<InvalidatedRun> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE runs r SET state = 'invalidated', state_reason = $2, updated_at = now()
         FROM (SELECT id, state FROM runs WHERE {filter} AND state IN ('pending_approval', 'approved')
               ORDER BY id FOR UPDATE) old
         WHERE r.id = old.id
         RETURNING r.id, r.project_id, old.state AS from_state, r.digest"
    )))
    .bind(value)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    if runs.is_empty() {
        return Ok(runs);
    }
    sqlx::query(
        "INSERT INTO run_transitions (run_id, from_state, to_state, actor_id, reason)
         SELECT id, from_state, 'invalidated', $3, $4 FROM unnest($1::uuid[], $2::text[]) AS t(id, from_state)",
    )
    .bind(runs.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.from_state.clone()).collect::<Vec<_>>())
    .bind(actor)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(runs)
}

/// A pinned migration as shown with its run.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PinnedRow {
    pub version: String,
    pub name: String,
    /// The checksum when the run was requested.
    pub checksum: String,
    /// The checksum now; differs from `checksum` after an edit.
    pub current_checksum: String,
}

/// Everything shown about a run (its page, `GET /api/v1/runs/{id}`).
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run: RunRow,
    pub pinned: Vec<PinnedRow>,
    pub approvals: Vec<ApprovalRow>,
    pub executions: Vec<ExecutionRow>,
    pub transitions: Vec<TransitionRow>,
    /// The run's environment's approval policy, as configured now.
    pub approval_policy: Option<crate::domain::approval::Policy>,
    /// The run's SQL review (`None` for runs requested before reviews).
    pub review: Option<RunReview>,
    pub project_slug: String,
    pub project_name: String,
    /// `None` once the DB set is deleted.
    pub db_set_name: Option<String>,
    /// While the run is not final: its DB set's targets whose schema has
    /// drifted from their baseline.
    pub drifted: Vec<super::schema_drift::DriftedTarget>,
    /// While the run is approved, queued or running: the pools its
    /// remaining targets need that no live worker serves.
    pub pools_without_workers: Vec<crate::domain::pools::PoolWithoutWorker>,
}

/// Reads a run's record from one consistent snapshot of the tool database
/// (a read-only repeatable-read transaction of its own), so its state, its
/// targets and its history agree. `conn` must not be inside a transaction;
/// see [`record_in`].
pub async fn record(conn: &mut PgConnection, id: Uuid) -> Result<Option<RunRecord>, sqlx::Error> {
    use sqlx::Connection as _;
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let record = record_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(record)
}

/// [`record`] inside the caller's transaction, seeing its writes.
pub async fn record_in(tx: &mut PgConnection, id: Uuid) -> Result<Option<RunRecord>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct WithPolicy {
        #[sqlx(flatten)]
        run: RunRow,
        review: Option<sqlx::types::Json<RunReview>>,
        required_approvals: Option<i32>,
        allow_self_approval: Option<bool>,
        require_previous_success: Option<bool>,
        high_risk_approvals: Option<i32>,
        high_risk_requires_admin: Option<bool>,
        project_slug: String,
        project_name: String,
        db_set_name: Option<String>,
    }
    let found: Option<WithPolicy> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS}, r.review, e.required_approvals, e.allow_self_approval,
                e.require_previous_success, e.high_risk_approvals, e.high_risk_requires_admin,
                p.slug AS project_slug, p.name AS project_name, d.name AS db_set_name
         FROM runs r JOIN users u ON u.id = r.requested_by
         JOIN projects p ON p.id = r.project_id
         LEFT JOIN environments e ON e.name = r.environment
         LEFT JOIN db_sets d ON d.id = r.db_set_id
         WHERE r.id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(found) = found else {
        return Ok(None);
    };
    let approval_policy =
        found
            .required_approvals
            .map(|required| crate::domain::approval::Policy {
                environment: found.run.environment.clone(),
                required_approvals: required,
                allow_self_approval: found.allow_self_approval.unwrap_or(false),
                require_previous_success: found.require_previous_success.unwrap_or(false),
                high_risk_approvals: found.high_risk_approvals.unwrap_or(0),
                high_risk_requires_admin: found.high_risk_requires_admin.unwrap_or(false),
            });
    let run = found.run;
    let review = found.review.map(|r| r.0);
    let (project_slug, project_name, db_set_name) =
        (found.project_slug, found.project_name, found.db_set_name);
    let pinned = sqlx::query_as(
        "SELECT rm.version, m.name, rm.checksum, m.checksum AS current_checksum
         FROM run_migrations rm JOIN migrations m ON m.id = rm.migration_id
         WHERE rm.run_id = $1 ORDER BY rm.position",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let approvals = approvals(tx, id).await?;
    let executions = executions(tx, id).await?;
    let transitions = sqlx::query_as(
        "SELECT t.from_state, t.to_state, u.email AS actor, t.reason, t.at
         FROM run_transitions t LEFT JOIN users u ON u.id = t.actor_id
         WHERE t.run_id = $1 ORDER BY t.id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let drifted = if run.state.is_final() {
        Vec::new()
    } else {
        super::schema_drift::in_db_set(tx, run.db_set_id).await?
    };
    let pools_without_workers = if matches!(
        run.state,
        RunState::Approved | RunState::Queued | RunState::Running
    ) {
        super::workers::pools_without_workers(tx, id, crate::lifecycle::dead_workers::SILENT_AFTER)
            .await?
    } else {
        Vec::new()
    };
    Ok(Some(RunRecord {
        drifted,
        pools_without_workers,
        run,
        pinned,
        approvals,
        executions,
        transitions,
        approval_policy,
        review,
        project_slug,
        project_name,
        db_set_name,
    }))
}
