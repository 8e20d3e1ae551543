//! Schema snapshots for people: what a run changed on one target.

use common::{
    domain::schema::{self, SchemaDiff},
    store::{
        schema_drift::{self, DriftedTarget},
        snapshots::{self, SnapshotRow},
    },
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

/// What one run changed on one target: the target's snapshot before the
/// execution and after it, and their difference.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetSchemaChange {
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub target_name: String,
    pub execution_id: Uuid,
    /// The target's schema before the execution (its own snapshot taken
    /// then, else the newest earlier one); `null` when the hub has none.
    pub before: Option<SnapshotRow>,
    /// The snapshot taken after the execution; `null` while it runs or when
    /// none could be taken.
    pub after: Option<SnapshotRow>,
    /// `null` unless both snapshots exist.
    pub diff: Option<SchemaDiff>,
}

/// What the run `run_id` changed on `target_id`; 404 when the run has no
/// execution on that target.
pub async fn run_target_change(
    state: &AppState,
    run_id: Uuid,
    target_id: Uuid,
) -> Result<TargetSchemaChange, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (execution_id, target_name) = snapshots::execution_of(&mut conn, run_id, target_id)
        .await?
        .ok_or(ApiError::NotFound("target execution"))?;
    let (before, after) = snapshots::around_execution(&mut conn, target_id, execution_id).await?;
    let diff = match (&before, &after) {
        (Some(b), Some(a)) => {
            let old = snapshots::text(&mut conn, &b.hash)
                .await?
                .unwrap_or_default();
            let new = if a.hash == b.hash {
                old.clone()
            } else {
                snapshots::text(&mut conn, &a.hash)
                    .await?
                    .unwrap_or_default()
            };
            Some(schema::diff(&old, &new))
        }
        _ => None,
    };
    Ok(TargetSchemaChange {
        run_id,
        target_id,
        target_name,
        execution_id,
        before,
        after,
        diff,
    })
}

/// A target as fleet consistency names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
pub struct FleetTarget {
    pub name: String,
    pub id: Uuid,
}

/// Targets at one version sharing one schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetGroup {
    /// The newest version the hub records as applied on them.
    pub version: Option<String>,
    pub hash: String,
    pub targets: Vec<FleetTarget>,
    /// The largest group at its version; the others are compared with it.
    pub majority: bool,
    /// For a group that is not the majority: how its schema differs from
    /// the majority's at the same version.
    pub diff: Option<SchemaDiff>,
}

/// Whether a DB set's targets have the same schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetSchema {
    pub db_set_id: Uuid,
    /// `14 targets identical; orders-7, orders-12 differ`, per version.
    pub summary: String,
    /// By version, the majority first.
    pub groups: Vec<FleetGroup>,
    /// Targets without a snapshot yet.
    pub without_snapshot: Vec<FleetTarget>,
    /// Targets whose schema has drifted from their baseline, by name.
    pub drifted: Vec<DriftedTarget>,
}

/// Groups the DB set's targets by schema within each version, with a diff
/// of every outlying group against its version's majority.
pub async fn fleet_schema(state: &AppState, db_set_id: Uuid) -> Result<FleetSchema, ApiError> {
    let mut conn = state.db.acquire().await?;
    let rows = snapshots::fleet(&mut conn, db_set_id).await?;
    let members: Vec<schema::FleetMember<FleetTarget>> = rows
        .iter()
        .map(|r| schema::FleetMember {
            id: FleetTarget {
                name: r.name.clone(),
                id: r.id,
            },
            version: r.version.clone(),
            hash: r.hash.clone(),
        })
        .collect();
    let grouped = schema::fleet_groups(&members);
    let mut texts: std::collections::HashMap<String, String> = Default::default();
    let mut groups = Vec::with_capacity(grouped.len());
    let mut majority: Option<(Option<String>, String)> = None;
    for g in grouped {
        if g.majority {
            majority = Some((g.version.clone(), g.hash.clone()));
        }
        let diff = match &majority {
            Some((_, hash)) if !g.majority => {
                for h in [hash, &g.hash] {
                    if !texts.contains_key(h) {
                        let text = snapshots::text(&mut conn, h).await?.unwrap_or_default();
                        texts.insert(h.clone(), text);
                    }
                }
                Some(schema::diff(&texts[hash], &texts[&g.hash]))
            }
            _ => None,
        };
        groups.push(FleetGroup {
            version: g.version,
            hash: g.hash,
            targets: g.members,
            majority: g.majority,
            diff,
        });
    }
    let without_snapshot = rows
        .iter()
        .filter(|r| r.hash.is_none())
        .map(|r| FleetTarget {
            name: r.name.clone(),
            id: r.id,
        })
        .collect();
    let drifted = schema_drift::in_db_set(&mut conn, db_set_id).await?;
    Ok(FleetSchema {
        db_set_id,
        summary: summary(&groups),
        groups,
        without_snapshot,
        drifted,
    })
}

