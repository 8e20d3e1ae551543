//! Baselining a target (admins): adopting a database that was migrated
//! before the hub, so the versions it already has are recorded as applied
//! instead of being run again. The rules of what is recorded live in
//! `common::domain::baseline`, the hub's side of recording it in
//! `common::lifecycle::baseline`; this is the order of work around them:
//!
//! 1. connect to the target and take the target lock (the one every worker
//!    takes before it reads the target's history), so no migration runs
//!    until the baseline is recorded on both sides;
//! 2. read the target's `migrate_hub_history` and the other tool's table;
//! 3. in one tool-database transaction, `lifecycle::baseline` locks the
//!    target's row, refuses a target with history or a dirty one, decides
//!    the versions, inserts the `applied_migrations` rows (no run,
//!    `baseline` set) and the `target.baselined` audit row;
//! 4. write the target's `migrate_hub_history` rows (one target
//!    transaction), then commit the hub's; should that commit fail, the
//!    target's rows are taken back while the lock is still held.
//!
//! `GET` previews the same decision without the lock and without writing.

use common::{
    domain::{Version, baseline::Request},
    lifecycle::{self, TargetFacts},
    targets::baseline::{AdoptError, HistoryEntry, LockedTarget},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::live::{WAIT, reach};
use crate::{auth::CurrentUser, error::ApiError, state::AppState};

/// `{"version": "3"}` or `{"from": "flyway", "table"?: "…", "allow_mismatch"?: true}`.
#[derive(Debug, Default, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BaselineBody {
    /// Baseline at this version: every project migration at or below it.
    pub version: Option<String>,
    /// Or read this tool's table: `flyway`, `golang-migrate`, `dbmate` or `goose`.
    pub from: Option<String>,
    /// The tool's table, when not its default name.
    pub table: Option<String>,
    /// Record only the versions both sides know when the tool's table and
    /// the project disagree, instead of refusing.
    #[serde(default)]
    pub allow_mismatch: bool,
}

/// What a baseline records (or, as a preview, would record).
#[derive(Debug, Serialize, ToSchema)]
pub struct Baselined {
    pub target_id: Uuid,
    /// `version`, or the tool whose table was read.
    pub source: String,
    /// The tool's table that was read, for a tool source.
    pub table: Option<String>,
    /// The highest version recorded as applied.
    pub baseline_version: Option<String>,
    /// Every version recorded as applied, in version order.
    pub versions: Vec<String>,
    /// Versions of the tool's table the project lacks, ignored (with `allow_mismatch`).
    pub unknown_ignored: Vec<String>,
    /// Project versions the tool's table lacks, left pending (with `allow_mismatch`).
    pub missing_left_pending: Vec<String>,
    /// `true` for a preview: nothing was locked, written or audited.
    pub dry_run: bool,
}

/// Baselines the target as `body` asks (`write`), or only says what it
/// would record (`!write`: no lock, nothing written, nothing audited).
pub async fn baseline_target(
    state: &AppState,
    admin: &CurrentUser,
    id: Uuid,
    body: &BaselineBody,
    write: bool,
) -> Result<Baselined, ApiError> {
    let request = Request::parse(
        body.version.as_deref(),
        body.from.as_deref(),
        body.table.as_deref(),
    )
    .map_err(|e| ApiError::invalid(e.field, e.message))?;
    let (scoped, reachable) = reach(state, id).await?;
    let (endpoint, password) =
        reachable.map_err(|e| ApiError::conflict("target_unreachable", e))?;
    let mut target = LockedTarget::open(
        scoped.target.engine,
        &endpoint,
        password.as_ref(),
        WAIT,
        write,
    )
    .await
    .map_err(target_refusal)?;
    let adoption = Adoption {
        state,
        admin,
        target_id: id,
        request: &request,
        allow_mismatch: body.allow_mismatch,
        write,
    };
    let result = adoption.run(&mut target).await;
    target.close().await;
    result
}

struct Adoption<'a> {
    state: &'a AppState,
    admin: &'a CurrentUser,
    target_id: Uuid,
    request: &'a Request,
    allow_mismatch: bool,
    write: bool,
}

impl Adoption<'_> {
    /// Everything that happens while the target's session (and, when
    /// writing, its lock) is held.
    async fn run(&self, target: &mut LockedTarget) -> Result<Baselined, ApiError> {
        let history_rows = target.history_rows().await.map_err(target_refusal)?;
        let external = match self.request {
            Request::AtVersion(_) => None,
            Request::From { source, table } => {
                Some(target.read(*source, table).await.map_err(target_refusal)?)
            }
        };
        let facts = TargetFacts {
            request: self.request,
            history_rows,
            external: external.as_ref(),
            allow_mismatch: self.allow_mismatch,
        };

        let mut tx = self.state.db.begin().await?;
        let decided = lifecycle::baseline(
            &mut tx,
            &self.admin.caller(),
            self.target_id,
            &facts,
            self.write,
        )
        .await?;
        let versions = decided.versions();
        let view = Baselined {
            target_id: self.target_id,
            source: decided.source.clone(),
            table: decided.table.clone(),
            baseline_version: versions.last().cloned(),
            versions: versions.clone(),
            unknown_ignored: decided.unknown.clone(),
            missing_left_pending: decided.missing.iter().map(Version::to_string).collect(),
            dry_run: !self.write,
        };
        if !self.write {
            return Ok(view);
        }

        let entries: Vec<HistoryEntry> = decided
            .migrations
            .iter()
            .map(|m| HistoryEntry {
                version: m.version.clone(),
                checksum: m.checksum.clone(),
                name: m.name.clone(),
            })
            .collect();
        // The target first: if it refuses, the hub's transaction rolls back.
        target.record(&entries).await.map_err(target_refusal)?;
        if let Err(err) = tx.commit().await {
            if let Err(cleanup) = target.forget(&versions).await {
                tracing::error!(
                    target_id = %self.target_id,
                    error = %cleanup,
                    "baseline rows stay on the target after the hub failed to record them"
                );
            }
            return Err(err.into());
        }
        tracing::info!(
            target_id = %self.target_id,
            source = %decided.source,
            versions = versions.len(),
            "target baselined"
        );
        Ok(view)
    }
}

/// The target could not do its part: its state is in the way (409), in
/// the words of its server.
fn target_refusal(err: AdoptError) -> ApiError {
    let code = match &err {
        AdoptError::Unreachable(_) => "target_unreachable",
        AdoptError::Busy(_) => "target_busy",
        AdoptError::TableNotFound(_) => "external_table_not_found",
        AdoptError::Target(_) => "target_error",
    };
    ApiError::conflict(code, err.to_string())
}
