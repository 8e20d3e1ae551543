//! Browser sign-in through the real development identity provider
//! (`oidc-provider`, driven through its own login form), sessions and CSRF.

use crate::support::{self, Browser, TestApp, csrf_token};
use reqwest::StatusCode;
use serde_json::Value;

/// Signs `email` in through the provider's login form; returns the page the
/// browser lands on in the app.
async fn sign_in(app: &TestApp, browser: &Browser, email: &str) -> support::Page {
    let form = browser.get(&app.url("/auth/login?return_to=/tokens")).await;
    assert_eq!(form.status, StatusCode::OK, "login form at {}", form.url);
    browser.submit_login(&form, email, "demo", None).await
}

async fn me(app: &TestApp, browser: &Browser) -> (StatusCode, Value) {
    let resp = browser
        .client
        .get(app.url("/api/v1/me"))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn demo_accounts_sign_in_with_their_roles() {
    let (app, _idp) = TestApp::spawn_with_sso(|_| {}).await;
    for (email, role) in [
        (support::ADMIN, "admin"),
        (support::MANAGER, "manager"),
        (support::MANAGER2, "manager"),
        (support::USER, "user"),
    ] {
        let browser = Browser::new();
        let landed = sign_in(&app, &browser, email).await;
        assert_eq!(landed.status, StatusCode::OK, "{email}: {}", landed.body);
        assert!(
            landed.url.ends_with("/tokens"),
            "returned to the page asked for: {}",
            landed.url
        );
        assert!(
            landed.body.contains(email) && landed.body.contains(role),
            "{email} sees their role"
        );
        let (status, body) = me(&app, &browser).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["role"], role);
    }
    let logins = app.audit_rows("auth.login").await;
    assert_eq!(logins.len(), 4);
}

#[tokio::test]
async fn unverified_and_foreign_accounts_are_refused_and_audited() {
    let (app, _idp) = TestApp::spawn_with_sso(|env| {
        env.insert("MH_ALLOWED_DOMAINS", "example.com".into());
        env.insert("MH_PROVISIONING", "domain".into());
    })
    .await;
    for (email, reason, text) in [
        ("unverified@example.com", "email_unverified", "not verified"),
        (
            "outsider@foreign.test",
            "domain_not_allowed",
            "may not sign in",
        ),
    ] {
        let browser = Browser::new();
        let page = sign_in(&app, &browser, email).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{email}");
        assert!(
            page.body.contains(text),
            "{email} is told why: {}",
            page.body
        );
        assert_eq!(me(&app, &browser).await.0, StatusCode::UNAUTHORIZED);
        let failed = app.audit_rows("auth.failed").await;
        assert!(
            failed
                .iter()
                .any(|(_, d)| d["reason"] == reason && d["email"] == email),
            "{failed:?}"
        );
    }
}

/// Removes the user MANAGER2 and its API token: the hub no longer knows
/// them.
async fn forget_manager2(app: &TestApp) {
    sqlx::query("DELETE FROM api_tokens WHERE user_id = (SELECT id FROM users WHERE email = $1)")
        .bind(support::MANAGER2)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM users WHERE email = $1")
        .bind(support::MANAGER2)
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_users_need_provisioning() {
    // Provisioning off: only pre-created users.
    let (app, _idp) = TestApp::spawn_with_sso(|env| {
        env.insert("MH_BOOTSTRAP_ADMINS", "".into());
    })
    .await;
    forget_manager2(&app).await;
    let page = sign_in(&app, &Browser::new(), support::MANAGER2).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("no migrate-hub account"));

    // Domain provisioning creates a `user`; bootstrap admins become admin.
    let (app, _idp) = TestApp::spawn_with_sso(|env| {
        env.insert("MH_ALLOWED_DOMAINS", "example.com".into());
        env.insert("MH_PROVISIONING", "domain".into());
        env.insert("MH_BOOTSTRAP_ADMINS", support::USER.into());
    })
    .await;
    sqlx::query("DELETE FROM api_tokens")
        .execute(&app.pool)
        .await
        .unwrap();
    forget_manager2(&app).await;
    let browser = Browser::new();
    assert_eq!(
        sign_in(&app, &browser, support::MANAGER2).await.status,
        StatusCode::OK
    );
    assert_eq!(me(&app, &browser).await.1["role"], "user");
    let browser = Browser::new();
    assert_eq!(
        sign_in(&app, &browser, support::USER).await.status,
        StatusCode::OK
    );
    assert_eq!(me(&app, &browser).await.1["role"], "admin");
}

