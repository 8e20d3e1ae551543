//! Rate limits: sign-in steps per client address, requests per API token,
//! and refused API tokens per client address. Clients on other loopback
//! addresses (127.0.0.2) stand for other machines.

use std::net::{IpAddr, Ipv4Addr};

use crate::support::TestApp;
use reqwest::{StatusCode, header};
use serde_json::Value;

/// A client whose connections come from `127.0.0.<last>`.
fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get(header::RETRY_AFTER)
        .expect("a 429 says when to retry")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: String, token: Option<&str>) -> reqwest::Response {
    let mut req = client.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

async fn expect_api_limit(resp: reqwest::Response) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&resp) >= 1);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again"),
        "{body}"
    );
}

#[tokio::test]
async fn sign_in_steps_are_limited_per_client_address_with_a_page() {
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_SIGNIN_RATE_LIMIT", "3".into());
    })
    .await;
    let here = client_from(1);
    // Start and callback share the address's budget.
    for path in ["/auth/login", "/auth/callback", "/auth/login"] {
        let resp = get(&here, app.url(path), None).await;
        assert_ne!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
    }
    for path in ["/auth/login", "/auth/callback?code=x&state=y"] {
        let resp = get(&here, app.url(path), None).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        // 3 per minute: one step comes back within 20 s.
        assert!((1..=20).contains(&retry_after(&resp)));
        assert!(
            resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "a browser route answers with a page"
        );
        let html = resp.text().await.unwrap();
        assert!(html.contains("Too many attempts"), "{html}");
    }
    // Another machine signs in as usual; pages other than sign-in are not limited.
    let there = client_from(2);
    let resp = get(&there, app.url("/auth/login"), None).await;
    assert_ne!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let resp = get(&here, app.url("/signin"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn each_api_token_has_its_own_budget() {
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_API_RATE_LIMIT", "5".into());
    })
    .await;
    let client = client_from(1);
    for _ in 0..5 {
        let resp = get(&client, app.url("/api/v1/me"), Some(&app.user)).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    expect_api_limit(get(&client, app.url("/api/v1/me"), Some(&app.user)).await).await;
    // Another token, even from the same address, is unaffected.
    let resp = get(&client, app.url("/api/v1/me"), Some(&app.admin)).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn refused_tokens_pause_only_refused_tokens_from_their_address() {
    // The default budget: 30 refused tokens per minute per address.
    let app = TestApp::spawn().await;
    let shared = client_from(1);
    // Successful requests do not count.
    for _ in 0..10 {
        let resp = get(&shared, app.url("/api/v1/me"), Some(&app.user)).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // A stale CI token behind the same address (a proxy, a NAT) retries 40 times.
    for i in 0..40 {
        let resp = get(&shared, app.url("/api/v1/me"), Some("mh_stale_ci_token")).await;
        if i < 30 {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "refusal {i}");
        } else {
            expect_api_limit(resp).await;
        }
    }
    // Valid tokens from that address go on working, the admin's included.
    for token in [&app.user, &app.admin] {
        let resp = get(&shared, app.url("/api/v1/me"), Some(token)).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // Refused ones still wait, whatever they are.
    expect_api_limit(get(&shared, app.url("/api/v1/me"), Some("mh_guess")).await).await;

    // Other addresses are unaffected, right tokens and wrong ones alike.
    let other = client_from(2);
    let resp = get(&other, app.url("/api/v1/me"), Some(&app.user)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get(&other, app.url("/api/v1/me"), Some("mh_wrong")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// Sends a refused token from 127.0.0.1 claiming to be forwarded for `client`.
async fn refused_forwarded_for(app: &TestApp, client: &str) -> reqwest::Response {
    client_from(1)
        .get(app.url("/api/v1/me"))
        .bearer_auth("mh_refused")
        .header("X-Forwarded-For", client)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_AUTH_FAILURE_LIMIT", "3".into());
    })
    .await;
    // A new address in the header each time does not buy a new budget.
    for i in 0..3 {
        let resp = refused_forwarded_for(&app, &format!("198.51.100.{i}")).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    expect_api_limit(refused_forwarded_for(&app, "198.51.100.99").await).await;
    // The audit trail records the peer, not the claim.
    assert_eq!(
        token_use_behind_a_proxy(&app).await.as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn forwarded_for_names_the_client_behind_a_trusted_proxy() {
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_AUTH_FAILURE_LIMIT", "3".into());
        env.insert("MH_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8".into());
    })
    .await;
    for _ in 0..3 {
        let resp = refused_forwarded_for(&app, "198.51.100.1").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    expect_api_limit(refused_forwarded_for(&app, "198.51.100.1").await).await;
    // Another client behind the same proxy (and a second proxy hop) has its own budget.
    let resp = refused_forwarded_for(&app, "198.51.100.2, 10.1.2.3").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A client cannot pick its address by prepending one: the nearest
    // untrusted hop counts.
    expect_api_limit(refused_forwarded_for(&app, "198.51.100.3, 198.51.100.1").await).await;
    assert_eq!(
        token_use_behind_a_proxy(&app).await.as_deref(),
        Some("198.51.100.7")
    );
}

/// Uses a valid token in a request that says it comes from 198.51.100.7;
/// returns the address the audit log records for that use.
async fn token_use_behind_a_proxy(app: &TestApp) -> Option<String> {
    let resp = client_from(1)
        .get(app.url("/api/v1/me"))
        .bearer_auth(&app.manager)
        .header("X-Forwarded-For", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    sqlx::query_scalar(
        "SELECT ip FROM audit_log WHERE action = 'token.used' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}
