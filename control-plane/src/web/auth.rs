//! Sign-in through the OIDC issuer, and sign-out.

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use common::domain::Capability;
use common::{
    domain::{
        Role,
        signin::{self, KnownUser, Refusal, SignIn, SignInPolicy},
    },
    store::{
        audit::{self, Actor, Entry},
        users,
    },
};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use tower_sessions::Session;

use super::{Viewer, render, safe_return_to, see_other};
use crate::{
    auth::{
        csrf,
        extract::{ClientIp, SIGNED_IN_AT_KEY, SignInAllowed},
        oidc::{OidcError, PendingFlow},
        session_store::USER_ID_KEY,
    },
    error::{ApiError, ApiQuery},
    routes::{Access, Routes},
    state::AppState,
};

/// Session key of the sign-in in progress. Removed when the callback is
/// handled, so a replayed callback finds nothing.
const FLOW_KEY: &str = "oidc_flow";

pub fn router() -> Routes {
    Routes::new()
        .get("/signin", Access::Public, signin_page)
        .get("/auth/login", Access::Public, login)
        .get("/auth/callback", Access::Public, callback)
        .post("/auth/logout", Access::Needs(Capability::View), logout)
}

/// Where to go after signing in. Read with the plain query extractor, not
/// `ApiQuery`: a return path is never stored or shown as given, it goes
/// through [`safe_return_to`], which turns anything unsafe (control
/// characters included) into `/` — a link with a mangled return path still
/// signs people in.
#[derive(Debug, Deserialize)]
struct ReturnTo {
    return_to: Option<String>,
}

async fn signin_page(
    State(state): State<AppState>,
    Query(q): Query<ReturnTo>,
) -> Result<Response, ApiError> {
    signin_response(&state, StatusCode::OK, q.return_to.as_deref(), None).await
}

async fn signin_response(
    state: &AppState,
    status: StatusCode,
    return_to: Option<&str>,
    problem: Option<String>,
) -> Result<Response, ApiError> {
    let (enabled, reachable, issuer) = match &state.oidc {
        Some(oidc) => (true, oidc.reachable().await, oidc.issuer().to_owned()),
        None => (false, false, String::new()),
    };
    let label = if issuer.contains("accounts.google.com") {
        "Google".to_owned()
    } else {
        "single sign-on".to_owned()
    };
    let mut page = render(
        state,
        "auth/signin.html",
        json!({
            "sso_enabled": enabled,
            "issuer_reachable": reachable,
            "issuer": issuer,
            "issuer_label": label,
            "return_to": safe_return_to(return_to),
            "problem": problem,
        }),
        None,
    )?
    .into_response();
    *page.status_mut() = status;
    Ok(page)
}

