//! Environments and their approval policies: admins add and edit them.
//! (Everyone may list them; see `inventory.rs`.)

use common::{
    domain::{lock_retry::MAX_RETRIES, schema_drift::OnDrift, window::Schedule},
    lifecycle,
    review::policy::Policy as ReviewPolicy,
    store::{
        audit,
        inventory::{self, EnvironmentRow},
        runs::RunScope,
    },
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::{auth::CurrentUser, error::ApiError, state::AppState};

/// The environment that can never let a requester or author approve.
const PRD: &str = "prd";
/// Sane upper bounds: a migration that waits an hour for a lock, or runs a
/// statement for a day, is a mistake in the policy, not a plan.
pub const MAX_LOCK_TIMEOUT_MS: i64 = 3_600_000;
pub const MAX_STATEMENT_TIMEOUT_MS: i64 = 86_400_000;
pub const MAX_REQUIRED_APPROVALS: i64 = 10;
pub const MAX_POSITION: i64 = 1_000_000;

/// Fields of an environment; on create the absent ones take the defaults,
/// on update they keep their value. Integers are read wide so that an
/// out-of-range number gets this API's message, naming the field.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct EnvironmentInput {
    /// Required on create: `^[a-z][a-z0-9-]{0,29}$`. Never changes.
    pub name: Option<String>,
    /// 1-1000000, unique; a new environment without one goes last.
    pub position: Option<i64>,
    /// 1-10.
    pub required_approvals: Option<i64>,
    /// Never true for `prd`.
    pub allow_self_approval: Option<bool>,
    /// Promotion gate: every version must have succeeded in the previous environment.
    pub require_previous_success: Option<bool>,
    /// 0-3600000; 0 means no limit.
    pub lock_timeout_ms: Option<i64>,
    /// 0-86400000; 0 means no limit.
    pub statement_timeout_ms: Option<i64>,
    /// 0-20: how often a migration whose lock budget (`lock_timeout_ms`)
    /// ran out is tried again, where that is safe.
    pub lock_retries: Option<i64>,
    /// 0-3600000: how long a target waits for blocking sessions to go
    /// before it tries its migration anyway.
    pub preflight_wait_ms: Option<i64>,
    /// 0-86400000: from what age an open transaction in the target's
    /// database counts as a blocker.
    pub blocker_age_ms: Option<i64>,
    /// Opt-in, 0-86400000 (0: never, the default): after the pre-flight's
    /// wait, terminate blockers `idle in transaction` for at least this
    /// long (audited with their description).
    pub terminate_idle_blockers_after_ms: Option<i64>,
    /// The SQL review's policy, whole: `{"settings": {"drop-table": "error",
    /// …}, "require_down": false}`; each setting `off`, `warning` or
    /// `error`, analyzers not named follow the defaults (docs/SQL_Review.md).
    /// A change reviews the environment's waiting runs again and
    /// invalidates those whose review changed.
    #[schema(value_type = Option<Object>)]
    pub review_policy: Option<ReviewPolicy>,
    /// 0-10: approvals a high-risk run needs (0: as many as `required_approvals`).
    pub high_risk_approvals: Option<i64>,
    /// Whether one approver of a high-risk run must be an admin.
    pub high_risk_requires_admin: Option<bool>,
    /// When targets may be migrated, e.g. `Mon-Fri 02:00-05:00
    /// Europe/Berlin` (grammar in docs/Requirements.md); `null`, `""` or
    /// `always`: at any time. Stored in its canonical form. Not part of
    /// any approval: a change reschedules, never invalidates.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub maintenance_window: Option<Option<String>>,
    /// `warn` (the default: a drifted target is shown, runs go on) or
    /// `block` (its executions are refused until an admin accepts the
    /// drift or it is reverted).
    pub on_drift: Option<String>,
}

/// A field that may be sent as `null` (to clear it) or left out (to keep
/// it): `Some(None)` and `None`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A maintenance window as sent: its canonical text, `None` for no window
/// (`always`, empty), or the grammar's complaint about `field`.
pub fn parse_window(field: &str, text: &str) -> Result<Option<String>, ApiError> {
    let schedule = Schedule::parse(text).map_err(|e| ApiError::invalid(field, e.to_string()))?;
    Ok((!schedule.is_always()).then(|| schedule.to_string()))
}

