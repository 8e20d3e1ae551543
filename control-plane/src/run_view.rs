//! The read model of a run: the view every answer about a run is made of,
//! and the snapshot shared by everyone watching one (`AppState::run_reads`),
//! with what is rendered from it once for all of them.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    sync::{Arc, OnceLock},
};

use axum::body::Bytes;
use common::{
    domain::{Direction, RunState, TargetState, pools::PoolWithoutWorker, progress},
    review::run::RunReview,
    store::{
        runs::{self, ApprovalRow, ExecutionRow, RunRecord, RunRow, TransitionRow},
        schema_drift::DriftedTarget,
    },
};
use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// A run with its pinned migrations, decisions, targets and state history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    pub id: Uuid,
    pub project_id: Uuid,
    /// The project's slug and name.
    pub project_slug: String,
    pub project_name: String,
    pub db_set_id: Uuid,
    /// `null` once the DB set is deleted.
    pub db_set_name: Option<String>,
    pub environment: String,
    pub direction: Direction,
    pub target_version: String,
    pub state: RunState,
    /// Why the run is in its state (denial reason, invalidation cause).
    pub state_reason: Option<String>,
    pub note: String,
    /// The requester's e-mail.
    pub requested_by: String,
    /// What an approval covers: migrations, checksums, targets, timeouts.
    pub digest: String,
    pub stop_on_failure: bool,
    pub concurrency: i32,
    pub canary: i32,
    pub lock_timeout_ms: i32,
    pub statement_timeout_ms: i32,
    /// How often a migration whose lock budget ran out is tried again
    /// (`null` for runs requested before retries existed: none).
    pub lock_retries: Option<i32>,
    /// The pre-flight: how long a target waits for blocking sessions, and
    /// from what age an open transaction blocks (`null` for runs from
    /// before the pre-flight: none).
    pub preflight_wait_ms: Option<i32>,
    pub blocker_age_ms: Option<i32>,
    /// Opt-in: blockers idle in transaction this long are terminated after
    /// the pre-flight's wait (`null`: never).
    pub terminate_idle_blockers_after_ms: Option<i32>,
    /// Approvals the run needs: its environment's current requirement for
    /// a run of its risk.
    pub required_approvals: Option<i32>,
    /// The roles whose approval counts towards the requirement: `["admin"]`
    /// when the environment wants an admin among the approvers of a
    /// high-risk run (one admin approval is then needed).
    pub approver_roles: Vec<&'static str>,
    /// `low`, `medium` or `high`, from the SQL review's findings (waived
    /// ones included); `null` for runs requested before reviews existed.
    pub risk: Option<String>,
    /// The SQL review pinned with the run: per migration and engine, the
    /// findings as the environment's policy rates them, with their waivers.
    pub review: Option<RunReview>,
    /// Error findings nobody waived: while any remain, the run cannot be
    /// approved (`409 review_failed`).
    pub blocking_findings: usize,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    /// Executed outside the maintenance window: when its first targets are
    /// due (the window's next opening after `not_before`).
    #[serde(with = "time::serde::rfc3339::option")]
    pub scheduled_for: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub queued_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub migrations: Vec<PinnedView>,
    pub approvals: Vec<ApprovalRow>,
    pub targets: Vec<ExecutionRow>,
    pub history: Vec<TransitionRow>,
    /// While the run is not final: the targets of its DB set whose schema
    /// has drifted from their baseline (someone changed them outside the
    /// hub), for the approvers to see; under `on_drift: block` their
    /// executions are refused.
    pub drifted_targets: Vec<DriftedTarget>,
    /// While the run is approved, queued or running: the worker pools its
    /// remaining targets need that no live worker serves ("no worker of
    /// pool `eu` seen for 4 min") — the run waits until one starts.
    pub pools_without_workers: Vec<PoolWithoutWorker>,
    /// Targets by execution state (states no target is in are left out).
    pub counts: BTreeMap<&'static str, usize>,
    /// Targets whose execution is final (succeeded, failed, skipped,
    /// interrupted, cancelled).
    pub done: usize,
    /// While the run executes: seconds until its last target should be
    /// done, at the pace of those done so far (`null` before the first
    /// target finished).
    pub eta_seconds: Option<i64>,
}

/// A migration as the run pinned it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PinnedView {
    pub version: String,
    pub name: String,
    pub checksum: String,
    /// The migration was edited after the run was requested.
    pub changed_since_pinned: bool,
}

