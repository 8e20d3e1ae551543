//! Queueing a run's targets as the dispatch rule allows: at Execute, and
//! again each time one of its targets finishes.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::runs::RunRow;
use crate::domain::{
    TargetState,
    dispatch::{self, Slot},
};

/// Applies the dispatch rule to a run whose row the caller holds locked:
/// cancels what must not start, queues what may, and pushes their jobs.
/// Returns the executions queued (id, target, pool).
pub async fn dispatch(
    conn: &mut PgConnection,
    run: &RunRow,
    not_before: Option<OffsetDateTime>,
) -> Result<Vec<(Uuid, Uuid, String)>, sqlx::Error> {
    let rows: Vec<(i32, String)> =
        sqlx::query_as("SELECT position, state FROM target_executions WHERE run_id = $1")
            .bind(run.id)
            .fetch_all(&mut *conn)
            .await?;
    let slots: Vec<Slot> = rows
        .iter()
        .map(|(position, state)| Slot {
            position: *position,
            state: state.parse().unwrap_or(TargetState::Pending),
        })
        .collect();
    let decision = dispatch::next(&slots, run.concurrency, run.canary, run.stop_on_failure);
    if let Some(reason) = decision.cancel_pending {
        sqlx::query(
            "UPDATE target_executions SET state = 'cancelled', error = $2, finished_at = now()
             WHERE run_id = $1 AND state = 'pending'",
        )
        .bind(run.id)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    }
    if decision.queue.is_empty() {
        return Ok(Vec::new());
    }
    let queued: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "UPDATE target_executions SET state = 'queued', queued_at = now()
         WHERE run_id = $1 AND state = 'pending' AND position = ANY($2)
         RETURNING id, target_id, worker_pool",
    )
    .bind(run.id)
    .bind(&decision.queue)
    .fetch_all(&mut *conn)
    .await?;
    crate::jobs::push(
        conn,
        run.id,
        run.traceparent.as_deref(),
        &queued,
        not_before,
    )
    .await?;
    Ok(queued)
}
