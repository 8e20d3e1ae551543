//! Real worker processes (the `worker` binary) for fault tests, and the
//! control plane's own store calls to request, approve and execute runs.
//!
//! A [`WorkerProcess`] is killed when dropped; its log goes to a file that is
//! printed when the test fails and removed otherwise.

use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use common::{
    domain::{Engine, RunState, TlsMode},
    store::{self, inventory::NewTarget, runs::ExecutionRow},
    testing::{TestPgInstance, wait_for},
};
use futures::{StreamExt, stream};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::{Created, Project, TestHub};

/// One `worker` binary process, killed (SIGKILL) when dropped.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts `worker --pool <pool> --concurrency <n>` against the hub's
    /// tool database, with nothing from the test's environment but what the
    /// binary needs.
    pub fn spawn(hub: &TestHub, concurrency: usize, lock_wait_ms: u64) -> Self {
        let log = std::env::temp_dir().join(format!("mh-worker-{}.log", Uuid::new_v4().simple()));
        let file = File::create(&log).expect("create the worker's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .env_clear()
            .args(["--pool", &hub.pool_name])
            .args(["--concurrency", &concurrency.to_string()])
            .env("MH_DATABASE_URL", &hub.url)
            .env("MH_ENCRYPTION_KEYS", &hub.keys_spec)
            .env("MH_LOCK_WAIT_MS", lock_wait_ms.to_string())
            // Several workers on one machine: each metrics endpoint on a port
            // of its own.
            .env("MH_METRICS_LISTEN", "127.0.0.1:0")
            .env("MH_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log file handle"))
            .stderr(file)
            .spawn()
            .expect("start the worker binary");
        WorkerProcess { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`: the process ends at once, without any cleanup.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the worker");
        self.child.wait().expect("reap the worker");
    }

    /// What the worker logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            eprintln!(
                "--- last lines of worker {} ({}) ---",
                self.child.id(),
                self.log.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// `worker --pool <the test's pool>` against the hub's tool database with
/// JSON logs, nothing else from the test's environment, standard error
/// piped and the process killed if the test drops it: for a test that
/// watches one worker process from start to exit.
pub fn worker_command(hub: &TestHub) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"));
    command
        .env_clear()
        .args(["--pool", &hub.pool_name])
        .env("MH_DATABASE_URL", &hub.url)
        .env("MH_ENCRYPTION_KEYS", &hub.keys_spec)
        .env("MH_LOG_FORMAT", "json")
        // Any free port: other workers may run on this machine.
        .env("MH_METRICS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Sends SIGTERM to a worker process the test started (with its standard
/// error piped) and waits until it exits; returns its exit status and what
/// it wrote to standard error.
pub async fn terminate(child: tokio::process::Child) -> (ExitStatus, String) {
    let pid = child.id().unwrap().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let output = tokio::time::timeout(super::DEADLINE, child.wait_with_output())
        .await
        .expect("worker exits after SIGTERM")
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

impl TestHub {
    /// Waits until a worker of the test's pool has registered in the fleet;
    /// returns the concurrency it registered with.
    pub async fn registered_concurrency(&self) -> Option<i32> {
        super::eventually(|| async {
            sqlx::query_scalar::<_, i32>("SELECT concurrency FROM workers WHERE pool = $1")
                .bind(&self.pool_name)
                .fetch_optional(&self.db)
                .await
                .unwrap()
        })
        .await
    }

    /// A hub whose tool database is `mh_tool` on another server (a
    /// [`common::testing::TestPgInstance`]): the database goes with that
    /// server, so nothing of it is registered for cleanup here.
    pub async fn with_tool_server(admin_url: &str) -> Self {
        let url = common::testing::with_database(admin_url, "mh_tool");
        let mut admin = PgConnection::connect(admin_url)
            .await
            .expect("the test's own PostgreSQL server answers");
        sqlx::query("CREATE DATABASE mh_tool")
            .execute(&mut admin)
            .await
            .expect("create the tool database");
        Self::on_database(url, Arc::new(Created::default())).await
    }

    /// Starts `n` worker processes and waits until each has registered in
    /// the fleet and listens for new jobs.
    pub async fn spawn_workers(
        &self,
        n: usize,
        concurrency: usize,
        lock_wait_ms: u64,
    ) -> Vec<WorkerProcess> {
        let mut workers: Vec<WorkerProcess> = (0..n)
            .map(|_| WorkerProcess::spawn(self, concurrency, lock_wait_ms))
            .collect();
        let expected = i64::try_from(n).unwrap();
        let pids: Vec<i32> = workers
            .iter()
            .map(|w| i32::try_from(w.pid()).unwrap())
            .collect();
        wait_for(
            Duration::from_secs(60),
            "every worker process to register and listen",
            || async {
                let registered: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM workers
                     WHERE pool = $1 AND pid = ANY($2) AND stopped_at IS NULL",
                )
                .bind(&self.pool_name)
                .bind(&pids)
                .fetch_one(&self.db)
                .await
                .ok()?;
                let listening: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND query LIKE 'LISTEN %'",
                )
                .fetch_one(&self.db)
                .await
                .ok()?;
                (registered >= expected && listening >= expected).then_some(())
            },
        )
        .await;
        for worker in &mut workers {
            assert!(worker.is_running(), "worker exited: {}", worker.logs());
        }
        workers
    }

    /// A project whose DB set has `n` fresh PostgreSQL targets on the
    /// test's own `server`, created a few at a time in parallel. They go
    /// with the server: nothing is registered for cleanup.
    pub async fn project_on_server(&self, server: &TestPgInstance, n: usize) -> Project {
        let databases: Vec<String> = stream::iter(0..n)
            .map(|i| async move {
                let name = format!("mh_tgt_{i:03}");
                let mut admin = PgConnection::connect(&server.admin_url())
                    .await
                    .expect("the test's own PostgreSQL server answers");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create a target database");
                let _ = admin.close().await;
                name
            })
            .buffer_unordered(6)
            .collect()
            .await;
        let mut project = self.empty_project("p").await;
        let pool = self.pool_name.clone();
        for database in databases {
            self.add_target(
                &mut project,
                &NewTarget {
                    name: &database,
                    engine: Engine::Postgres,
                    host: "127.0.0.1",
                    port: i32::from(server.port),
                    database: &database,
                    username: "postgres",
                    password: None,
                    tls_mode: TlsMode::Disable,
                    session_settings: "",
                    worker_pool: &pool,
                },
            )
            .await;
        }
        project
    }

    /// Sets the `daily` environment's lock timeout, as an admin's policy
    /// edit does.
    pub async fn set_lock_timeout(&self, lock_timeout_ms: i32) {
        let mut conn = self.db.acquire().await.unwrap();
        let mut env = store::inventory::environment(&mut conn, "daily")
            .await
            .unwrap()
            .expect("the daily environment exists");
        env.lock_timeout_ms = lock_timeout_ms;
        // The budget alone: one attempt, and a pre-flight that only looks.
        env.lock_retries = 0;
        env.preflight_wait_ms = 0;
        store::inventory::update_environment(&mut conn, &env)
            .await
            .unwrap();
    }

    /// Waits until every run is final, tolerating a tool database that is
    /// briefly away, and returns their states.
    pub async fn wait_for_runs(&self, runs: &[Uuid], deadline: Duration) -> Vec<RunState> {
        wait_for(deadline, "every run to finish", || async {
            let mut states = Vec::new();
            for run in runs {
                let mut conn = self.db.acquire().await.ok()?;
                let state = store::runs::get(&mut conn, *run).await.ok()??.state;
                if !state.is_final() {
                    return None;
                }
                states.push(state);
            }
            Some(states)
        })
        .await
    }

    /// Every execution of the hub (all runs), for assertions across runs.
    pub async fn all_executions(&self, runs: &[Uuid]) -> Vec<ExecutionRow> {
        let mut all = Vec::new();
        for run in runs {
            all.extend(self.executions(*run).await);
        }
        all
    }
}
