//! Baselining a target (admins): the hub's side of adopting a database that
//! was migrated before the hub. The caller holds the target's session (and,
//! when writing, the target lock), has read what the target says, and
//! writes the target's own `migrate_hub_history` after this step, before it
//! commits.

use std::collections::HashMap;

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Caller, LifecycleError};
use crate::{
    domain::{
        Version,
        baseline::{self, BaselineError, ExternalHistory, Request},
    },
    store::{self, audit, inventory, migrations::MigrationRow},
};

/// What the admin asked, with what the caller read from the target.
#[derive(Debug, Clone, Copy)]
pub struct TargetFacts<'a> {
    pub request: &'a Request,
    /// Rows in the target's `migrate_hub_history`.
    pub history_rows: usize,
    /// The other tool's table as read from the target, for
    /// [`Request::From`].
    pub external: Option<&'a ExternalHistory>,
    /// Record only the versions both sides know when the tool's table and
    /// the project disagree, instead of refusing.
    pub allow_mismatch: bool,
}

/// What a baseline records (or, as a preview, would record).
#[derive(Debug, Clone)]
pub struct Baseline {
    pub project_id: Uuid,
    /// `version`, or the tool whose table was read.
    pub source: String,
    /// The tool's table that was read, for a tool source.
    pub table: Option<String>,
    /// The project's migrations recorded as applied, in version order.
    pub migrations: Vec<MigrationRow>,
    /// Versions of the tool's table the project lacks, ignored.
    pub unknown: Vec<String>,
    /// Project versions the tool's table lacks, left pending.
    pub missing: Vec<Version>,
}

impl Baseline {
    /// Every version recorded as applied, in version order.
    pub fn versions(&self) -> Vec<String> {
        self.migrations.iter().map(|m| m.version.clone()).collect()
    }
}

/// A baseline rule's refusal: the request is wrong for a version below
/// every migration, else the target's state is in the way.
impl From<BaselineError> for LifecycleError {
    fn from(err: BaselineError) -> Self {
        match err {
            BaselineError::NothingAtOrBelow(_) => Self::invalid("version", err.to_string()),
            other => Self::conflict(other.code(), other.to_string()),
        }
    }
}

/// Decides what a baseline of the target records. With `write`, the
/// target's row is locked (two baselines of one target serialise here), the
/// versions are inserted as applied without a run, and the
/// `target.baselined` audit row is appended; without, nothing is locked or
/// written (a preview). Refused when the target has history in the hub or
/// on its side, is dirty, or the request and the project do not agree
/// (`common::domain::baseline`).
pub async fn baseline(
    conn: &mut PgConnection,
    caller: &Caller,
    target_id: Uuid,
    facts: &TargetFacts<'_>,
    write: bool,
) -> Result<Baseline, LifecycleError> {
    let scoped = inventory::scoped_target(conn, target_id, write)
        .await?
        .ok_or(LifecycleError::NotFound("target"))?;
    let (hub_applied, dirty) = store::baseline::target_history(conn, target_id).await?;
    baseline::ensure_fresh(
        usize::try_from(hub_applied).unwrap_or(usize::MAX),
        facts.history_rows,
        dirty.as_deref(),
    )?;
    let (at, source, table) = match facts.request {
        Request::AtVersion(version) => (Some(version), "version".to_owned(), None),
        Request::From { source, table } => (None, source.to_string(), Some(table.to_string())),
    };
    let migrations = store::migrations::list(conn, scoped.project_id).await?;
    let project: Vec<Version> = migrations
        .iter()
        .filter_map(|m| Version::parse(&m.version).ok())
        .collect();
    let plan = baseline::plan(
        &project,
        at,
        facts.external,
        table.as_deref().unwrap_or_default(),
        facts.allow_mismatch,
    )?;
    let mut by_version: HashMap<String, MigrationRow> = migrations
        .into_iter()
        .map(|m| (m.version.clone(), m))
        .collect();
    let chosen: Vec<MigrationRow> = plan
        .versions
        .iter()
        .filter_map(|v| by_version.remove(&v.to_string()))
        .collect();
    let decided = Baseline {
        project_id: scoped.project_id,
        source,
        table,
        migrations: chosen,
        unknown: plan.unknown,
        missing: plan.missing,
    };
    if !write {
        return Ok(decided);
    }

    let rows: Vec<&MigrationRow> = decided.migrations.iter().collect();
    store::baseline::record(conn, target_id, &rows).await?;
    audit::append(
        conn,
        &caller
            .audit("target.baselined", "target", target_id)
            .project(decided.project_id)
            .details(json!({
                "source": decided.source,
                "table": decided.table,
                "baseline_version": decided.migrations.last().map(|m| &m.version),
                "versions": decided.migrations.len(),
                "unknown_ignored": decided.unknown.len(),
                "missing_left_pending": decided.missing.len(),
                "allow_mismatch": facts.allow_mismatch,
            })),
    )
    .await?;
    Ok(decided)
}