/// `^[a-z][a-z0-9-]{0,29}$`: environment names appear in URLs and policies.
pub fn valid_environment_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= 30
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn bounded(field: &str, value: i64, min: i64, max: i64) -> Result<i32, ApiError> {
    if (min..=max).contains(&value) {
        Ok(value as i32)
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be between {min} and {max}"),
        ))
    }
}

/// `base` with the input's fields applied, checked as a whole.
fn apply(input: &EnvironmentInput, base: &EnvironmentRow) -> Result<EnvironmentRow, ApiError> {
    let env = EnvironmentRow {
        name: base.name.clone(),
        position: match input.position {
            Some(p) => bounded("position", p, 1, MAX_POSITION)?,
            None => base.position,
        },
        required_approvals: match input.required_approvals {
            Some(n) => bounded("required_approvals", n, 1, MAX_REQUIRED_APPROVALS)?,
            None => base.required_approvals,
        },
        allow_self_approval: input
            .allow_self_approval
            .unwrap_or(base.allow_self_approval),
        require_previous_success: input
            .require_previous_success
            .unwrap_or(base.require_previous_success),
        lock_timeout_ms: match input.lock_timeout_ms {
            Some(ms) => bounded("lock_timeout_ms", ms, 0, MAX_LOCK_TIMEOUT_MS)?,
            None => base.lock_timeout_ms,
        },
        statement_timeout_ms: match input.statement_timeout_ms {
            Some(ms) => bounded("statement_timeout_ms", ms, 0, MAX_STATEMENT_TIMEOUT_MS)?,
            None => base.statement_timeout_ms,
        },
        lock_retries: match input.lock_retries {
            Some(n) => bounded("lock_retries", n, 0, i64::from(MAX_RETRIES))?,
            None => base.lock_retries,
        },
        preflight_wait_ms: match input.preflight_wait_ms {
            Some(ms) => bounded("preflight_wait_ms", ms, 0, MAX_LOCK_TIMEOUT_MS)?,
            None => base.preflight_wait_ms,
        },
        blocker_age_ms: match input.blocker_age_ms {
            Some(ms) => bounded("blocker_age_ms", ms, 0, MAX_STATEMENT_TIMEOUT_MS)?,
            None => base.blocker_age_ms,
        },
        terminate_idle_blockers_after_ms: match input.terminate_idle_blockers_after_ms {
            Some(0) => None,
            Some(ms) => Some(bounded(
                "terminate_idle_blockers_after_ms",
                ms,
                0,
                MAX_STATEMENT_TIMEOUT_MS,
            )?),
            None => base.terminate_idle_blockers_after_ms,
        },
        review_policy: match &input.review_policy {
            Some(policy) => {
                policy
                    .check()
                    .map_err(|e| ApiError::invalid("review_policy", e.to_string()))?;
                sqlx::types::Json(policy.clone())
            }
            None => base.review_policy.clone(),
        },
        high_risk_approvals: match input.high_risk_approvals {
            Some(n) => bounded("high_risk_approvals", n, 0, MAX_REQUIRED_APPROVALS)?,
            None => base.high_risk_approvals,
        },
        high_risk_requires_admin: input
            .high_risk_requires_admin
            .unwrap_or(base.high_risk_requires_admin),
        maintenance_window: match &input.maintenance_window {
            Some(Some(text)) => parse_window("maintenance_window", text)?,
            Some(None) => None,
            None => base.maintenance_window.clone(),
        },
        on_drift: match input.on_drift.as_deref() {
            Some(text) => text
                .parse()
                .map_err(|_| ApiError::invalid("on_drift", "must be warn or block"))?,
            None => base.on_drift,
        },
    };
    if env.name == PRD && env.allow_self_approval {
        return Err(ApiError::invalid(
            "allow_self_approval",
            "prd never lets the requester or an author approve",
        ));
    }
    Ok(env)
}

