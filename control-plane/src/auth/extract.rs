//! Extractors for the caller and their authorization.
//!
//! A handler states its rule in its signature — `Authorized<rules::Approve>` —
//! so a route cannot forget to check: without the argument it has no user.

use std::{
    marker::PhantomData,
    ops::Deref,
    sync::atomic::{AtomicBool, Ordering},
};

use axum::{
    extract::{FromRequestParts, OriginalUri},
    http::{header::AUTHORIZATION, request::Parts},
};
use common::{
    crypto::hash_api_token,
    domain::{Capability, Role, role::allows},
    lifecycle::Caller,
    store::{
        audit::{self, Actor, Entry},
        users,
    },
};
use time::OffsetDateTime;
use tower_sessions::Session;
use uuid::Uuid;

use super::{rate_limit, session_store::USER_ID_KEY};

/// Session key: when the user signed in (Unix seconds), for the absolute timeout.
pub const SIGNED_IN_AT_KEY: &str = "signed_in_at";

use super::bearer::SharedBearer;
use crate::{error::ApiError, state::AppState};

/// The signed-in caller with their effective role.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// The lesser of the user's role and the token's role.
    pub role: Role,
    pub token_id: Option<Uuid>,
    pub ip: Option<String>,
    /// The request as sent, `METHOD /path`, for the audit rows of refusals.
    pub route: String,
}

impl CurrentUser {
    pub fn actor(&self) -> Actor {
        self.caller().actor()
    }

    /// The caller as the run lifecycle knows them.
    pub fn caller(&self) -> Caller {
        Caller {
            id: self.id,
            email: self.email.clone(),
            role: self.role,
            ip: self.ip.clone(),
            route: self.route.clone(),
        }
    }

    pub fn can(&self, capability: Capability) -> bool {
        allows(self.role, capability)
    }

    /// An audit entry by this caller, with their address.
    pub fn audit(
        &self,
        action: &'static str,
        object_type: &'static str,
        object_id: impl ToString,
    ) -> Entry {
        self.caller().audit(action, object_type, object_id)
    }

    /// Fails with 403 (audited) unless the caller holds `capability`.
    pub async fn require(&self, state: &AppState, capability: Capability) -> Result<(), ApiError> {
        if self.can(capability) {
            return Ok(());
        }
        deny(state, self, capability).await
    }

    /// The `access.denied` row of a refusal of this request by a rule other
    /// than the role check (separation of duties, a token role above one's
    /// own): the route as requested, the answer's code and message.
    pub fn denial(&self, refusal: &ApiError) -> Entry {
        self.caller().denial(refusal.code(), &refusal.to_string())
    }

    /// Audits `refusal` (a 403) in its own transaction and returns it, for
    /// handlers that refuse before they write anything.
    pub async fn refuse(&self, state: &AppState, refusal: ApiError) -> ApiError {
        let recorded = async {
            let mut tx = state.db.begin().await?;
            audit::append(&mut tx, &self.denial(&refusal)).await?;
            tx.commit().await
        };
        match recorded.await {
            Ok(()) => refusal,
            Err(err) => err.into(),
        }
    }
}

/// The request as its caller sent it, `METHOD /path`: nested routers see
/// only their part of the path (`/runs/…` for `/api/v1/runs/…`), so the
/// original URI is preferred.
fn requested_route(parts: &Parts) -> String {
    let path = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.path(), |uri| uri.path());
    format!("{} {path}", parts.method)
}

/// The client's address for audit rows (see [`rate_limit::client_addr`]).
fn client_ip(parts: &Parts, state: &AppState) -> Option<String> {
    rate_limit::client_addr(parts, &state.settings.trusted_proxies).map(|ip| ip.to_string())
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(user.clone());
        }
        let user = match bearer_token(parts) {
            Some(token) => {
                let client = rate_limit::client_addr(parts, &state.settings.trusted_proxies);
                let ip = client.map(|ip| ip.to_string());
                let user = match user_from_token(state, token, ip, parts).await {
                    // Only refused tokens spend (and wait for) the address's
                    // budget; a valid one is limited per token only.
                    Err(ApiError::Unauthenticated) => {
                        state.limits.bearer_refused(client)?;
                        return Err(ApiError::Unauthenticated);
                    }
                    result => result?,
                };
                if let Some(token_id) = user.token_id {
                    state.limits.token_use(token_id)?;
                }
                user
            }
            None => user_from_session(parts, state).await?,
        };
        // Every later log line of this request names who made it.
        crate::http_trace::of(&parts.extensions)
            .record("user_id", tracing::field::display(user.id));
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