#[tokio::test]
async fn callbacks_with_wrong_state_or_replayed_are_refused() {
    let (app, _idp) = TestApp::spawn_with_sso(|_| {}).await;

    // Capture the callback instead of visiting it.
    let browser = Browser::new();
    let callback = captured_callback(&app, &browser, "/auth/login").await;

    // A forged state is refused, and uses up the pending sign-in.
    let forged = callback.replace("state=", "state=forged");
    let page = browser.get(&forged).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("state mismatch"), "{}", page.body);
    // Replaying the genuine callback now finds no sign-in in progress.
    let page = browser.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("no sign-in is in progress"),
        "{}",
        page.body
    );
    assert_eq!(me(&app, &browser).await.0, StatusCode::UNAUTHORIZED);

    // A genuine callback works once; its replay in a fresh browser is refused.
    let browser = Browser::new();
    let callback = captured_callback(&app, &browser, "/auth/login").await;
    assert_eq!(browser.get(&callback).await.status, StatusCode::OK);
    assert_eq!(me(&app, &browser).await.0, StatusCode::OK);
    let attacker = Browser::new();
    assert_eq!(
        attacker.get(&callback).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(me(&app, &attacker).await.0, StatusCode::UNAUTHORIZED);

    let reasons: Vec<Value> = app
        .audit_rows("auth.failed")
        .await
        .into_iter()
        .map(|(_, d)| d["reason"].clone())
        .collect();
    assert!(
        reasons.contains(&Value::from("state_mismatch")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&Value::from("no_pending_flow")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn session_id_rotates_at_sign_in_and_sign_out_ends_it() {
    let (app, _idp) = TestApp::spawn_with_sso(|_| {}).await;
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let browser = Browser {
        client: reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    let app_url: reqwest::Url = app.url("/").parse().unwrap();
    let cookie = || {
        use reqwest::cookie::CookieStore;
        jar.cookies(&app_url)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
            .split("; ")
            .find(|c| c.starts_with("mh_session="))
            .map(str::to_owned)
    };
    let form = browser.get(&app.url("/auth/login")).await;
    let before = cookie().expect("the sign-in in progress has a session");
    let landed = browser
        .submit_login(&form, support::MANAGER, "demo", None)
        .await;
    assert_eq!(landed.status, StatusCode::OK);
    let after = cookie().expect("signed-in session");
    assert_ne!(before, after, "the session id changes at sign-in");

    // The pre-sign-in id is worthless: a fixation attacker holding it is not signed in.
    let fixated = reqwest::Client::new()
        .get(app.url("/api/v1/me"))
        .header("cookie", &before)
        .send()
        .await
        .unwrap();
    assert_eq!(fixated.status(), StatusCode::UNAUTHORIZED);

    // Sign out (with the CSRF token from the page): the session ends.
    let token = csrf_token(&landed.body);
    let out = browser
        .follow(
            browser
                .client
                .post(app.url("/auth/logout"))
                .form(&[("csrf_token", token.as_str())]),
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.url.ends_with("/signin"));
    assert_eq!(me(&app, &browser).await.0, StatusCode::UNAUTHORIZED);
    let replay = reqwest::Client::new()
        .get(app.url("/api/v1/me"))
        .header("cookie", &after)
        .send()
        .await
        .unwrap();
    assert_eq!(
        replay.status(),
        StatusCode::UNAUTHORIZED,
        "the old cookie is dead server-side"
    );
    assert_eq!(app.audit_rows("auth.logout").await.len(), 1);
}

#[tokio::test]
async fn unsafe_requests_with_a_session_need_the_csrf_token() {
    let (app, _idp) = TestApp::spawn_with_sso(|_| {}).await;
    let browser = Browser::new();
    let landed = sign_in(&app, &browser, support::ADMIN).await;
    let token = csrf_token(&landed.body);
    let body = serde_json::json!({"slug": "shop", "name": "Shop"});

    let missing = browser
        .client
        .post(app.url("/api/v1/projects"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    let err: Value = missing.json().await.unwrap();
    assert_eq!(err["error"]["code"], "csrf_failed");
    let wrong = browser
        .client
        .post(app.url("/api/v1/projects"))
        .header("x-csrf-token", "0".repeat(64))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let count = app.count("SELECT count(*) FROM projects").await;
    assert_eq!(count, 0, "nothing written without the token");

    let ok = browser
        .client
        .post(app.url("/api/v1/projects"))
        .header("x-csrf-token", &token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);

    // Forms carry it as a field; a form without it is refused with a page.
    let no_field = browser
        .follow(
            browser
                .client
                .post(app.url("/tokens"))
                .form(&[("name", "x"), ("expires_in_days", "5")]),
            None,
        )
        .await;
    assert_eq!(no_field.status, StatusCode::FORBIDDEN);
    assert!(no_field.body.contains("<html"), "a page, not JSON");
    let with_field = browser
        .follow(
            browser.client.post(app.url("/tokens")).form(&[
                ("name", "cli"),
                ("expires_in_days", "5"),
                ("role", "user"),
                ("csrf_token", &token),
            ]),
            None,
        )
        .await;
    assert_eq!(with_field.status, StatusCode::OK);
    assert!(
        with_field.body.contains("mh_"),
        "the new token is shown once"
    );
    let denied = app.audit_rows("access.denied").await;
    assert!(
        denied
            .iter()
            .filter(|(_, d)| d["reason"] == "csrf_missing" || d["reason"] == "csrf_mismatch")
            .count()
            >= 3
    );
}

#[tokio::test]
async fn disabling_a_user_ends_their_browser_session() {
    let (app, _idp) = TestApp::spawn_with_sso(|_| {}).await;
    let browser = Browser::new();
    sign_in(&app, &browser, support::USER).await;
    assert_eq!(me(&app, &browser).await.0, StatusCode::OK);
    let id = app.user_id(support::USER).await;
    let (status, _) = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &app.admin,
            serde_json::json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me(&app, &browser).await.0, StatusCode::UNAUTHORIZED);
    // And they cannot sign in again.
    assert_eq!(
        sign_in(&app, &Browser::new(), support::USER).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn pages_send_anonymous_visitors_to_sign_in_and_deny_with_a_page() {
    let (app, _idp) = TestApp::spawn_with_sso(|_| {}).await;
    let browser = Browser::new();
    let page = browser.get(&app.url("/admin/users")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.url.contains("/signin?return_to=%2Fadmin%2Fusers"),
        "{}",
        page.url
    );
    assert!(page.body.contains("Sign in with"));

    sign_in(&app, &browser, support::USER).await;
    let page = browser.get(&app.url("/admin/users")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("Not allowed") && page.body.contains("<html"));
    let resp = browser.client.get(app.url("/")).send().await.unwrap();
    let headers = resp.headers();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn sign_in_page_without_sso_says_so() {
    let app = TestApp::spawn().await;
    let page = Browser::new().get(&app.url("/signin")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Single sign-on is not configured"));
}

mod forged_tokens {
    use super::*;
    use crate::support::test_issuer::{Defect, TestIssuer};

    #[tokio::test]
    async fn id_tokens_with_defects_are_refused() {
        let issuer = TestIssuer::start("migrate-hub-test").await;
        let url = issuer.issuer.clone();
        let app = TestApp::spawn_with(move |env, _| {
            env.insert("MH_OIDC_ISSUER", url);
            env.insert("MH_OIDC_CLIENT_ID", "migrate-hub-test".into());
            env.insert("MH_OIDC_CLIENT_SECRET", "secret".into());
        })
        .await;

        // The well-formed token signs the user in, so the refusals below are
        // about the defects and nothing else.
        issuer.next_token(Defect::None);
        let browser = Browser::new();
        let page = browser.get(&app.url("/auth/login")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(me(&app, &browser).await.1["email"], support::USER);

        for (defect, reason) in [
            (Defect::WrongNonce, "invalid_id_token"),
            (Defect::WrongAudience, "invalid_id_token"),
            (Defect::Expired, "invalid_id_token"),
            (Defect::BadSignature, "invalid_id_token"),
            (Defect::UnverifiedEmail, "email_unverified"),
        ] {
            issuer.next_token(defect);
            let browser = Browser::new();
            let page = browser.get(&app.url("/auth/login")).await;
            assert!(
                page.status.is_client_error(),
                "{defect:?} was accepted: {}",
                page.status
            );
            assert_eq!(
                me(&app, &browser).await.0,
                StatusCode::UNAUTHORIZED,
                "{defect:?}"
            );
            let failed = app.audit_rows("auth.failed").await;
            assert_eq!(failed.last().unwrap().1["reason"], reason, "{defect:?}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_issuer_does_not_stop_the_server() {
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let app = TestApp::spawn_with(move |env, _| {
        env.insert("MH_OIDC_ISSUER", format!("http://{closed}"));
        env.insert("MH_OIDC_CLIENT_ID", "migrate-hub-dev".into());
    })
    .await;
    let (status, ready) = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "API tokens still work, so the instance is ready"
    );
    assert_eq!(ready["sso"], "issuer_unreachable");
    let page = Browser::new().get(&app.url("/signin")).await;
    assert!(page.body.contains("cannot be reached"), "{}", page.body);
    assert_eq!(app.get("/api/v1/me", &app.user).await.0, StatusCode::OK);
}

/// Row counts of every table a request could change (not the audit log,
/// which records the refusals, nor the sessions table).
async fn table_counts(app: &TestApp) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
           AND tablename NOT IN ('audit_log', 'audit_head', 'sessions', '_sqlx_migrations') ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut counts = Vec::new();
    for t in tables {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
            .fetch_one(&app.pool)
            .await
            .unwrap();
        counts.push((t, n));
    }
    counts
}

#[tokio::test]
async fn every_unsafe_route_refuses_a_session_request_without_its_csrf_token() {
    let (app, _idp) = TestApp::spawn_with_sso(|_| {}).await;
    let browser = Browser::new();
    sign_in(&app, &browser, support::ADMIN).await;
    app.project("shop").await;
    let before = table_counts(&app).await;

    let unsafe_routes: Vec<_> = control_plane::app::route_table()
        .into_iter()
        .filter(|r| r.method != reqwest::Method::GET)
        .collect();
    assert!(unsafe_routes.len() >= 15, "{}", unsafe_routes.len());
    for route in &unsafe_routes {
        let path = route
            .path
            .replace("{slug}", "shop")
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{version}", "1")
            .replace("{name}", "daily");
        for token in [None, Some("f".repeat(64))] {
            let mut req = browser.client.request(route.method.clone(), app.url(&path));
            req = if path.starts_with("/api/") {
                let req = req.json(&serde_json::json!({"name": "x", "slug": "xx", "reason": "r"}));
                match &token {
                    Some(t) => req.header("x-csrf-token", t),
                    None => req,
                }
            } else {
                let mut form = vec![("name", "x".to_owned())];
                if let Some(t) = &token {
                    form.push(("csrf_token", t.clone()));
                }
                req.form(&form)
            };
            let resp = req.send().await.unwrap();
            // The refusal is one the OpenAPI document declares.
            let (status, _) =
                support::openapi::read_checked(route.method.as_str(), &path, resp).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{} {path} with token {token:?}",
                route.method
            );
        }
    }
    assert_eq!(
        table_counts(&app).await,
        before,
        "refused requests changed nothing"
    );
    assert_eq!(
        me(&app, &browser).await.0,
        StatusCode::OK,
        "and the session is still signed in"
    );
}

#[tokio::test]
async fn a_session_works_on_every_replica_and_survives_a_restart() {
    let (app, _idp) = TestApp::spawn_with_sso(|_| {}).await;
    let browser = Browser::new();
    sign_in(&app, &browser, support::MANAGER).await;
    // A second control plane on the same tool database: another replica, or
    // the same one after a restart.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state =
        control_plane::state::AppState::new(app.pool.clone(), (*app.settings).clone()).unwrap();
    tokio::spawn(control_plane::app::serve(
        listener,
        state,
        std::future::pending(),
    ));
    // The browser's cookie store is keyed by host, not port, so it sends the
    // same session cookie to the other replica.
    let resp = browser
        .client
        .get(format!("http://{addr}/api/v1/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["email"], support::MANAGER);
}

/// Starts sign-in at `login` (a path of the app), signs the user in at the
/// provider and returns the app's callback URL the provider sends the
/// browser to, unvisited.
async fn captured_callback(app: &TestApp, browser: &Browser, login: &str) -> String {
    let form = browser.get(&app.url(login)).await;
    assert_eq!(form.status, StatusCode::OK, "login form at {}", form.url);
    let callback_prefix = app.url("/auth/callback");
    let redirect = browser
        .submit_login(&form, support::USER, "demo", Some(&callback_prefix))
        .await;
    assert!(
        redirect.url.starts_with(&callback_prefix),
        "{}",
        redirect.url
    );
    redirect.url
}

/// Starts sign-in with `return_to` (already percent-encoded for the query
/// string), signs in at the provider and answers what the app's callback
/// answers: status and `Location`, unfollowed.
async fn callback_answer(
    app: &TestApp,
    browser: &Browser,
    return_to: &str,
) -> (StatusCode, Option<String>) {
    let callback =
        captured_callback(app, browser, &format!("/auth/login?return_to={return_to}")).await;
    let resp = browser.client.get(&callback).send().await.unwrap();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    (resp.status(), location)
}

#[tokio::test]
async fn return_to_cannot_lead_to_another_site() {
    let (app, _idp) = TestApp::spawn_with_sso(|_| {}).await;
    for return_to in [
        // A tab browsers drop: `/\t/evil.test/` is `//evil.test/` to them.
        "/%09/evil.test/",
        "%2F%5Cevil.test",
        "/%252F/evil.test",
        "/./..//evil.test",
        "https://evil.test/",
    ] {
        let browser = Browser::new();
        let (status, location) = callback_answer(&app, &browser, return_to).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{return_to}");
        assert_eq!(location.as_deref(), Some("/"), "{return_to}");
        assert_eq!(me(&app, &browser).await.0, StatusCode::OK, "signed in");
    }
    // A path on this site is kept, query and fragment included.
    let (status, location) =
        callback_answer(&app, &Browser::new(), "%2Fprojects%3Fx%3D1%23f").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/projects?x=1#f"));
}

/// A newline in `return_to` used to reach the `Location` header and panic
/// the callback into a 500 after the sign-in was recorded.
#[tokio::test]
async fn a_newline_in_return_to_signs_in_and_goes_home() {
    let (app, _idp) = TestApp::spawn_with_sso(|_| {}).await;
    for return_to in ["%2F%0A%2Fevil.test", "%2F%0D%0ASet-Cookie:%20x=1", "%2F%00"] {
        let browser = Browser::new();
        let (status, location) = callback_answer(&app, &browser, return_to).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{return_to}");
        assert_eq!(location.as_deref(), Some("/"), "{return_to}");
        assert_eq!(me(&app, &browser).await.0, StatusCode::OK, "signed in");
    }
}

#[tokio::test]
async fn signed_in_answers_are_not_stored_and_forms_post_only_here_and_to_the_issuer() {
    let (app, idp) = TestApp::spawn_with_sso(|_| {}).await;
    let browser = Browser::new();
    sign_in(&app, &browser, support::USER).await;
    for path in [
        "/",
        "/tokens",
        "/api/v1/me",
        "/api/v1/tokens",
        "/admin/users",
    ] {
        let resp = browser.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            resp.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{path} for a signed-in viewer ({})",
            resp.status()
        );
    }

    // A token created through the API: its one showing is not cached.
    let resp = reqwest::Client::new()
        .post(app.url("/api/v1/tokens"))
        .bearer_auth(&app.user)
        .json(&serde_json::json!({"name": "ci", "expires_in_days": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["cache-control"], "no-store");

    // Anonymous answers may be cached; static assets keep their own policy.
    let anonymous = reqwest::Client::new();
    let resp = anonymous.get(app.url("/healthz")).send().await.unwrap();
    assert!(resp.headers().get("cache-control").is_none());
    let resp = browser
        .client
        .get(app.url("/static/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["cache-control"], "public, max-age=3600");

    let issuer: reqwest::Url = idp.issuer.parse().unwrap();
    let origin = issuer.origin().ascii_serialization();
    for resp in [
        anonymous.get(app.url("/signin")).send().await.unwrap(),
        browser.client.get(app.url("/")).send().await.unwrap(),
    ] {
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        let form_action = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("form-action "))
            .unwrap_or_else(|| panic!("no form-action in {csp}"));
        assert_eq!(form_action, format!("form-action 'self' {origin}"), "{csp}");
    }
}
