//! The stack a benchmark runs against: a fresh tool database, the control
//! plane (in this process on a free port, or the real binary as a child
//! process) and workers running the production runner, driven through the
//! public JSON API with API tokens of three users (requester, approving
//! manager, admin).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use common::{config::ControlPlaneSettings, crypto::Keyring, domain::Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::scratch::Scratch;

pub const REQUESTER: &str = "bench-user@example.com";
pub const APPROVER: &str = "bench-manager@example.com";
pub const ADMIN: &str = "bench-admin@example.com";

/// How the control plane runs.
#[derive(Debug, Clone)]
pub enum ControlPlane {
    /// `control_plane::app` served by this process.
    InProcess,
    /// The `control-plane serve` binary at this path, as a child process.
    Process(PathBuf),
}

pub struct Stack {
    pub pool: PgPool,
    pub keys: Keyring,
    pub api: Api,
    /// The control plane's process id when it runs as its own process.
    pub control_plane_pid: Option<u32>,
    server: Server,
    workers: Vec<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
    pub tool_url: String,
    /// `MH_ENCRYPTION_KEYS` of the stack, for worker processes.
    pub key_entry: String,
}

enum Server {
    InProcess(Option<oneshot::Sender<()>>, JoinHandle<std::io::Result<()>>),
    Process(tokio::process::Child),
}

impl Stack {
    /// A fresh tool database (migrated), users and tokens, the control plane,
    /// and `workers` in-process workers of pool `default`, each running
    /// `concurrency` jobs at once.
    pub async fn start(
        scratch: &Scratch,
        control_plane: &ControlPlane,
        workers: usize,
        concurrency: usize,
    ) -> anyhow::Result<Stack> {
        let tool = scratch.pg_database("tool").await?;
        if scratch.tool_async_commit {
            let mut admin = scratch.servers.pg_admin().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE \"{tool}\" SET synchronous_commit = off"
            )))
            .execute(&mut admin)
            .await?;
        }
        let tool_url = scratch.servers.pg_database_url(&tool);
        let pool = common::db::connect(&tool_url, 10)
            .await
            .context("connecting to the tool database")?;
        common::db::migrate(&pool)
            .await
            .context("migrating the tool database")?;
        let mut tokens = HashMap::new();
        for (email, role) in [
            (REQUESTER, Role::User),
            (APPROVER, Role::Manager),
            (ADMIN, Role::Admin),
        ] {
            control_plane::cli::user_add(&pool, email, "Bench", role).await?;
            let token =
                control_plane::cli::token_create(&pool, email, "bench", None, Some(1)).await?;
            tokens.insert(email, token);
        }
        let key_entry = Keyring::generate_entry("bench");
        let (addr, server, pid) = match control_plane {
            ControlPlane::InProcess => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let env: HashMap<&'static str, String> = HashMap::from([
                    ("MH_DATABASE_URL", tool_url.clone()),
                    ("MH_ENCRYPTION_KEYS", key_entry.clone()),
                    ("MH_LISTEN", addr.to_string()),
                    ("MH_PUBLIC_URL", format!("http://{addr}")),
                ]);
                let settings = ControlPlaneSettings::load(&env)?;
                let state = control_plane::state::AppState::new(pool.clone(), settings)?;
                let (tx, rx) = oneshot::channel::<()>();
                let handle = tokio::spawn(control_plane::app::serve(listener, state, async move {
                    let _ = rx.await;
                }));
                (addr, Server::InProcess(Some(tx), handle), None)
            }
            ControlPlane::Process(binary) => {
                let addr = free_port()?;
                let child = tokio::process::Command::new(binary)
                    .args(["serve", "--no-migrate"])
                    .env("MH_DATABASE_URL", &tool_url)
                    .env("MH_ENCRYPTION_KEYS", &key_entry)
                    .env("MH_LISTEN", addr.to_string())
                    .env("MH_PUBLIC_URL", format!("http://{addr}"))
                    .env("MH_LOG_FORMAT", "json")
                    .env("RUST_LOG", "warn")
                    // The web benchmark's clients share one token and never
                    // pause; the per-token budget would answer most of them
                    // 429 and measure the limiter instead of the pages.
                    .env("MH_API_RATE_LIMIT", "0")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("starting {}", binary.display()))?;
                let pid = child.id();
                (addr, Server::Process(child), pid)
            }
        };
        let keys = Keyring::parse(&key_entry)?;
        let api = Api::new(addr, &tokens);
        api.wait_ready().await?;
        let mut stack = Stack {
            pool,
            keys,
            api,
            control_plane_pid: pid,
            server,
            workers: Vec::new(),
            tool_url,
            key_entry,
        };
        for _ in 0..workers {
            stack.add_worker("default", concurrency).await?;
        }
        Ok(stack)
    }

    /// Starts one more in-process worker of `pool`: the production runner
    /// with its own tool-database connections, as the binary sets it up.
    pub async fn add_worker(&mut self, pool: &str, concurrency: usize) -> anyhow::Result<()> {
        let db = common::db::connect(&self.tool_url, concurrency as u32 + 4).await?;
        // Drift scans on, every hour, as the binary runs by default.
        let worker = worker::Worker::new(db, self.keys.clone(), pool, concurrency, 5_000)
            .drift_scan(Some(Duration::from_secs(3600)));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run(async move {
            let _ = rx.await;
        }));
        self.workers.push((tx, handle));
        Ok(())
    }

    /// Stops the workers and the control plane.
    pub async fn stop(self) -> anyhow::Result<()> {
        for (tx, handle) in self.workers {
            let _ = tx.send(());
            match tokio::time::timeout(Duration::from_secs(30), handle).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("bench: a worker stopped with an error: {e:#}"),
                Ok(Err(e)) => eprintln!("bench: a worker panicked: {e}"),
                Err(_) => eprintln!("bench: a worker did not stop within 30 s"),
            }
        }
        match self.server {
            Server::InProcess(tx, handle) => {
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
            }
            Server::Process(mut child) => {
                if let Some(pid) = child.id() {
                    // SIGTERM: the control plane shuts down gracefully.
                    let _ = std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status();
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
        }
        self.pool.close().await;
        Ok(())
    }
}