async fn user_from_token(
    state: &AppState,
    token: &str,
    ip: Option<String>,
    parts: &Parts,
) -> Result<CurrentUser, ApiError> {
    // Concurrent requests with one token share lookups
    // (`crate::shared_reads`); a revocation answered by this process takes
    // effect at once, one made elsewhere within `MH_READ_MAX_AGE_MS`.
    let hash = hash_api_token(token);
    let db = state.db.clone();
    let found = state
        .token_reads
        .get(hash.clone(), move || async move {
            let bearer = users::bearer_of(&db, &hash).await?;
            Ok::<_, sqlx::Error>(SharedBearer {
                bearer,
                use_audited: AtomicBool::new(false),
            })
        })
        .await?;
    let now = OffsetDateTime::now_utc();
    let bearer = found
        .bearer
        .clone()
        .filter(|b| b.expires_at > now)
        .ok_or(ApiError::Unauthenticated)?;
    // Of the requests sharing a lookup that found the token's use due to be
    // recorded, one tries (and the database lets one replica win).
    let record_use = bearer.use_due(now) && !found.use_audited.swap(true, Ordering::SeqCst);
    let user_role: Role = bearer.user_role.parse().unwrap_or(Role::User);
    let token_role: Role = bearer.token_role.parse().unwrap_or(Role::User);
    let user = CurrentUser {
        id: bearer.user_id,
        email: bearer.email,
        name: bearer.name,
        // A token never carries more than its owner has now.
        role: user_role.min(token_role),
        token_id: Some(bearer.token_id),
        ip,
        route: requested_route(parts),
    };
    if record_use {
        let mut tx = state.db.begin().await?;
        if users::touch_token(&mut tx, bearer.token_id).await? {
            audit::append(
                &mut tx,
                &user.audit("token.used", "api_token", bearer.token_id),
            )
            .await?;
        }
        tx.commit().await?;
    }
    Ok(user)
}

/// The session's user, checked on every request: a disabled user or an
/// expired absolute lifetime ends the session at once.
async fn user_from_session(parts: &Parts, state: &AppState) -> Result<CurrentUser, ApiError> {
    let session = parts
        .extensions
        .get::<Session>()
        .cloned()
        .ok_or(ApiError::Unauthenticated)?;
    let internal =
        |e: tower_sessions::session::Error| ApiError::Internal(anyhow::anyhow!("session: {e}"));
    let user_id: Option<Uuid> = session
        .get::<String>(USER_ID_KEY)
        .await
        .map_err(internal)?
        .and_then(|s| s.parse().ok());
    let Some(user_id) = user_id else {
        return Err(ApiError::Unauthenticated);
    };
    let signed_in_at: i64 = session
        .get(SIGNED_IN_AT_KEY)
        .await
        .map_err(internal)?
        .unwrap_or(0);
    let max_age = i64::from(state.settings.session_max_hours) * 3600;
    let expired = OffsetDateTime::now_utc().unix_timestamp() - signed_in_at > max_age;
    let mut conn = state.db.acquire().await?;
    let row = users::get(&mut conn, user_id).await?;
    match row {
        Some(row) if !row.disabled && !expired => Ok(CurrentUser {
            id: row.id,
            email: row.email.clone(),
            name: row.name.clone(),
            role: row.role(),
            token_id: None,
            ip: client_ip(parts, state),
            route: requested_route(parts),
        }),
        _ => {
            session.flush().await.map_err(internal)?;
            Err(ApiError::Unauthenticated)
        }
    }
}

/// Records a refusal and returns the 403 for it.
async fn deny(
    state: &AppState,
    user: &CurrentUser,
    capability: Capability,
) -> Result<(), ApiError> {
    let (entry, message) = user.caller().lacking(capability);
    let mut tx = state.db.begin().await?;
    audit::append(&mut tx, &entry).await?;
    tx.commit().await?;
    Err(ApiError::Forbidden(message))
}

/// A capability a route requires.
pub trait Rule: Send + Sync + 'static {
    const CAPABILITY: Capability;
}

/// Marker types naming the capability of each route.
pub mod rules {
    use super::{Capability, Rule};

    macro_rules! rule {
        ($($name:ident),+) => {$(
            #[derive(Debug)]
            pub struct $name;
            impl Rule for $name {
                const CAPABILITY: Capability = Capability::$name;
            }
        )+};
    }
    rule!(
        View,
        Author,
        OperateAnyRun,
        Approve,
        ManageTargets,
        ManageProjects,
        Administer,
        ReadAllAudit,
        ExportAudit,
        WaiveFindings
    );
}

/// The caller, proven to hold `R::CAPABILITY`. Refusals are 403 and audited.
#[derive(Debug)]
pub struct Authorized<R: Rule>(pub CurrentUser, PhantomData<R>);

impl<R: Rule> Deref for Authorized<R> {
    type Target = CurrentUser;
    fn deref(&self) -> &CurrentUser {
        &self.0
    }
}

impl<R: Rule> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        user.require(state, R::CAPABILITY).await?;
        Ok(Authorized(user, PhantomData))
    }
}

/// The client's address, when the server knows it.
#[derive(Debug, Clone)]
pub struct ClientIp(pub Option<String>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, state)))
    }
}

/// Proof that a sign-in step from this client is within its budget; a
/// handler taking it answers 429 (a page, on browser routes) otherwise.
#[derive(Debug)]
pub struct SignInAllowed;

impl FromRequestParts<AppState> for SignInAllowed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state
            .limits
            .signin(rate_limit::client_addr(
                parts,
                &state.settings.trusted_proxies,
            ))
            .map(|()| SignInAllowed)
    }
}