impl From<RunRecord> for RunView {
    fn from(record: RunRecord) -> Self {
        let RunRecord {
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
            drifted,
            pools_without_workers,
        } = record;
        let requirement = approval_policy
            .as_ref()
            .map(|p| p.requirement(run.risk.as_deref() == Some("high")));
        let counts = counts(&executions);
        let done = executions.iter().filter(|t| t.state.is_final()).count();
        let eta_seconds = (run.state == RunState::Running)
            .then(|| {
                progress::eta(
                    executions.len(),
                    done,
                    run.queued_at,
                    OffsetDateTime::now_utc(),
                )
            })
            .flatten()
            .map(|eta| eta.whole_seconds());
        RunView {
            counts,
            done,
            eta_seconds,
            id: run.id,
            project_id: run.project_id,
            project_slug,
            project_name,
            db_set_id: run.db_set_id,
            db_set_name,
            environment: run.environment,
            direction: run.direction,
            target_version: run.target_version,
            state: run.state,
            state_reason: run.state_reason,
            note: run.note,
            requested_by: run.requester,
            digest: run.digest,
            stop_on_failure: run.stop_on_failure,
            concurrency: run.concurrency,
            canary: run.canary,
            lock_timeout_ms: run.lock_timeout_ms,
            statement_timeout_ms: run.statement_timeout_ms,
            lock_retries: run.lock_retries,
            preflight_wait_ms: run.preflight_wait_ms,
            blocker_age_ms: run.blocker_age_ms,
            terminate_idle_blockers_after_ms: run.terminate_idle_blockers_after_ms,
            required_approvals: requirement.map(|r| r.approvals),
            approver_roles: requirement
                .map(|r| r.approver_roles().to_vec())
                .unwrap_or_default(),
            risk: run.risk,
            blocking_findings: review.as_ref().map_or(0, |r| r.blocking().len()),
            review,
            not_before: run.not_before,
            scheduled_for: run.scheduled_for,
            created_at: run.created_at,
            queued_at: run.queued_at,
            finished_at: run.finished_at,
            migrations: pinned
                .into_iter()
                .map(|m| PinnedView {
                    changed_since_pinned: m.checksum != m.current_checksum,
                    version: m.version,
                    name: m.name,
                    checksum: m.checksum,
                })
                .collect(),
            approvals,
            targets: executions,
            history: transitions,
            drifted_targets: drifted,
            pools_without_workers,
        }
    }
}

/// The run `id` as this transaction sees it: what the state-changing routes
/// answer.
pub async fn run_view(tx: &mut PgConnection, id: Uuid) -> Result<RunView, ApiError> {
    let record = runs::record_in(tx, id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    Ok(RunView::from(record))
}

/// A run and its view, as one read shared by the requests watching it, with
/// what is made of it once for all of them.
#[derive(Debug)]
pub struct RunSnapshot {
    pub run: RunRow,
    pub view: RunView,
    json: OnceLock<Bytes>,
    /// The run page's parts, rendered by the first page request that needs
    /// them.
    pub pages: OnceLock<Arc<RunPages>>,
    /// What the run's live streams say, made by the first stream that
    /// needs it.
    stream: OnceLock<Arc<StreamParts>>,
}

/// The `run` event of a run's live stream: its state and how far it got.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunProgress<'a> {
    pub id: Uuid,
    pub state: RunState,
    pub state_reason: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The run's targets.
    pub total: usize,
    /// Targets by execution state (states no target is in are left out).
    pub counts: BTreeMap<&'static str, usize>,
    pub pools_without_workers: &'a [PoolWithoutWorker],
}

/// One event's data, with a hash to tell whether it changed.
#[derive(Debug)]
pub struct StreamPart {
    pub hash: u64,
    pub json: String,
}

impl StreamPart {
    fn of(value: &impl Serialize) -> Result<Self, ApiError> {
        let json = serde_json::to_string(value).map_err(anyhow::Error::from)?;
        let mut hasher = std::hash::DefaultHasher::new();
        json.hash(&mut hasher);
        Ok(Self {
            hash: hasher.finish(),
            json,
        })
    }
}

/// A run as its live streams say it: the `run` event and one `target`
/// event per execution, in the run's order.
#[derive(Debug)]
pub struct StreamParts {
    pub run: StreamPart,
    pub targets: Vec<(Uuid, StreamPart)>,
    pub is_final: bool,
}

/// Targets by execution state.
pub fn counts(targets: &[ExecutionRow]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for t in targets {
        *counts.entry(t.state.as_str()).or_insert(0) += 1;
    }
    counts
}

impl RunSnapshot {
    pub fn new(run: RunRow, view: RunView) -> Self {
        Self {
            run,
            view,
            json: OnceLock::new(),
            pages: OnceLock::new(),
            stream: OnceLock::new(),
        }
    }

    /// What the run's live streams say about this read of it.
    pub fn stream(&self) -> Result<Arc<StreamParts>, ApiError> {
        if let Some(parts) = self.stream.get() {
            return Ok(parts.clone());
        }
        let view = &self.view;
        let run = StreamPart::of(&RunProgress {
            id: view.id,
            state: view.state,
            state_reason: view.state_reason.as_deref(),
            finished_at: view.finished_at,
            total: view.targets.len(),
            counts: counts(&view.targets),
            pools_without_workers: &view.pools_without_workers,
        })?;
        let targets = view
            .targets
            .iter()
            .map(|t| Ok((t.id, StreamPart::of(t)?)))
            .collect::<Result<_, ApiError>>()?;
        let parts = Arc::new(StreamParts {
            run,
            targets,
            is_final: self.run.state.is_final(),
        });
        Ok(self.stream.get_or_init(|| parts).clone())
    }

