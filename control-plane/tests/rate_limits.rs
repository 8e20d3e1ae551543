//! Rate limits: sign-in steps per client address, requests per API token,
//! and refused API tokens per client address. Clients on other loopback
//! addresses (127.0.0.2) stand for other machines.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use reqwest::{StatusCode, header};
use serde_json::Value;
use support::TestApp;

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
async fn refused_tokens_pause_their_address_before_any_token_is_checked() {
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_AUTH_FAILURE_LIMIT", "3".into());
    })
    .await;
    let guesser = client_from(1);
    // Successful requests do not count.
    for _ in 0..10 {
        let resp = get(&guesser, app.url("/api/v1/me"), Some(&app.user)).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    for i in 0..3 {
        let guess = format!("mh_guess_{i}");
        let resp = get(&guesser, app.url("/api/v1/me"), Some(&guess)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    expect_api_limit(get(&guesser, app.url("/api/v1/me"), Some("mh_guess_3")).await).await;
    // Paused: even a right token from this address waits, so guessing
    // cannot go on until a guess happens to be right.
    expect_api_limit(get(&guesser, app.url("/api/v1/me"), Some(&app.user)).await).await;

    // Other addresses are unaffected, right tokens and wrong ones alike.
    let other = client_from(2);
    let resp = get(&other, app.url("/api/v1/me"), Some(&app.user)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get(&other, app.url("/api/v1/me"), Some("mh_wrong")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