/// `3 targets identical` / `14 targets identical; orders-7, orders-12
/// differ`, one clause per version (`at 20261201: …`) when there are
/// several.
fn summary(groups: &[FleetGroup]) -> String {
    let mut versions: Vec<&Option<String>> = groups.iter().map(|g| &g.version).collect();
    versions.dedup();
    let several = versions.len() > 1;
    let clauses: Vec<String> = versions
        .into_iter()
        .map(|version| {
            let at: Vec<&FleetGroup> = groups.iter().filter(|g| &g.version == version).collect();
            let same = at
                .iter()
                .find(|g| g.majority)
                .map_or(0, |g| g.targets.len());
            let differ: Vec<&str> = at
                .iter()
                .filter(|g| !g.majority)
                .flat_map(|g| g.targets.iter().map(|t| t.name.as_str()))
                .collect();
            let mut clause = match same {
                1 => "1 target".to_owned(),
                n => format!("{n} targets identical"),
            };
            if !differ.is_empty() {
                clause.push_str(&format!("; {} differ", differ.join(", ")));
            }
            match version {
                Some(v) if several => format!("at {v}: {clause}"),
                None if several => format!("never migrated: {clause}"),
                _ => clause,
            }
        })
        .collect();
    if clauses.is_empty() {
        "no snapshots yet".into()
    } else {
        clauses.join(" · ")
    }
}

/// A target's schema as one of its snapshots recorded it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetSchema {
    pub target_id: Uuid,
    /// The snapshot shown (the newest unless one was asked for); `null`
    /// when the target has none.
    pub snapshot: Option<SnapshotRow>,
    /// Its text, only the blocks that mention `q` when one was given.
    pub schema: String,
}

/// How many snapshots of a target are listed.
pub const HISTORY_LIMIT: i64 = 100;

async fn known_target(conn: &mut sqlx::PgConnection, target_id: Uuid) -> Result<(), ApiError> {
    common::store::inventory::target(conn, target_id)
        .await?
        .map(drop)
        .ok_or(ApiError::NotFound("target"))
}

/// The target's snapshots, newest first.
pub async fn target_snapshots(
    state: &AppState,
    target_id: Uuid,
) -> Result<Vec<SnapshotRow>, ApiError> {
    let mut conn = state.db.acquire().await?;
    known_target(&mut conn, target_id).await?;
    Ok(snapshots::list(&mut conn, target_id, HISTORY_LIMIT).await?)
}

/// The target's schema at `snapshot` (else its newest), filtered by `q`.
pub async fn target_schema(
    state: &AppState,
    target_id: Uuid,
    snapshot: Option<Uuid>,
    q: Option<&str>,
) -> Result<TargetSchema, ApiError> {
    let mut conn = state.db.acquire().await?;
    known_target(&mut conn, target_id).await?;
    let row = match snapshot {
        Some(id) => Some(
            snapshots::get(&mut conn, target_id, id)
                .await?
                .ok_or(ApiError::NotFound("snapshot"))?,
        ),
        None => snapshots::list(&mut conn, target_id, 1).await?.pop(),
    };
    let schema = match &row {
        Some(r) => snapshots::text(&mut conn, &r.hash)
            .await?
            .unwrap_or_default(),
        None => String::new(),
    };
    Ok(TargetSchema {
        target_id,
        schema: schema::filter(&schema, q.unwrap_or_default()),
        snapshot: row,
    })
}

/// How the target's schema differs between two of its snapshots.
pub async fn target_schema_diff(
    state: &AppState,
    target_id: Uuid,
    from: Uuid,
    to: Uuid,
) -> Result<SchemaDiff, ApiError> {
    let mut conn = state.db.acquire().await?;
    known_target(&mut conn, target_id).await?;
    let mut texts = Vec::with_capacity(2);
    for id in [from, to] {
        let row = snapshots::get(&mut conn, target_id, id)
            .await?
            .ok_or(ApiError::NotFound("snapshot"))?;
        texts.push(
            snapshots::text(&mut conn, &row.hash)
                .await?
                .unwrap_or_default(),
        );
    }
    Ok(schema::diff(&texts[0], &texts[1]))
}

/// The schema a version produces on one engine: the newest snapshot of a
/// target of the project at that version.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionSchema {
    pub engine: String,
    /// The target the snapshot was taken on.
    pub target_name: String,
    pub snapshot: SnapshotRow,
    pub schema: String,
}

/// The schema `version` produces, per engine of the project's targets
/// (none where no target has a snapshot at that version).
pub async fn project_version_schema(
    state: &AppState,
    slug: &str,
    version: &str,
) -> Result<Vec<VersionSchema>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = crate::service::inventory::project(&mut conn, slug).await?;
    let found = snapshots::at_version(&mut conn, project.id, version).await?;
    let mut schemas = Vec::with_capacity(found.len());
    for found in found {
        let schema = snapshots::text(&mut conn, &found.snapshot.hash)
            .await?
            .unwrap_or_default();
        schemas.push(VersionSchema {
            engine: found.engine,
            target_name: found.target_name,
            snapshot: found.snapshot,
            schema,
        });
    }
    Ok(schemas)
}
