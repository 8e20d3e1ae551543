//! The audit log: read (users see their own actions) and verify the chain.

use axum::{
    Json,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use common::{
    domain::Capability,
    store::audit::{self, AuditRow, Filter, Verification},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Authorized, CurrentUser, rules},
    error::{ApiError, ApiQuery, ErrorBody},
    paging::{Page, PageQuery},
    routes::{Access, Routes},
    service::inventory::project,
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get("/audit", Access::Needs(Capability::View), list)
        .get(
            "/audit/verify",
            Access::Needs(Capability::ReadAllAudit),
            verify,
        )
        .get(
            "/audit/export.csv",
            Access::Needs(Capability::ExportAudit),
            export_csv,
        )
}

/// Filters of the audit log. Users see their own actions whatever they ask.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// The actor: a person's e-mail, or `system:<name>`.
    actor: Option<String>,
    /// An action such as `run.approved`.
    action: Option<String>,
    /// A project's slug.
    project: Option<String>,
    /// RFC 3339; rows at or after.
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<OffsetDateTime>,
    /// RFC 3339; rows before.
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<OffsetDateTime>,
    /// How many rows (default 50, at most 500); ignored by the export.
    #[serde(default, deserialize_with = "crate::paging::page_limit")]
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One audit row.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditItem {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    /// `<type>:<id>`, e.g. `run:0190…`.
    pub object: String,
    pub project_id: Option<Uuid>,
    /// What happened, by action; never a secret.
    #[schema(value_type = Object)]
    pub details: Value,
    pub ip: Option<String>,
    /// This row's link in the hash chain.
    pub hash: String,
}

/// Turns the query into a filter; users are held to their own rows.
async fn filter_for(
    state: &AppState,
    user: &CurrentUser,
    q: AuditQuery,
    limit: i64,
) -> Result<Filter, ApiError> {
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
    Ok(filter)
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit rows, newest first", body = Page<AuditItem>),
        (status = 400, description = "`bad_request`: a malformed query or cursor", body = ErrorBody),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    user: Authorized<rules::View>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditItem>>, ApiError> {
    let limit = PageQuery {
        limit: q.limit,
        cursor: None,
    }
    .limit();
    let filter = filter_for(&state, &user, q, limit).await?;
    let mut rows: Vec<AuditRow> = audit::list(&state.db, &filter).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|r| AuditItem {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            object: format!("{}:{}", r.object_type, r.object_id),
            project_id: r.project_id,
            details: r.details,
            ip: r.ip,
            hash: r.hash,
        })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The result of walking the whole hash chain", body = Verification)))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    _user: Authorized<rules::ReadAllAudit>,
) -> Result<Json<Verification>, ApiError> {
    Ok(Json(audit::verify(&state.db).await?))
}

/// Most rows one export returns; narrow the filter for more.
const EXPORT_LIMIT: i64 = 100_000;

/// One CSV cell: quoted when needed, and defused when a spreadsheet would
/// read it as a formula.
fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[utoipa::path(get, path = "/api/v1/audit/export.csv", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "The filtered rows (at most 100000), oldest first, as CSV", body = String, content_type = "text/csv"),
        (status = 400, description = "`bad_request`: a malformed query", body = ErrorBody),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
    ))]
pub(crate) async fn export_csv(
    State(state): State<AppState>,
    admin: Authorized<rules::ExportAudit>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let filter = filter_for(&state, &admin, q, EXPORT_LIMIT - 1).await?;
    let rows = audit::list(&state.db, &filter).await?;
    let mut out = String::from("seq,at,actor,action,object,project_id,details,ip,hash\n");
    for r in rows.iter().rev() {
        let cells = [
            r.seq.to_string(),
            r.at.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            r.actor.clone(),
            r.action.clone(),
            format!("{}:{}", r.object_type, r.object_id),
            r.project_id.map(|p| p.to_string()).unwrap_or_default(),
            r.details.to_string(),
            r.ip.clone().unwrap_or_default(),
            r.hash.clone(),
        ];
        out.push_str(
            &cells
                .iter()
                .map(|c| csv_cell(c))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"migrate-hub-audit.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=cmd()"), "'=cmd()");
        assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
    }
}
