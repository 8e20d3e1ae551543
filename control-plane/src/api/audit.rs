//! The audit log: read (users see their own actions) and verify the chain.

use axum::{Json, Router, extract::State, routing::get};
use common::{
    domain::Capability,
    store::audit::{self, AuditRow, Filter, Verification},
};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{PageQuery, inventory::project};
use crate::{
    app::AppState,
    auth::{Authorized, rules},
    error::{ApiError, ApiQuery},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/audit", get(list))
        .route("/audit/verify", get(verify))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    project: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<OffsetDateTime>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    user: Authorized<rules::View>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = PageQuery {
        limit: q.limit,
        cursor: None,
    }
    .limit();
    let project_id = match q.project.as_deref() {
        Some(slug) => {
            let mut conn = state.db.acquire().await?;
            Some(project(&mut conn, slug).await?.id)
        }
        None => None,
    };
    let before_seq = q
        .cursor
        .as_deref()
        .map(str::parse::<i64>)
        .transpose()
        .map_err(|_| ApiError::BadRequest("cursor is not an audit sequence number".into()))?;
    let mut filter = Filter {
        actor: q.actor.map(|a| a.trim().to_lowercase()),
        action: q.action,
        project_id,
        since: q.since,
        until: q.until,
        before_seq,
        limit: limit + 1,
        ..Filter::default()
    };
    // Users read their own actions only, whatever they asked for.
    if !user.can(Capability::ReadAllAudit) {
        filter.actor = None;
        filter.actor_id = Some(user.id);
    }
    let mut rows: Vec<AuditRow> = audit::list(&state.db, &filter).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "at": r.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "actor": r.actor,
                "action": r.action,
                "object": format!("{}:{}", r.object_type, r.object_id),
                "project_id": r.project_id,
                "details": r.details,
                "ip": r.ip,
                "hash": r.hash,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

async fn verify(
    State(state): State<AppState>,
    _user: Authorized<rules::ReadAllAudit>,
) -> Result<Json<Verification>, ApiError> {
    Ok(Json(audit::verify(&state.db).await?))
}
