//! What the edge refuses and how: NUL and control characters in paths,
//! query strings, JSON bodies and forms; wrongly typed fields; limits out of
//! range; and the answers no handler writes (400, 404, 405, 408, 413, 414,
//! 431 — some refused by the HTTP server before routing), which
//! carry the error envelope (or page) and the security headers like every
//! other answer.

use std::time::Duration;

use crate::support::{self, TestApp, code, no_redirects, with_empty_body};
use control_plane::app::route_table;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn assert_invalid(status: StatusCode, body: &Value, field: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(body), "invalid_field", "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
}

/// Posting `body` to `path` with `token` is refused, naming `field`.
async fn post_is_invalid(app: &TestApp, path: &str, token: &str, body: Value, field: &str) {
    let (status, answer) = app.post(path, token, body).await;
    assert_invalid(status, &answer, field);
}

#[tokio::test]
async fn nul_in_query_values_is_refused_naming_the_parameter() {
    let app = TestApp::spawn().await;
    for (path, field) in [
        ("/api/v1/audit?action=%00", "action"),
        ("/api/v1/audit?actor=%00", "actor"),
        ("/api/v1/audit/export.csv?actor=%00", "actor"),
        ("/api/v1/projects?cursor=a%00", "cursor"),
        ("/api/v1/projects?cursor=a%1b", "cursor"),
    ] {
        // The export is for admins; every role may read the audit log.
        let callers = if path.contains("export") {
            vec![&app.admin]
        } else {
            vec![&app.user, &app.admin]
        };
        for token in callers {
            let (status, body) = app.get(path, token).await;
            assert_invalid(status, &body, field);
        }
    }
}

#[tokio::test]
async fn nul_in_a_path_parameter_is_refused_naming_it() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .patch(
            "/api/v1/environments/a%00",
            &app.admin,
            json!({"position": 9}),
        )
        .await;
    assert_invalid(status, &body, "name");
    let (status, body) = app.get("/api/v1/projects/a%09b", &app.user).await;
    assert_invalid(status, &body, "slug");
}

#[tokio::test]
async fn nul_in_json_strings_is_refused_naming_the_path_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    post_is_invalid(
        &app,
        "/api/v1/users",
        &app.admin,
        json!({"email": "a\u{0}@example.com", "role": "user"}),
        "email",
    )
    .await;
    // Other control characters are not part of an address either.
    post_is_invalid(
        &app,
        "/api/v1/users",
        &app.admin,
        json!({"email": "a\u{1}@example.com", "role": "user"}),
        "email",
    )
    .await;

    let slug = app.project("shop").await;
    let import = format!("/api/v1/projects/{slug}/migrations/import");
    let file = |path: &str, content: &str| json!({"path": path, "content": content});
    post_is_invalid(
        &app,
        &import,
        &app.user,
        json!({"files": [
            file("1_a.up.sql", "CREATE TABLE a (id int);"),
            file("2_b.up.sql", "CREATE TABLE b (id int);"),
            file("3_c.up.sql", "CREATE TABLE c (id int);"),
            file("4_d\u{0}.up.sql", "CREATE TABLE d (id int);"),
        ]}),
        "files[3].path",
    )
    .await;
    post_is_invalid(
        &app,
        &import,
        &app.user,
        json!({"files": [file("1_a.up.sql", "CREATE TABLE a (id int);\u{0}")]}),
        "files[0].content",
    )
    .await;

    // SQL keeps its tabs and line breaks, but never a NUL.
    let migrations = format!("/api/v1/projects/{slug}/migrations");
    post_is_invalid(
        &app,
        &migrations,
        &app.user,
        json!({"version": "1", "name": "a", "up_sql": "SELECT 1;\u{0}"}),
        "up_sql",
    )
    .await;
    post_is_invalid(&app, &migrations, &app.user, json!({"version": "1", "name": "a", "up_sql": "CREATE TABLE a (id int);", "down_sql": "\u{0}"}), "down_sql").await;
    let (status, body) = app
        .post(
            &migrations,
            &app.user,
            json!({"version": "1", "name": "a", "up_sql": "CREATE TABLE a (\r\n\tid int\n);"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let written: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM migrations)")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        written,
        (4, 1),
        "no user, and only the valid migration, is written"
    );
}

