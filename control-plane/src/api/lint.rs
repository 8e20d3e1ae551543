//! `POST /api/v1/lint`: the SQL review of one script, for tools that
//! prefer HTTP to `control-plane lint`.

use axum::{Json, extract::State};
use common::domain::Capability;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ErrorBody},
    routes::{Access, Routes},
    service::lint::{LintBody, LintResult, lint},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new().post("/lint", Access::Needs(Capability::View), review)
}

#[utoipa::path(post, path = "/api/v1/lint", tag = "review",
    request_body = LintBody,
    responses(
        (status = 200, description = "The findings, rated by the environment's review policy when one is named (else at the catalogue's severities), with the waivers the script's `-- migrate-hub:allow` directives give", body = LintResult),
        (status = 422, description = "`invalid_field`: `sql` (too large), `environment` (no such environment)", body = ErrorBody),
    ))]
pub(crate) async fn review(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiJson(body): ApiJson<LintBody>,
) -> Result<Json<LintResult>, ApiError> {
    lint(&state, body).await.map(Json)
}