    /// The view as the API's JSON body. The first readers of a snapshot may
    /// each serialize it; one result is kept.
    pub fn json(&self) -> Result<Bytes, ApiError> {
        if let Some(json) = self.json.get() {
            return Ok(json.clone());
        }
        let json = Bytes::from(serde_json::to_vec(&self.view).map_err(anyhow::Error::from)?);
        Ok(self.json.get_or_init(|| json).clone())
    }
}

/// The parts of the run page that are the same for every viewer, rendered
/// once per read of the run ([`RunSnapshot`]) and shared,
/// not copied, by the pages made from it.
#[derive(Debug)]
pub struct RunPages {
    /// Heading and facts (a safe string).
    pub summary: minijinja::Value,
    /// Targets, pinned migrations, decisions, history (a safe string).
    pub record: minijinja::Value,
    /// The live part alone (the default view: no filter, first page),
    /// refreshed by `/static/app.js`.
    pub live: Bytes,
    /// The run's timeline (an SVG), `None` while no target was queued.
    pub timeline: Option<String>,
}

/// The run page shows this many targets at a time.
pub const TARGETS_PER_PAGE: usize = 50;

/// Which of a run's targets someone asks to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetFilter {
    State(TargetState),
    /// Failed, interrupted, or left dirty.
    Attention,
}

impl std::str::FromStr for TargetFilter {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Self, ApiError> {
        if s == "attention" {
            return Ok(Self::Attention);
        }
        s.parse().map(Self::State).map_err(|_| ApiError::Invalid {
            field: "state".into(),
            message: "must be a target state (pending, queued, running, waiting_for_window, \
                      succeeded, failed, skipped, interrupted, cancelled) or attention"
                .into(),
        })
    }
}

/// A filter and a name to look for among a run's targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetQuery {
    pub filter: Option<TargetFilter>,
    /// Part of the target's name, any case.
    pub name: Option<String>,
}

/// Failed, interrupted, or left dirty: someone has to look at it.
pub fn needs_attention(t: &ExecutionRow) -> bool {
    t.dirty || matches!(t.state, TargetState::Failed | TargetState::Interrupted)
}

/// The targets `query` asks for, those that need attention first, then
/// those running, then the rest, each in the run's order.
pub fn select<'a>(targets: &'a [ExecutionRow], query: &TargetQuery) -> Vec<&'a ExecutionRow> {
    let name = query.name.as_deref().map(str::to_lowercase);
    let mut chosen: Vec<&ExecutionRow> = targets
        .iter()
        .filter(|t| match query.filter {
            None => true,
            Some(TargetFilter::Attention) => needs_attention(t),
            Some(TargetFilter::State(state)) => t.state == state,
        })
        .filter(|t| {
            name.as_deref()
                .is_none_or(|n| t.target_name.to_lowercase().contains(n))
        })
        .collect();
    let rank = |t: &ExecutionRow| {
        if needs_attention(t) {
            0
        } else if matches!(
            t.state,
            TargetState::Running | TargetState::WaitingForWindow
        ) {
            1
        } else {
            2
        }
    };
    // Stable: within a rank, the run's order.
    chosen.sort_by_key(|t| rank(t));
    chosen
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A target's row in a run, with no times set.
    pub(crate) fn row(name: &str, state: TargetState, dirty: bool) -> ExecutionRow {
        ExecutionRow {
            id: Uuid::new_v4(),
            target_id: Uuid::new_v4(),
            target_name: name.into(),
            engine: "postgres".into(),
            state,
            worker_pool: "default".into(),
            queued_at: None,
            started_at: None,
            executing_at: None,
            finished_at: None,
            duration_ms: None,
            current_version: None,
            statement: None,
            error: None,
            worker: None,
            out_of_order: false,
            lock_retries: 0,
            waiting: None,
            dirty,
        }
    }

    fn names(rows: Vec<&ExecutionRow>) -> Vec<&str> {
        rows.into_iter().map(|r| r.target_name.as_str()).collect()
    }

    #[test]
    fn failures_and_dirty_targets_come_first_then_running_ones() {
        use TargetState::*;
        let rows = vec![
            row("a", Succeeded, false),
            row("b", Running, false),
            row("c", Failed, false),
            row("d", Pending, false),
            row("e", Succeeded, true),
            row("f", Interrupted, false),
        ];
        assert_eq!(
            names(select(&rows, &TargetQuery::default())),
            ["c", "e", "f", "b", "a", "d"]
        );
        let attention = TargetQuery {
            filter: Some(TargetFilter::Attention),
            name: None,
        };
        assert_eq!(names(select(&rows, &attention)), ["c", "e", "f"]);
        let running = TargetQuery {
            filter: Some("running".parse().unwrap()),
            name: None,
        };
        assert_eq!(names(select(&rows, &running)), ["b"]);
        let by_name = TargetQuery {
            filter: None,
            name: Some("D".into()),
        };
        assert_eq!(names(select(&rows, &by_name)), ["d"]);
        assert!("bogus".parse::<TargetFilter>().is_err());
    }
}