#[tokio::test]
async fn control_characters_in_names_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let bell = "Billing\u{7}";
    post_is_invalid(
        &app,
        "/api/v1/projects",
        &app.admin,
        json!({"slug": "shop", "name": bell}),
        "name",
    )
    .await;
    post_is_invalid(
        &app,
        "/api/v1/projects",
        &app.admin,
        json!({"slug": "shop", "name": "Shop", "description": "red \u{1b}[31m"}),
        "description",
    )
    .await;
    // Descriptions may break lines.
    let (status, body) = app
        .post(
            "/api/v1/projects",
            &app.admin,
            json!({"slug": "shop", "name": "Shop", "description": "one\r\n\ttwo"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    post_is_invalid(
        &app,
        "/api/v1/projects/shop/migrations",
        &app.user,
        json!({"version": "1", "name": bell, "up_sql": "SELECT 1;"}),
        "name",
    )
    .await;
    post_is_invalid(
        &app,
        "/api/v1/projects/shop/db-sets",
        &app.manager,
        json!({"name": bell, "environment": "dev"}),
        "name",
    )
    .await;
    post_is_invalid(
        &app,
        "/api/v1/tokens",
        &app.user,
        json!({"name": bell}),
        "name",
    )
    .await;
    post_is_invalid(
        &app,
        "/api/v1/users",
        &app.admin,
        json!({"email": "new@example.com", "name": bell, "role": "user"}),
        "name",
    )
    .await;
    post_is_invalid(
        &app,
        "/api/v1/environments",
        &app.admin,
        json!({"name": "qa\u{7}", "position": 9}),
        "name",
    )
    .await;
}

#[tokio::test]
async fn wrongly_typed_field_is_invalid_field_naming_it() {
    let app = TestApp::spawn().await;
    post_is_invalid(
        &app,
        "/api/v1/users",
        &app.admin,
        json!({"email": "x@example.com", "role": ["admin"]}),
        "role",
    )
    .await;
    post_is_invalid(
        &app,
        "/api/v1/projects",
        &app.admin,
        json!({"slug": "shop", "name": 7}),
        "name",
    )
    .await;
    let (status, body) = app.get("/api/v1/projects?limit=many", &app.user).await;
    assert_invalid(status, &body, "limit");
}

#[tokio::test]
async fn limit_out_of_range_is_refused_not_clamped() {
    let app = TestApp::spawn().await;
    for path in ["/api/v1/projects", "/api/v1/audit"] {
        for limit in ["-1", "0", "501"] {
            let (status, body) = app.get(&format!("{path}?limit={limit}"), &app.admin).await;
            assert_invalid(status, &body, "limit");
        }
        for limit in ["1", "500"] {
            let (status, body) = app.get(&format!("{path}?limit={limit}"), &app.admin).await;
            assert_eq!(status, StatusCode::OK, "{path}?limit={limit}: {body}");
        }
    }
}

/// Status, headers and body (JSON or text) of a request sent as is.
async fn raw(req: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.unwrap())
}

fn assert_security_headers(headers: &reqwest::header::HeaderMap, what: &str) {
    for name in [
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
    ] {
        assert!(
            headers.contains_key(name),
            "{what}: no {name} in {headers:?}"
        );
    }
}

fn assert_envelope(
    (status, headers, text): &(StatusCode, reqwest::header::HeaderMap, String),
    want: StatusCode,
    want_code: &str,
) {
    assert_eq!(*status, want, "{text}");
    assert_security_headers(headers, want_code);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{headers:?}"
    );
    let body: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    assert_eq!(code(&body), want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

fn assert_error_page(
    (status, headers, text): &(StatusCode, reqwest::header::HeaderMap, String),
    want: StatusCode,
) {
    assert_eq!(*status, want, "{text}");
    assert_security_headers(headers, "page");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{headers:?}"
    );
    assert!(text.contains("<html"), "an error page: {text}");
}

#[tokio::test]
async fn answers_no_handler_writes_carry_the_envelope_and_security_headers() {
    let app = TestApp::spawn().await;
    let c = no_redirects();

    let unknown = raw(c
        .get(app.url("/api/v1/no-such-route"))
        .bearer_auth(&app.user))
    .await;
    assert_envelope(&unknown, StatusCode::NOT_FOUND, "not_found");
    assert_error_page(
        &raw(c.get(app.url("/no-such-page"))).await,
        StatusCode::NOT_FOUND,
    );

    let wrong_method = raw(c.put(app.url("/api/v1/me")).bearer_auth(&app.user)).await;
    assert_envelope(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert!(wrong_method.1.contains_key("allow"), "{:?}", wrong_method.1);
    assert_error_page(
        &raw(c.put(app.url("/tokens")).bearer_auth(&app.user)).await,
        StatusCode::METHOD_NOT_ALLOWED,
    );

    let long = "a".repeat(9 * 1024);
    let too_long = raw(c
        .get(app.url(&format!("/api/v1/projects?cursor={long}")))
        .bearer_auth(&app.user))
    .await;
    assert_envelope(&too_long, StatusCode::URI_TOO_LONG, "uri_too_long");
    assert_error_page(
        &raw(c.get(app.url(&format!("/projects?cursor={long}")))).await,
        StatusCode::URI_TOO_LONG,
    );

    // Over the body limit (three times the SQL limit plus room for JSON).
    let huge = "x".repeat(app.settings.max_sql_bytes * 3 + 256 * 1024);
    let json_too_large = raw(c
        .post(app.url("/api/v1/projects"))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body(format!("{{\"slug\":\"a\",\"name\":\"{huge}\"}}")))
    .await;
    assert_envelope(
        &json_too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let form_too_large = raw(c
        .post(app.url("/tokens"))
        .bearer_auth(&app.user)
        .form(&[("name", huge.as_str())]))
    .await;
    assert_error_page(&form_too_large, StatusCode::PAYLOAD_TOO_LARGE);
}

/// Whether `answer` holds a whole response with a `content-length`.
fn complete_answer(answer: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = head.parse(answer) else {
        return false;
    };
    head.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .is_some_and(|body| answer.len() >= len + body)
}

/// Sends `request` as it is and reads the answer: requests the HTTP server
/// refuses before routing cannot be sent by an HTTP client. Reading stops
/// at the end of the answer's body (its `content-length`), or where the
/// server closes the connection for an answer without a length.
async fn raw_tcp(
    addr: std::net::SocketAddr,
    request: Vec<u8>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The server may answer before it has read everything; keep writing
    // beside the read and ignore a reset of the rest.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        write
    });
    let mut answer = Vec::new();
    let read_all = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 8192];
        while !complete_answer(&answer)
            && let Ok(n) = read.read(&mut buf).await
            && n > 0
        {
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        read_all.is_ok(),
        "no complete answer within 30 s; {} bytes came: {:?}",
        answer.len(),
        String::from_utf8_lossy(&answer[..answer.len().min(600)])
    );
    writer.abort();
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let len = match head.parse(&answer) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("{other:?}: {}", String::from_utf8_lossy(&answer)),
    };
    let mut map = reqwest::header::HeaderMap::new();
    for h in head.headers.iter() {
        map.append(
            reqwest::header::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
            reqwest::header::HeaderValue::from_bytes(h.value).unwrap(),
        );
    }
    let status = StatusCode::from_u16(head.code.unwrap()).unwrap();
    (
        status,
        map,
        String::from_utf8_lossy(&answer[len..]).into_owned(),
    )
}