/// The fields that differ, as `{field: {from, to}}`, for the audit row.
fn changes(before: &EnvironmentRow, after: &EnvironmentRow) -> Map<String, Value> {
    let (before, after) = (json!(before), json!(after));
    let mut changed = Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (field, old) in b {
            if a.get(field) != Some(old) {
                changed.insert(field.clone(), json!({ "from": old, "to": a[field] }));
            }
        }
    }
    changed
}

/// Adds an environment; without a position it goes last.
pub async fn create_environment(
    state: &AppState,
    admin: &CurrentUser,
    body: &EnvironmentInput,
) -> Result<EnvironmentRow, ApiError> {
    let name = body
        .name
        .as_deref()
        .map(str::trim)
        .ok_or_else(|| ApiError::invalid("name", "missing field `name`"))?;
    if !valid_environment_name(name) {
        return Err(ApiError::invalid(
            "name",
            "must start with a-z and have at most 30 characters of a-z, 0-9 and '-'",
        ));
    }
    // The schema's defaults; `prd` exists from the start, so a new
    // environment is never it.
    let defaults = EnvironmentRow {
        name: name.to_owned(),
        position: 0,
        required_approvals: 1,
        allow_self_approval: true,
        require_previous_success: false,
        lock_timeout_ms: 2_000,
        statement_timeout_ms: 600_000,
        lock_retries: 5,
        preflight_wait_ms: 60_000,
        blocker_age_ms: 60_000,
        terminate_idle_blockers_after_ms: None,
        review_policy: Default::default(),
        high_risk_approvals: 0,
        high_risk_requires_admin: false,
        maintenance_window: None,
        on_drift: OnDrift::Warn,
    };
    let mut env = apply(body, &defaults)?;
    let mut tx = state.db.begin().await?;
    if body.position.is_none() {
        env.position = inventory::next_environment_position(&mut tx).await?;
    }
    let env = inventory::insert_environment(&mut tx, &env).await?;
    audit::append(
        &mut tx,
        &admin
            .audit("environment.created", "environment", &env.name)
            .details(json!(env)),
    )
    .await?;
    tx.commit().await?;
    Ok(env)
}