async fn login(
    _: SignInAllowed,
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<ReturnTo>,
) -> Result<Response, ApiError> {
    let Some(oidc) = &state.oidc else {
        return signin_response(
            &state,
            StatusCode::NOT_FOUND,
            None,
            Some("Single sign-on is not configured.".into()),
        )
        .await;
    };
    match oidc.begin(safe_return_to(q.return_to.as_deref())).await {
        Ok((url, flow)) => {
            session
                .insert(FLOW_KEY, &flow)
                .await
                .map_err(|e| anyhow::anyhow!("session: {e}"))?;
            Ok(see_other(&url))
        }
        Err(e) => {
            signin_response(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                Some(e.to_string()),
            )
            .await
        }
    }
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Why a sign-in was refused: for the person and for the audit log.
enum Failure {
    Oidc(OidcError),
    Policy(Refusal, String),
}

async fn callback(
    _: SignInAllowed,
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> Result<Response, ApiError> {
    let Some(oidc) = state.oidc.clone() else {
        return signin_response(
            &state,
            StatusCode::NOT_FOUND,
            None,
            Some("Single sign-on is not configured.".into()),
        )
        .await;
    };
    let flow: Option<PendingFlow> = session
        .remove(FLOW_KEY)
        .await
        .map_err(|e| anyhow::anyhow!("session: {e}"))?;
    let result = async {
        if let Some(error) = &q.error {
            let text = q.error_description.clone().unwrap_or_else(|| error.clone());
            return Err(Failure::Oidc(OidcError::Refused(text)));
        }
        let flow = flow.ok_or(Failure::Oidc(OidcError::NoPendingFlow))?;
        let (Some(code), Some(returned_state)) = (q.code.as_deref(), q.state.as_deref()) else {
            return Err(Failure::Oidc(OidcError::Refused(
                "the callback carries no code".into(),
            )));
        };
        // Checked again: a sign-in begun before this rule held (or by an
        // older replica) may have kept any text.
        let return_to = safe_return_to(Some(&flow.return_to));
        let identity = oidc
            .finish(flow, code, returned_state)
            .await
            .map_err(Failure::Oidc)?;
        let policy = SignInPolicy {
            allowed_domains: &state.settings.allowed_domains,
            provisioning: state.settings.provisioning,
            bootstrap_admins: &state.settings.bootstrap_admins,
        };
        let email = signin::verified_email(&identity, &policy)
            .map_err(|r| Failure::Policy(r, identity.email.clone().unwrap_or_default()))?;
        Ok((email, identity.name, return_to, policy))
    }
    .await;

    let (email, name, return_to, policy) = match result {
        Ok(ok) => ok,
        Err(failure) => return refuse(&state, failure, ip).await,
    };
    let mut tx = state.db.begin().await?;
    let known = match users::find_by_email(&mut tx, &email).await? {
        None => KnownUser::None,
        Some(u) if u.disabled => KnownUser::Disabled,
        Some(u) => KnownUser::Enabled(u.role()),
    };
    let decision = match signin::decide(email.clone(), known, &policy) {
        Ok(d) => d,
        Err(refusal) => {
            drop(tx);
            return refuse(&state, Failure::Policy(refusal, email), ip).await;
        }
    };
    let display_name = name.unwrap_or_default();
    let (user, provisioned) = match decision {
        SignIn::Provision { email, role } => (
            users::upsert(&mut tx, &email, &display_name, role).await?.0,
            true,
        ),
        SignIn::Existing { email, promote_to } => {
            let current = users::find_by_email(&mut tx, &email)
                .await?
                .ok_or(ApiError::NotFound("user"))?;
            let role: Role = promote_to.unwrap_or(current.role());
            (
                users::upsert(&mut tx, &email, &display_name, role).await?.0,
                false,
            )
        }
    };
    users::touch_login(&mut tx, user.id).await?;
    audit::append(
        &mut tx,
        &Entry::new(
            Actor::User {
                id: user.id,
                email: user.email.clone(),
            },
            "auth.login",
            "user",
            user.id,
        )
        .ip(ip)
        .details(json!({ "issuer": oidc.issuer(), "provisioned": provisioned, "role": user.role })),
    )
    .await?;
    tx.commit().await?;
    // A GET that wrote: sign-in may have changed the user's role or name,
    // which token lookups shared before it must not show any more.
    state.writes.record();

    // A new session id at sign-in, so a planted id is worthless (fixation).
    session
        .cycle_id()
        .await
        .map_err(|e| anyhow::anyhow!("session: {e}"))?;
    let store = |e: tower_sessions::session::Error| anyhow::anyhow!("session: {e}");
    session
        .insert(USER_ID_KEY, user.id.to_string())
        .await
        .map_err(store)?;
    session
        .insert(SIGNED_IN_AT_KEY, OffsetDateTime::now_utc().unix_timestamp())
        .await
        .map_err(store)?;
    session
        .insert(csrf::SESSION_KEY, csrf::new_token())
        .await
        .map_err(store)?;
    Ok(see_other(&return_to))
}

async fn refuse(
    state: &AppState,
    failure: Failure,
    ip: Option<String>,
) -> Result<Response, ApiError> {
    let (reason, message, email, status) = match &failure {
        Failure::Oidc(e) => (
            e.code(),
            e.to_string(),
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        Failure::Policy(r, email) => (
            r.code(),
            r.to_string(),
            email.clone(),
            StatusCode::FORBIDDEN,
        ),
    };
    let mut tx = state.db.begin().await?;
    audit::append(
        &mut tx,
        &Entry::new(Actor::system("sign-in"), "auth.failed", "user", &email)
            .ip(ip)
            .details(json!({ "reason": reason, "message": message, "email": email })),
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(reason, "sign-in refused");
    signin_response(state, status, None, Some(message)).await
}

async fn logout(
    State(state): State<AppState>,
    session: Session,
    viewer: Viewer,
) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    audit::append(
        &mut tx,
        &viewer.user.audit("auth.logout", "user", viewer.user.id),
    )
    .await?;
    tx.commit().await?;
    session
        .flush()
        .await
        .map_err(|e| anyhow::anyhow!("session: {e}"))?;
    Ok(see_other("/signin"))
}
