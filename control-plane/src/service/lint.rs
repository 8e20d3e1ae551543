//! The SQL review of one script, on request (`POST /api/v1/lint`): the
//! analyzers of `control-plane lint`, for tools that prefer HTTP, rated by
//! an environment's review policy when the caller names one.

use common::{
    domain::{Engine, directives},
    review::{
        policy::{Policy, Risk},
        run::{self, Item, Script},
    },
    store::inventory,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{error::ApiError, state::AppState};

#[derive(Debug, Deserialize, ToSchema)]
pub struct LintBody {
    /// The engine whose grammar and rules apply.
    pub engine: Engine,
    /// The script, at most the hub's limit for one script (`MH_MAX_SQL_BYTES`).
    pub sql: String,
    /// Rate the findings as this environment's review policy does (as a
    /// run there would be reviewed); without it, at the catalogue's
    /// severities.
    pub environment: Option<String>,
    /// PostgreSQL: whether the script runs in one transaction; by default,
    /// as the hub would run it (`-- migrate-hub:no-transaction` and
    /// `CONCURRENTLY` make it run outside one).
    pub transactional: Option<bool>,
}

/// What the review found.
#[derive(Debug, Serialize, ToSchema)]
pub struct LintResult {
    /// The environment whose policy rated the findings, if any.
    pub environment: Option<String>,
    /// The worst finding's level: `low`, `medium` or `high`.
    pub risk: Risk,
    /// Error findings no `-- migrate-hub:allow` directive waives: a run of
    /// this script there could not be approved until an admin waives them.
    pub blocking: usize,
    pub findings: Vec<Item>,
}

pub async fn lint(state: &AppState, body: LintBody) -> Result<LintResult, ApiError> {
    if body.sql.len() > state.settings.max_sql_bytes {
        return Err(ApiError::invalid(
            "sql",
            format!("at most {} bytes", state.settings.max_sql_bytes),
        ));
    }
    let (environment, policy) = match body.environment.as_deref().map(str::trim) {
        Some(name) => {
            let mut conn = state.db.acquire().await?;
            let env = inventory::environment(&mut conn, name)
                .await?
                .ok_or_else(|| ApiError::invalid("environment", "no such environment"))?;
            (Some(env.name), env.review_policy.0)
        }
        None => (None, Policy::catalogue()),
    };
    let transactional = body
        .transactional
        .unwrap_or_else(|| !directives::needs_no_transaction(&body.sql));
    let engine = body.engine;
    let sql = body.sql;
    let name = environment.clone().unwrap_or_default();
    // Parsing a large script takes a while: off the request threads.
    let review = tokio::task::spawn_blocking(move || {
        run::review_run(&run::Inputs {
            environment: &name,
            policy: &policy,
            engines: &[engine],
            scripts: &[Script {
                version: "",
                sql: &sql,
                has_down: true,
                transactional,
            }],
            waivers: &[],
        })
    })
    .await
    .map_err(anyhow::Error::from)?;
    Ok(LintResult {
        environment,
        risk: review.risk,
        blocking: review.blocking().len(),
        findings: review
            .scripts
            .into_iter()
            .flat_map(|s| s.findings)
            .collect(),
    })
}