/// A free loopback port for a child process to listen on.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The public JSON API, called with the three users' tokens.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub user: String,
    pub manager: String,
    pub admin: String,
}

impl Api {
    fn new(addr: SocketAddr, tokens: &HashMap<&str, String>) -> Api {
        Api {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            user: tokens[REQUESTER].clone(),
            manager: tokens[APPROVER].clone(),
            admin: tokens[ADMIN].clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the control plane did not become ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a request; a status other than `expect` is an error naming the call.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        expect: &[StatusCode],
    ) -> anyhow::Result<Value> {
        let mut req = self
            .client
            .request(method.clone(), self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !expect.contains(&status) {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, &self.user, None, &[StatusCode::OK])
            .await
    }

    pub async fn project(&self, slug: &str) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            "/api/v1/projects",
            &self.admin,
            Some(json!({"slug": slug, "name": format!("Benchmark {slug}")})),
            &[StatusCode::CREATED],
        )
        .await?;
        Ok(())
    }

    /// Adds migration `version` (`up`, `down`) to project `slug`, as the
    /// requester.
    pub async fn migration(
        &self,
        slug: &str,
        version: &str,
        name: &str,
        up: &str,
        down: &str,
    ) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            &format!("/api/v1/projects/{slug}/migrations"),
            &self.user,
            Some(json!({"version": version, "name": name, "up_sql": up, "down_sql": down})),
            &[StatusCode::CREATED],
        )
        .await?;
        Ok(())
    }

    /// Imports every `.sql` file of `dir` into project `slug`.
    pub async fn import(&self, slug: &str, dir: &Path) -> anyhow::Result<()> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".sql") {
                files.push(json!({"path": name, "content": std::fs::read_to_string(&path)?}));
            }
        }
        let report = self
            .call(
                Method::POST,
                &format!("/api/v1/projects/{slug}/migrations/import"),
                &self.user,
                Some(json!({ "files": files })),
                &[StatusCode::CREATED],
            )
            .await?;
        if !report["conflicts"].as_array().is_none_or(|c| c.is_empty()) {
            bail!("import into {slug} had conflicts: {report}");
        }
        Ok(())
    }

    /// Every migration of a project, in version order.
    pub async fn migrations(&self, slug: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/projects/{slug}/migrations?limit=500");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path).await?;
            out.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// A DB set of environment `daily` (one approval) in project `slug`.
    pub async fn db_set(&self, slug: &str, name: &str) -> anyhow::Result<String> {
        let set = self
            .call(
                Method::POST,
                &format!("/api/v1/projects/{slug}/db-sets"),
                &self.manager,
                Some(json!({"name": name, "environment": "daily"})),
                &[StatusCode::CREATED],
            )
            .await?;
        Ok(set["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Adds targets to a DB set in one bulk request.
    pub async fn targets(
        &self,
        slug: &str,
        set: &str,
        targets: Vec<Value>,
    ) -> anyhow::Result<Vec<String>> {
        let body = self
            .call(
                Method::POST,
                &format!("/api/v1/projects/{slug}/db-sets/{set}/targets/bulk"),
                &self.manager,
                Some(json!({ "targets": targets })),
                &[StatusCode::CREATED],
            )
            .await?;
        Ok(body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Requests a run as the user and has the manager approve it (separation
    /// of duties: the requester never approves). Returns the run's id.
    pub async fn approved_run(&self, slug: &str, body: Value) -> anyhow::Result<String> {
        let run = self
            .call(
                Method::POST,
                &format!("/api/v1/projects/{slug}/runs"),
                &self.user,
                Some(body),
                &[StatusCode::CREATED],
            )
            .await?;
        let id = run["id"].as_str().unwrap_or_default().to_owned();
        let approved = self
            .call(
                Method::POST,
                &format!("/api/v1/runs/{id}/approve"),
                &self.manager,
                Some(json!({"comment": "benchmark"})),
                &[StatusCode::OK],
            )
            .await?;
        if approved["state"] != "approved" {
            bail!("run {id} is {} after one approval", approved["state"]);
        }
        Ok(id)
    }

    /// Execute, as the requester.
    pub async fn execute(&self, run: &str, body: Value) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            &format!("/api/v1/runs/{run}/execute"),
            &self.user,
            Some(body),
            &[StatusCode::ACCEPTED],
        )
        .await?;
        Ok(())
    }
}

impl Api {
    /// Cancel, as the requester: what has not started will not.
    pub async fn cancel(&self, run: &str) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            &format!("/api/v1/runs/{run}/cancel"),
            &self.user,
            None,
            &[StatusCode::OK],
        )
        .await?;
        Ok(())
    }
}

/// Waits until run `id` is in a final state (read from the tool database,
/// so the wait does not load the API), and returns that state.
pub async fn wait_final(pool: &PgPool, id: &str, limit: Duration) -> anyhow::Result<String> {
    let id: uuid::Uuid = id.parse()?;
    let deadline = Instant::now() + limit;
    loop {
        let state: String = sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
        if matches!(
            state.as_str(),
            "succeeded" | "failed" | "partially_failed" | "cancelled" | "denied" | "invalidated"
        ) {
            return Ok(state);
        }
        if Instant::now() > deadline {
            bail!("run {id} still {state} after {limit:?}");
        }
        // Times come from the run's own rows, not from this loop; a slower
        // look leaves the tool database to the run.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first failing target's error of a run, for messages.
pub async fn first_error(pool: &PgPool, id: &str) -> String {
    let Ok(id) = id.parse::<uuid::Uuid>() else {
        return String::new();
    };
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT error FROM target_executions WHERE run_id = $1 AND state <> 'succeeded'
         ORDER BY position LIMIT 1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
    .flatten()
    .unwrap_or_default()
}

/// Seconds from `since` to the last target's `finished_at` of run `id`.
pub async fn seconds_to_last_finish(
    pool: &PgPool,
    id: &str,
    since: time::OffsetDateTime,
) -> anyhow::Result<f64> {
    let id: uuid::Uuid = id.parse()?;
    let last: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT max(finished_at) FROM target_executions WHERE run_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let last = last.context("the run has no finished target")?;
    Ok((last - since).as_seconds_f64())
}

/// Requests, approves, executes a run and waits for it; returns seconds from
/// Execute to the last target finished. A run that does not succeed is an error.
pub async fn timed_run(stack: &Stack, slug: &str, body: Value) -> anyhow::Result<(String, f64)> {
    let id = stack.api.approved_run(slug, body).await?;
    let since = time::OffsetDateTime::now_utc();
    stack.api.execute(&id, json!({})).await?;
    let state = wait_final(&stack.pool, &id, Duration::from_secs(1800)).await?;
    if state != "succeeded" {
        bail!(
            "run {id} of {slug} ended {state}: {}",
            first_error(&stack.pool, &id).await
        );
    }
    let secs = seconds_to_last_finish(&stack.pool, &id, since).await?;
    Ok((id, secs))
}

/// Waits until the workers have read (a first drift scan) each of the DB set's `n` targets.
pub async fn wait_scanned(pool: &sqlx::PgPool, set: &str, n: usize) -> anyhow::Result<()> {
    let set: uuid::Uuid = set.parse()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let scanned: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM targets WHERE db_set_id = $1 AND schema_scanned_at IS NOT NULL",
        )
        .bind(set)
        .fetch_one(pool)
        .await?;
        if scanned as usize >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {scanned} of {n} targets scanned in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