/// Edits an environment's policy. Its name is fixed (policies, runs and DB
/// sets refer to it, and `prd`'s rule is tied to it). New timeouts change
/// what every waiting run of the environment would execute with, so those
/// runs are invalidated in the same transaction; a new review policy
/// reviews them again and invalidates those whose review changed.
pub async fn update_environment(
    state: &AppState,
    admin: &CurrentUser,
    name: &str,
    body: &EnvironmentInput,
) -> Result<EnvironmentRow, ApiError> {
    let mut tx = state.db.begin().await?;
    let before = inventory::lock_environment(&mut tx, name)
        .await?
        .ok_or(ApiError::NotFound("environment"))?;
    if body
        .name
        .as_deref()
        .is_some_and(|n| n.trim() != before.name)
    {
        return Err(ApiError::invalid(
            "name",
            "an environment cannot be renamed; add a new one instead",
        ));
    }
    let after = apply(body, &before)?;
    let changed = changes(&before, &after);
    if changed.is_empty() {
        return Ok(before);
    }
    let env = inventory::update_environment(&mut tx, &after).await?;
    let timeouts_changed = before.lock_timeout_ms != env.lock_timeout_ms
        || before.statement_timeout_ms != env.statement_timeout_ms
        || before.lock_retries != env.lock_retries
        || before.preflight_wait_ms != env.preflight_wait_ms
        || before.blocker_age_ms != env.blocker_age_ms
        || before.terminate_idle_blockers_after_ms != env.terminate_idle_blockers_after_ms;
    let (reason, invalidated) = if timeouts_changed {
        let reason = format!("the timeouts of environment {} changed", env.name);
        let runs = lifecycle::invalidate_where(
            &mut tx,
            &admin.caller(),
            RunScope::Environment(&env.name),
            &reason,
        )
        .await?;
        (reason, runs)
    } else if before.review_policy.0 != env.review_policy.0 {
        let runs = lifecycle::review_waiting_runs(&mut tx, &admin.caller(), &env).await?;
        (lifecycle::review_policy_changed(&env.name), runs)
    } else {
        (String::new(), Vec::new())
    };
    // A new window reschedules what waits to start; it invalidates nothing.
    let rescheduled = if before.maintenance_window != env.maintenance_window {
        lifecycle::window::reschedule(&mut tx, RunScope::Environment(&env.name)).await?
    } else {
        0
    };
    audit::append(
        &mut tx,
        &admin
            .audit("environment.updated", "environment", &env.name)
            .details(json!({
                "changes": changed,
                "runs_invalidated": invalidated.len(),
                "runs_rescheduled": rescheduled,
            })),
    )
    .await?;
    lifecycle::announce_invalidated(&mut tx, &admin.caller(), &invalidated, &reason).await?;
    tx.commit().await?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names_follow_the_pattern() {
        for ok in [
            "daily",
            "stg",
            "prd",
            "qa-2",
            "a",
            &format!("a{}", "b".repeat(29)),
        ] {
            assert!(valid_environment_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Prod",
            "2nd",
            "-x",
            "with space",
            "under_score",
            &"a".repeat(31),
        ] {
            assert!(!valid_environment_name(bad), "{bad}");
        }
    }

    #[test]
    fn prd_can_never_allow_self_approval() {
        let prd = EnvironmentRow {
            name: PRD.into(),
            position: 30,
            required_approvals: 2,
            allow_self_approval: false,
            require_previous_success: true,
            lock_timeout_ms: 5_000,
            statement_timeout_ms: 600_000,
            lock_retries: 5,
            preflight_wait_ms: 60_000,
            blocker_age_ms: 60_000,
            terminate_idle_blockers_after_ms: None,
            review_policy: Default::default(),
            high_risk_approvals: 0,
            high_risk_requires_admin: false,
            maintenance_window: None,
            on_drift: OnDrift::Warn,
        };
        let input = EnvironmentInput {
            allow_self_approval: Some(true),
            ..Default::default()
        };
        let err = apply(&input, &prd).unwrap_err();
        assert!(
            matches!(err, ApiError::Invalid { ref field, .. } if field == "allow_self_approval")
        );
        let other = EnvironmentRow {
            name: "stg".into(),
            ..prd
        };
        assert!(apply(&input, &other).unwrap().allow_self_approval);
    }

    #[test]
    fn numbers_out_of_range_name_their_field() {
        let base = EnvironmentRow {
            name: "qa".into(),
            position: 40,
            required_approvals: 1,
            allow_self_approval: true,
            require_previous_success: false,
            lock_timeout_ms: 5_000,
            statement_timeout_ms: 600_000,
            lock_retries: 5,
            preflight_wait_ms: 60_000,
            blocker_age_ms: 60_000,
            terminate_idle_blockers_after_ms: None,
            review_policy: Default::default(),
            high_risk_approvals: 0,
            high_risk_requires_admin: false,
            maintenance_window: None,
            on_drift: OnDrift::Warn,
        };
        for (input, field) in [
            (
                EnvironmentInput {
                    required_approvals: Some(0),
                    ..Default::default()
                },
                "required_approvals",
            ),
            (
                EnvironmentInput {
                    lock_timeout_ms: Some(-1),
                    ..Default::default()
                },
                "lock_timeout_ms",
            ),
            (
                EnvironmentInput {
                    statement_timeout_ms: Some(MAX_STATEMENT_TIMEOUT_MS + 1),
                    ..Default::default()
                },
                "statement_timeout_ms",
            ),
            (
                EnvironmentInput {
                    position: Some(i64::from(i32::MAX) + 1),
                    ..Default::default()
                },
                "position",
            ),
            (
                EnvironmentInput {
                    on_drift: Some("ignore".into()),
                    ..Default::default()
                },
                "on_drift",
            ),
        ] {
            let err = apply(&input, &base).unwrap_err();
            assert!(
                matches!(err, ApiError::Invalid { field: ref f, .. } if f == field),
                "{field}: {err}"
            );
        }
    }
}
