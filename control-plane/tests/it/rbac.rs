//! Every route of the router × every role, plus anonymous callers, revoked
//! tokens and disabled users. The route table comes from the router itself,
//! so a new route is covered the moment it exists.

use crate::support::{self, TestApp, no_redirects, with_empty_body};
use common::domain::{Role, role::allows};
use control_plane::{app::route_table, routes::Access};
use reqwest::{Method, StatusCode};

/// Routes anyone may call. Adding to this list is a security decision.
const PUBLIC: &[&str] = &[
    "/healthz",
    "/readyz",
    "/signin",
    "/auth/login",
    "/auth/callback",
    "/static/app.css",
    "/static/app.js",
    "/metrics",
    "/api/v1/openapi.json",
];

fn concrete(path: &str) -> String {
    path.replace("{slug}", "no-such-project")
        .replace("{id}", "00000000-0000-0000-0000-000000000000")
        .replace("{token_id}", "00000000-0000-0000-0000-000000000001")
        .replace("{version}", "1")
        .replace("{name}", "daily")
}

async fn call(
    app: &TestApp,
    method: &Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<String>) {
    let mut req = with_empty_body(
        no_redirects().request(method.clone(), app.url(path)),
        method,
        path,
    );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    // Refusals and answers alike are what the OpenAPI document declares.
    let (status, _) = support::openapi::read_checked(method.as_str(), path, resp).await;
    (status, location)
}

fn unauthenticated((status, location): &(StatusCode, Option<String>)) -> bool {
    *status == StatusCode::UNAUTHORIZED
        || (*status == StatusCode::SEE_OTHER
            && location
                .as_deref()
                .is_some_and(|l| l.starts_with("/signin?return_to=")))
}

#[tokio::test]
async fn every_route_enforces_its_rule_for_every_caller() {
    // Hundreds of refused tokens from one address: the brute-force guard
    // (tested in rate_limits.rs) would answer 429 long before the end.
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_AUTH_FAILURE_LIMIT", "0".into());
    })
    .await;
    let table = route_table();
    assert!(
        table.len() > 30,
        "the table lists the routes ({})",
        table.len()
    );

    // Callers that must be turned away: nobody, a revoked token, a disabled user.
    let (_, revoked) = app
        .post(
            "/api/v1/tokens",
            &app.user,
            serde_json::json!({"name": "r"}),
        )
        .await;
    let revoked_token = revoked["token"].as_str().unwrap().to_owned();
    let id = revoked["id"].as_str().unwrap();
    app.delete(&format!("/api/v1/tokens/{id}"), &app.user).await;
    sqlx::query("UPDATE users SET disabled = true WHERE email = $1")
        .bind(support::MANAGER2)
        .execute(&app.pool)
        .await
        .unwrap();

    let mut forbidden = 0;
    for route in &table {
        let path = concrete(&route.path);
        match route.access {
            Access::Public => {
                assert!(
                    PUBLIC.contains(&route.path.as_str()),
                    "{} {} is public but not on the public list",
                    route.method,
                    route.path
                );
                continue;
            }
            Access::Needs(capability) => {
                for token in [
                    None,
                    Some(revoked_token.as_str()),
                    Some(app.manager2.as_str()),
                ] {
                    let got = call(&app, &route.method, &path, token).await;
                    assert!(
                        unauthenticated(&got),
                        "{} {} let in an unauthenticated caller: {got:?}",
                        route.method,
                        route.path
                    );
                }
                for (role, token) in [
                    (Role::User, &app.user),
                    (Role::Manager, &app.manager),
                    (Role::Admin, &app.admin),
                ] {
                    let got = call(&app, &route.method, &path, Some(token)).await;
                    if allows(role, capability) {
                        assert!(
                            got.0 != StatusCode::FORBIDDEN && !unauthenticated(&got),
                            "{} {} refused a {role} ({capability:?}): {got:?}",
                            route.method,
                            route.path
                        );
                    } else {
                        assert_eq!(
                            got.0,
                            StatusCode::FORBIDDEN,
                            "{} {} let a {role} in ({capability:?})",
                            route.method,
                            route.path
                        );
                        forbidden += 1;
                        // Audited, with the path as it was requested.
                        let (count, last): (i64, Option<String>) = sqlx::query_as(
                            "SELECT count(*), (array_agg(object_id ORDER BY seq DESC))[1]
                             FROM audit_log WHERE action = 'access.denied'",
                        )
                        .fetch_one(&app.pool)
                        .await
                        .unwrap();
                        assert_eq!(count, forbidden, "{} {} as {role}", route.method, path);
                        assert_eq!(
                            last.as_deref(),
                            Some(format!("{} {path}", route.method).as_str()),
                            "{} {} as {role}",
                            route.method,
                            route.path
                        );
                    }
                }
            }
        }
    }
    assert!(forbidden > 10);
    // Every refusal left an audit row.
    let denied = app
        .count("SELECT count(*) FROM audit_log WHERE action = 'access.denied'")
        .await;
    assert_eq!(denied, forbidden);
}
