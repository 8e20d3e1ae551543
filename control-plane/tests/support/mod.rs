//! Spawns the real control plane on port 0 against a fresh tool database,
//! with one user and API token per role.
#![allow(dead_code)]

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
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(customize: impl FnOnce(&mut HashMap<&'static str, String>)) -> TestApp {
        let db = TestDatabase::create("mh_test_cp").await;
        let mut env: HashMap<&'static str, String> = HashMap::from([
            ("MH_DATABASE_URL", db.url.clone()),
            ("MH_ENCRYPTION_KEYS", Keyring::generate_entry("k1")),
            ("MH_LISTEN", "127.0.0.1:0".to_string()),
        ]);
        customize(&mut env);
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

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = settings.common.keys.clone();
        let state = app::AppState::new(pool.clone(), settings).expect("app state builds");
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
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
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

    /// Creates a migration as user.
    pub async fn migration(&self, slug: &str, version: &str, up: &str, down: &str) -> Value {
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

    /// Audit rows with `action`, oldest first.
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

/// The error code of an API error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}
