//! Counts for the control plane's `/metrics`: closed label sets, so every
//! series exists (at zero) from the start.

use sqlx::PgPool;

use crate::domain::RunState;

/// Runs per state, every state listed.
pub async fn runs_by_state(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let states: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
    sqlx::query_as(
        "SELECT s.state, count(r.id) FROM unnest($1::text[]) AS s(state)
         LEFT JOIN runs r ON r.state = s.state GROUP BY s.state ORDER BY s.state",
    )
    .bind(states)
    .fetch_all(pool)
    .await
}

/// Target executions per state and engine.
pub async fn executions_by_state_and_engine(
    pool: &PgPool,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.state, t.engine, count(*) FROM target_executions e JOIN targets t ON t.id = e.target_id
         GROUP BY e.state, t.engine ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
}

/// Workers heard from in the last hour and not stopped: pool, id, seconds
/// since the last heartbeat, jobs running.
pub async fn live_workers(pool: &PgPool) -> Result<Vec<(String, String, f64, i32)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT pool, id::text, extract(epoch FROM now() - last_heartbeat_at)::float8, running_jobs FROM workers
         WHERE stopped_at IS NULL AND last_heartbeat_at > now() - interval '1 hour' ORDER BY pool, id",
    )
    .fetch_all(pool)
    .await
}

/// Webhook deliveries per state, every state listed.
pub async fn deliveries_by_state(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.state, count(d.id) FROM unnest(ARRAY['pending','delivered','failed']) AS s(state)
         LEFT JOIN webhook_deliveries d ON d.state = s.state GROUP BY s.state ORDER BY 1",
    )
    .fetch_all(pool)
    .await
}