#[tokio::test]
async fn requests_refused_before_routing_carry_the_envelope_and_security_headers() {
    let app = TestApp::spawn().await;
    let host = app.addr;
    let long = "a".repeat(70 * 1024);

    // Over hyper's 64 KiB URI limit: refused before any middleware runs.
    let api = raw_tcp(
        host,
        format!("GET /api/v1/projects?cursor={long} HTTP/1.1\r\nHost: {host}\r\n\r\n").into(),
    )
    .await;
    assert_envelope(&api, StatusCode::URI_TOO_LONG, "uri_too_long");
    assert_eq!(api.1["content-length"], api.2.len().to_string().as_str());
    assert!(api.1.contains_key("date"), "{:?}", api.1);
    // The server reads nothing more on that connection, and says so.
    assert_eq!(api.1["connection"], "close");
    let page = raw_tcp(
        host,
        format!("GET /projects?cursor={long} HTTP/1.1\r\nHost: {host}\r\n\r\n").into(),
    )
    .await;
    assert_error_page(&page, StatusCode::URI_TOO_LONG);

    // A head larger than the server's read buffer.
    let big_header = "b".repeat(8 * 1024);
    let mut head = format!("GET /api/v1/me HTTP/1.1\r\nHost: {host}\r\n");
    for i in 0..60 {
        head.push_str(&format!("x-filler-{i}: {big_header}\r\n"));
    }
    head.push_str("\r\n");
    assert_envelope(
        &raw_tcp(host, head.into()).await,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request_header_fields_too_large",
    );

    // A header line that is not a header.
    assert_envelope(
        &raw_tcp(
            host,
            format!("GET /api/v1/me HTTP/1.1\r\nHost: {host}\r\nno colon here\r\n\r\n").into(),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );

    // The same connection type still serves ordinary requests.
    let ok = raw_tcp(
        host,
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into(),
    )
    .await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.2);
}

