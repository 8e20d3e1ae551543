//! Spawns the real control plane on port 0 against a fresh tool database,
//! with one user and API token per role.

pub mod chrome;
mod logs;
pub mod openapi;
pub mod otlp;
mod pages;
mod pg;
mod replica;
mod runs;
mod targets;
pub mod test_issuer;

pub use logs::CapturedLogs;
pub use pages::{Browser, Page, Posted, TokenBrowser, XSS, assert_escaped, csrf_token};
pub use pg::PgTarget;
pub use replica::Replica;
pub use runs::Fleet;
pub use targets::{mysql_target_json, pg_target_json};

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use common::{
    config::ControlPlaneSettings, crypto::Keyring, db, domain::Role, testing::TestDatabase,
};
use control_plane::{app, cli};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;

pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub keys: Keyring,
    pub client: reqwest::Client,
    pub admin: String,
    pub manager: String,
    pub manager2: String,
    pub user: String,
    pub settings: Arc<ControlPlaneSettings>,
    shutdown: Option<oneshot::Sender<()>>,
    // Dropped last: the database outlives the server's connections.
    pub db: TestDatabase,
}

pub const ADMIN: &str = "admin@example.com";
pub const MANAGER: &str = "manager@example.com";
pub const MANAGER2: &str = "manager2@example.com";
pub const USER: &str = "user@example.com";

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_, _| {}).await
    }

    /// `customize` may change the settings; it knows the address the app
    /// will listen on (for redirect URIs).
    pub async fn spawn_with(
        customize: impl FnOnce(&mut HashMap<&'static str, String>, SocketAddr),
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::spawn_on(listener, customize).await
    }

    /// The app with single sign-on through a fresh development identity provider.
    pub async fn spawn_with_sso(
        customize: impl FnOnce(&mut HashMap<&'static str, String>),
    ) -> (TestApp, DevIdp) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let idp = DevIdp::start(&format!("http://{addr}/auth/callback")).await;
        let issuer = idp.issuer.clone();
        let app = Self::spawn_on(listener, move |env, _| {
            env.insert("MH_OIDC_ISSUER", issuer);
            env.insert("MH_OIDC_CLIENT_ID", "migrate-hub-dev".into());
            env.insert("MH_OIDC_CLIENT_SECRET", "dev-secret".into());
            customize(env);
        })
        .await;
        (app, idp)
    }

    async fn spawn_on(
        listener: tokio::net::TcpListener,
        customize: impl FnOnce(&mut HashMap<&'static str, String>, SocketAddr),
    ) -> TestApp {
        let addr = listener.local_addr().unwrap();
        let db = TestDatabase::create("mh_test_cp").await;
        let mut env: HashMap<&'static str, String> = HashMap::from([
            ("MH_DATABASE_URL", db.url.clone()),
            ("MH_ENCRYPTION_KEYS", Keyring::generate_entry("k1")),
            ("MH_LISTEN", "127.0.0.1:0".to_string()),
        ]);
        env.insert("MH_PUBLIC_URL", format!("http://{addr}"));
        customize(&mut env, addr);
        let settings = ControlPlaneSettings::load(&env).expect("test settings are valid");
        let pool = db::connect(&db.url, 10)
            .await
            .expect("connect to test tool database");
        db::migrate(&pool)
            .await
            .expect("migrate test tool database");

        let mut tokens = HashMap::new();
        for (email, role) in [
            (ADMIN, Role::Admin),
            (MANAGER, Role::Manager),
            (MANAGER2, Role::Manager),
            (USER, Role::User),
        ] {
            cli::user_add(&pool, email, "", role).await.unwrap();
            let token = cli::token_create(&pool, email, "test", None, None)
                .await
                .unwrap();
            tokens.insert(email, token);
        }

        let keys = settings.common.keys.clone();
        let state =
            control_plane::state::AppState::new(pool.clone(), settings).expect("app state builds");
        let settings = state.settings.clone();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(app::serve(listener, state, async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            pool,
            keys,
            client: reqwest::Client::new(),
            admin: tokens[ADMIN].clone(),
            manager: tokens[MANAGER].clone(),
            manager2: tokens[MANAGER2].clone(),
            user: tokens[USER].clone(),
            settings,
            shutdown: Some(tx),
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a JSON request with a bearer token; returns status and body.
    /// Every answer of an API route is checked against the OpenAPI
    /// document (declared status, body matching its schema).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method.clone(), self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request reaches the server");
        openapi::read_checked(method.as_str(), path, resp).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a project as admin and returns its slug.
    pub async fn project(&self, slug: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/projects",
                &self.admin,
                serde_json::json!({"slug": slug, "name": format!("Project {slug}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        slug.to_string()
    }

    /// Creates a DB set as manager and returns its id.
    pub async fn db_set(&self, slug: &str, name: &str, environment: &str) -> String {
        let (status, body) = self
            .post(
                &format!("/api/v1/projects/{slug}/db-sets"),
                &self.manager,
                serde_json::json!({"name": name, "environment": environment}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Creates a migration as user; an empty `down` means no down script
    /// (the migration cannot be rolled back).
    pub async fn migration(&self, slug: &str, version: &str, up: &str, down: &str) -> Value {
        let down = (!down.is_empty()).then_some(down);
        let (status, body) = self
            .post(
                &format!("/api/v1/projects/{slug}/migrations"),
                &self.user,
                serde_json::json!({"version": version, "name": format!("m{version}"), "up_sql": up, "down_sql": down}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// A page (or any answer) of `path` as text, with `token`.
    pub async fn page(&self, path: &str, token: &str) -> (StatusCode, String) {
        let resp = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// The number a `SELECT count(*) …` on the tool database answers.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The queue jobs (any state) of the run `run`.
    pub async fn queue_jobs_of(&self, run: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs
             WHERE convert_from(job, 'UTF8')::jsonb ->> 'run_id' = $1",
        )
        .bind(run)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// The id of the user with `email`.
    pub async fn user_id(&self, email: &str) -> String {
        sqlx::query_scalar("SELECT id::text FROM users WHERE email = $1")
            .bind(email)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Audit rows with `action`, oldest first.
    /// The environment `name` as the API shows it.
    pub async fn environment(&self, name: &str) -> Value {
        let (_, envs) = self.get("/api/v1/environments", &self.user).await;
        envs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no environment {name}: {envs}"))
            .clone()
    }

    pub async fn audit_rows(&self, action: &str) -> Vec<(String, Value)> {
        sqlx::query_as("SELECT actor, details FROM audit_log WHERE action = $1 ORDER BY seq")
            .bind(action)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A client that shows redirects instead of following them.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `req` (`method path`) with an empty body of the kind the route reads: a
/// JSON object for the API, a form for pages; none for a GET.
pub fn with_empty_body(
    req: reqwest::RequestBuilder,
    method: &Method,
    path: &str,
) -> reqwest::RequestBuilder {
    if *method == Method::GET {
        req
    } else if path.starts_with("/api/") {
        req.json(&serde_json::json!({}))
    } else {
        req.form(&[("x", "")])
    }
}

/// The `version` of each item of `items` (migrations, applied versions), in
/// order.
pub fn versions(items: &Value) -> Vec<&str> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {items}"))
        .iter()
        .map(|item| item["version"].as_str().unwrap())
        .collect()
}

/// The error code of an API error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// The development identity provider (`deploy/dev-idp`), started for one
/// test on a free port and stopped when dropped.
pub struct DevIdp {
    pub issuer: String,
    child: std::process::Child,
}

impl DevIdp {
    pub async fn start(redirect_uri: &str) -> DevIdp {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/dev-idp");
        let ready =
            std::env::temp_dir().join(format!("mh-idp-{}.ready", uuid::Uuid::new_v4().simple()));
        let child = std::process::Command::new("node")
            .arg("server.js")
            .current_dir(dir)
            .env("MH_IDP_PORT", "0")
            .env("MH_IDP_READY_FILE", &ready)
            .env("MH_IDP_REDIRECT_URIS", redirect_uri)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("node runs deploy/dev-idp/server.js (run scripts/test.sh, which installs it)");
        let issuer = common::testing::wait_for(
            std::time::Duration::from_secs(30),
            "the dev identity provider",
            || {
                let ready = ready.clone();
                async move {
                    let line = std::fs::read_to_string(&ready).ok()?;
                    line.trim()
                        .strip_prefix("MH_IDP_ISSUER=")
                        .map(str::to_owned)
                }
            },
        )
        .await;
        let _ = std::fs::remove_file(&ready);
        DevIdp { issuer, child }
    }
}

impl Drop for DevIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
