//! The connection test and the target state: the only requests for which the
//! control plane connects to a target. Each connection is bounded (5 s for
//! connect and query together) and opened with the same code the worker
//! uses, so a passing test means the worker can connect too (network paths
//! aside: the worker runs in its pool's network).

use std::time::Duration;

use common::{
    domain::drift,
    store::{
        audit,
        inventory::{self, ScopedTarget},
        target_state::{self, AppliedVersion, DirtyState},
    },
    targets::{self, Endpoint, Password, Probe},
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{auth::CurrentUser, error::ApiError, state::AppState};

/// How long a connection test or a drift read may take, end to end.
pub const WAIT: Duration = Duration::from_secs(5);

/// The target with how to reach it and its opened password. The tool
/// database connection is released before the caller goes to the network.
pub async fn reach(
    state: &AppState,
    id: Uuid,
) -> Result<(ScopedTarget, Result<(Endpoint, Option<Password>), String>), ApiError> {
    let mut conn = state.db.acquire().await?;
    let scoped = inventory::scoped_target(&mut conn, id, false)
        .await?
        .ok_or(ApiError::NotFound("target"))?;
    let sealed = inventory::target_secret(&mut conn, id).await?;
    drop(conn);
    let opened = Endpoint::try_from(&scoped.target).and_then(|endpoint| {
        let password = match sealed {
            None => None,
            Some(sealed) => {
                let bytes = state
                    .keys()
                    .open(id.as_bytes(), &sealed)
                    .map_err(|e| format!("the target's password cannot be decrypted: {e}"))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| "the target's password is not valid UTF-8".to_owned())?;
                Some(Password::new(text))
            }
        };
        Ok((endpoint, password))
    });
    Ok((scoped, opened))
}

/// Connects to the target, runs its session settings and asks for the
/// server version. A failure is the answer (`ok: false` with the driver's
/// message), not an error of the request. Audited either way.
pub async fn test_connection(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
) -> Result<Probe, ApiError> {
    let (scoped, opened) = reach(state, id).await?;
    let target = &scoped.target;
    let probe = match &opened {
        Ok((endpoint, password)) => {
            targets::probe(target.engine, endpoint, password.as_ref(), WAIT).await
        }
        Err(message) => Probe {
            ok: false,
            server_version: None,
            latency_ms: 0,
            error: Some(message.clone()),
        },
    };
    tracing::info!(
        target_id = %target.id,
        ok = probe.ok,
        latency_ms = probe.latency_ms,
        error = probe.error.as_deref().unwrap_or(""),
        "connection test"
    );
    let mut tx = state.db.begin().await?;
    audit::append(
        &mut tx,
        &user
            .audit("target.tested", "target", target.id)
            .project(scoped.project_id)
            .details(json!({
                "name": target.name,
                "engine": target.engine,
                "host": target.host,
                "port": target.port,
                "database": target.database,
                "ok": probe.ok,
                "server_version": probe.server_version,
                "latency_ms": probe.latency_ms,
                "error": probe.error,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(probe)
}

/// What the hub knows about a target and whether the target agrees.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetStateView {
    pub target_id: Uuid,
    /// The versions the hub recorded as applied, in version order.
    pub applied: Vec<AppliedVersion>,
    /// Set while a failed non-transactional script left the target dirty.
    pub dirty: Option<DirtyState>,
    pub drift: Drift,
}

/// The hub's record compared with the target's `migrate_hub_history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drift {
    /// False when the target could not be read (see `error`).
    pub checked: bool,
    /// Null when not checked.
    pub in_sync: Option<bool>,
    pub differences: Vec<drift::Difference>,
    pub error: Option<String>,
}

/// What the hub knows about the target (applied versions, dirty flag) and
/// whether the target's own `migrate_hub_history` agrees, read live.
pub async fn target_state(state: &AppState, id: Uuid) -> Result<TargetStateView, ApiError> {
    let (scoped, opened) = reach(state, id).await?;
    let (applied, dirty) = {
        let mut conn = state.db.acquire().await?;
        (
            target_state::applied(&mut conn, id).await?,
            target_state::dirty(&mut conn, id).await?,
        )
    };
    let history = match &opened {
        Ok((endpoint, password)) => {
            targets::read_history(scoped.target.engine, endpoint, password.as_ref(), WAIT).await
        }
        Err(message) => Err(message.clone()),
    };
    let drift = match history {
        Ok(history) => {
            let hub: Vec<(String, String)> = applied
                .iter()
                .map(|a| (a.version.clone(), a.checksum.clone()))
                .collect();
            let differences = drift::differences(&hub, &history);
            Drift {
                checked: true,
                in_sync: Some(differences.is_empty()),
                differences,
                error: None,
            }
        }
        Err(error) => Drift {
            checked: false,
            in_sync: None,
            differences: Vec::new(),
            error: Some(error),
        },
    };
    Ok(TargetStateView {
        target_id: id,
        applied,
        dirty,
        drift,
    })
}
