//! OpenID Connect sign-in (authorization-code flow with PKCE, state and nonce).
//!
//! The issuer is discovered lazily and cached, so an unreachable issuer never
//! stops the server from starting; the sign-in page and `/readyz` say so.

use std::time::{Duration, Instant};

use common::{config::OidcSettings, domain::signin::Identity};
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse,
    core::{
        CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
        CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
        CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
        CoreTokenIntrospectionResponse, CoreTokenType,
    },
    reqwest,
};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

/// Google Workspace's hosted-domain claim, beside the standard ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkspaceClaims {
    #[serde(default)]
    pub hd: Option<String>,
}

impl AdditionalClaims for WorkspaceClaims {}

type TokenFields = IdTokenFields<
    WorkspaceClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<TokenFields, CoreTokenType>;
type OidcClient = Client<
    WorkspaceClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What the browser's session keeps between `/auth/login` and `/auth/callback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingFlow {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the sign-in response does not belong to this browser session (state mismatch)")]
    StateMismatch,
    #[error("no sign-in is in progress in this browser session; it may have been used already")]
    NoPendingFlow,
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the authorization code could not be exchanged: {0}")]
    Exchange(String),
    #[error("the ID token is not valid: {0}")]
    InvalidIdToken(String),
}

impl OidcError {
    /// Stable reason recorded in the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            OidcError::Unreachable(_) => "issuer_unreachable",
            OidcError::StateMismatch => "state_mismatch",
            OidcError::NoPendingFlow => "no_pending_flow",
            OidcError::Refused(_) => "issuer_refused",
            OidcError::Exchange(_) => "code_exchange_failed",
            OidcError::InvalidIdToken(_) => "invalid_id_token",
        }
    }
}

const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

pub struct Oidc {
    settings: OidcSettings,
    redirect_url: RedirectUrl,
    http: reqwest::Client,
    cached: RwLock<Option<(OidcClient, Instant)>>,
    /// The last failed discovery; retried only after `RETRY_AFTER`, so
    /// `/readyz` and the sign-in page stay fast while the issuer is down.
    last_failure: std::sync::Mutex<Option<(Instant, String)>>,
}

const RETRY_AFTER: Duration = Duration::from_secs(30);

impl Oidc {
    pub fn new(settings: OidcSettings, public_url: &str) -> anyhow::Result<Self> {
        let redirect_url = RedirectUrl::new(format!("{public_url}/auth/callback"))?;
        let http = reqwest::Client::builder()
            // The token endpoint must not redirect us somewhere else (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            settings,
            redirect_url,
            http,
            cached: RwLock::new(None),
            last_failure: std::sync::Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    async fn client(&self) -> Result<OidcClient, OidcError> {
        if let Some((client, at)) = self.cached.read().await.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(client.clone());
        }
        if let Some((at, error)) = self.last_failure.lock().expect("not poisoned").as_ref()
            && at.elapsed() < RETRY_AFTER
        {
            return Err(OidcError::Unreachable(error.clone()));
        }
        let discovered = match IssuerUrl::new(self.settings.issuer.clone()) {
            Ok(issuer) => CoreProviderMetadata::discover_async(issuer, &self.http)
                .await
                .map_err(|e| error_chain(&e)),
            Err(e) => Err(e.to_string()),
        };
        let metadata = match discovered {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(issuer = %self.settings.issuer, error, "OIDC discovery failed");
                *self.last_failure.lock().expect("not poisoned") =
                    Some((Instant::now(), error.clone()));
                return Err(OidcError::Unreachable(error));
            }
        };
        let client: OidcClient = Client::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect_url.clone());
        *self.cached.write().await = Some((client.clone(), Instant::now()));
        Ok(client)
    }

    /// Whether the issuer's discovery document can be fetched.
    pub async fn reachable(&self) -> bool {
        self.client().await.is_ok()
    }

    /// Starts a sign-in: the URL to send the browser to, and what to keep.
    pub async fn begin(&self, return_to: String) -> Result<(String, PendingFlow), OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok((
            url.to_string(),
            PendingFlow {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                return_to,
            },
        ))
    }

    /// Completes a sign-in: checks `state`, exchanges the code (with the PKCE
    /// verifier) and verifies the ID token's signature, issuer, audience,
    /// expiry and nonce.
    pub async fn finish(
        &self,
        flow: PendingFlow,
        code: &str,
        state: &str,
    ) -> Result<Identity, OidcError> {
        if !constant_time_eq(flow.state.as_bytes(), state.as_bytes()) {
            return Err(OidcError::StateMismatch);
        }
        let client = self.client().await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
        let id_token = response.extra_fields().id_token().ok_or_else(|| {
            OidcError::InvalidIdToken("the token response has no ID token".into())
        })?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(flow.nonce))
            .map_err(|e| OidcError::InvalidIdToken(error_chain(&e)))?;
        Ok(Identity {
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified().unwrap_or(false),
            hosted_domain: claims.additional_claims().hd.clone(),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned()),
        })
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Compares secrets without leaking their common prefix through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
