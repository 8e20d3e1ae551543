//! A deliberately misbehaving OpenID provider for the negative ID-token
//! cases the real provider will not produce: wrong nonce, wrong audience,
//! expired token, bad signature, unverified e-mail. It approves every
//! authorization request at once and mints the ID token the test asks for.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    response::{IntoResponse, Redirect},
    routing::{get, post},
};
use openidconnect::{
    Audience, EmptyAdditionalClaims, EndUserEmail, IssuerUrl, JsonWebKeyId, Nonce,
    PrivateSigningKey, StandardClaims, SubjectIdentifier,
    core::{CoreIdToken, CoreIdTokenClaims, CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey},
};
use serde::Deserialize;
use serde_json::json;

/// What the next ID token gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    None,
    WrongNonce,
    WrongAudience,
    Expired,
    BadSignature,
    UnverifiedEmail,
}

struct Shared {
    issuer: String,
    client_id: String,
    defect: Defect,
    nonce: Option<String>,
}

#[derive(Clone)]
struct IssuerState(Arc<Mutex<Shared>>);

pub struct TestIssuer {
    pub issuer: String,
    state: IssuerState,
}

const KEY: &str = include_str!("../../fixtures/issuer-key.pem");
const OTHER_KEY: &str = include_str!("../../fixtures/other-key.pem");
const KID: &str = "test-key";

fn key(pem: &str) -> CoreRsaPrivateSigningKey {
    CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new(KID.into())))
        .expect("fixture key parses")
}

impl TestIssuer {
    pub async fn start(client_id: &str) -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let state = IssuerState(Arc::new(Mutex::new(Shared {
            issuer: issuer.clone(),
            client_id: client_id.to_owned(),
            defect: Defect::None,
            nonce: None,
        })));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestIssuer { issuer, state }
    }

    pub fn next_token(&self, defect: Defect) {
        self.state.0.lock().unwrap().defect = defect;
    }
}

async fn discovery(State(s): State<IssuerState>) -> impl IntoResponse {
    let issuer = s.0.lock().unwrap().issuer.clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks() -> impl IntoResponse {
    Json(json!({ "keys": [key(KEY).as_verification_key()] }))
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    redirect_uri: String,
    state: String,
    nonce: String,
}

async fn authorize(
    State(s): State<IssuerState>,
    Query(q): Query<AuthorizeQuery>,
) -> impl IntoResponse {
    s.0.lock().unwrap().nonce = Some(q.nonce);
    Redirect::to(&format!(
        "{}?code=test-code&state={}",
        q.redirect_uri, q.state
    ))
}

async fn token(State(s): State<IssuerState>) -> impl IntoResponse {
    let (issuer, client_id, defect, nonce) = {
        let shared = s.0.lock().unwrap();
        (
            shared.issuer.clone(),
            shared.client_id.clone(),
            shared.defect,
            shared.nonce.clone().unwrap_or_default(),
        )
    };
    let now = chrono::Utc::now();
    let (issued, expires) = if defect == Defect::Expired {
        (
            now - chrono::Duration::minutes(30),
            now - chrono::Duration::minutes(20),
        )
    } else {
        (now, now + chrono::Duration::minutes(5))
    };
    let audience = if defect == Defect::WrongAudience {
        "someone-else".to_owned()
    } else {
        client_id
    };
    let claims = CoreIdTokenClaims::new(
        IssuerUrl::new(issuer).unwrap(),
        vec![Audience::new(audience)],
        expires,
        issued,
        StandardClaims::new(SubjectIdentifier::new("test-subject".into()))
            .set_email(Some(EndUserEmail::new("user@example.com".into())))
            .set_email_verified(Some(defect != Defect::UnverifiedEmail)),
        EmptyAdditionalClaims {},
    )
    .set_nonce(Some(Nonce::new(if defect == Defect::WrongNonce {
        "not-the-nonce".into()
    } else {
        nonce
    })));
    let signer = key(if defect == Defect::BadSignature {
        OTHER_KEY
    } else {
        KEY
    });
    let id_token = CoreIdToken::new(
        claims,
        &signer,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        None,
        None,
    )
    .unwrap();
    Json(json!({
        "access_token": "test-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token.to_string(),
    }))
}