#[tokio::test]
async fn a_request_that_times_out_gets_408_with_the_envelope_and_headers() {
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_REQUEST_TIMEOUT_SECS", "1".into());
    })
    .await;
    // A body announced but never sent: the handler waits for it until the
    // timeout answers.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/projects HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"slug\"",
        app.addr, app.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if n == 0 || text.contains("}}") {
                break;
            }
        }
    })
    .await
    .expect("the timeout answers within 30 s");
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(text.starts_with("http/1.1 408"), "{text}");
    for header in [
        "content-security-policy:",
        "x-frame-options:",
        "x-content-type-options:",
        "referrer-policy:",
        "content-type: application/json",
    ] {
        assert!(text.contains(header), "no {header} in {text}");
    }
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");
}

#[tokio::test]
async fn web_forms_refuse_nul_with_an_error_page() {
    let app = TestApp::spawn().await;
    let c = reqwest::Client::new();
    let page = raw(c
        .post(app.url("/tokens"))
        .bearer_auth(&app.user)
        .form(&[("name", "a\u{0}"), ("expires_in_days", "30")]))
    .await;
    assert_error_page(&page, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.2.contains("name"), "{}", page.2);
}

/// Placeholders that make a route's path concrete; `bad` goes in one place.
fn concrete(path: &str, bad: &str, at: usize) -> String {
    let mut n = 0;
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                n += 1;
                if n - 1 == at {
                    return bad.to_owned();
                }
                return match segment {
                    "{id}" => "00000000-0000-0000-0000-000000000000".to_owned(),
                    "{version}" => "1".to_owned(),
                    _ => "x".to_owned(),
                };
            }
            segment.to_owned()
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_refuses_nul_in_path_and_query_without_a_5xx() {
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_API_RATE_LIMIT", "0".into());
    })
    .await;
    let c = no_redirects();
    let mut checked = 0;
    for route in route_table() {
        let params = route.path.matches('{').count();
        let mut paths: Vec<String> = (0..params)
            .map(|at| concrete(&route.path, "a%00", at))
            .collect();
        paths.push(format!(
            "{}?limit=0&cursor=a%00",
            concrete(&route.path, "", usize::MAX)
        ));
        for path in paths {
            let req = c
                .request(route.method.clone(), app.url(&path))
                .bearer_auth(&app.admin);
            let resp = with_empty_body(req, &route.method, &path)
                .send()
                .await
                .unwrap();
            let (status, body) =
                support::openapi::read_checked(route.method.as_str(), &path, resp).await;
            let what = format!("{} {path}", route.method);
            assert!(!status.is_server_error(), "{what}: {status} {body}");
            if status.is_client_error() && path.starts_with("/api/") {
                assert!(body["error"]["code"].is_string(), "{what}: {status} {body}");
            }
            if path.contains("a%00") && !path.contains('?') {
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
            }
            checked += 1;
        }
    }
    assert!(checked > 60, "{checked} requests");
}
