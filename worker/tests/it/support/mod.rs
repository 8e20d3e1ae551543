//! Integration-test harness: a fresh tool database and fresh target databases
//! per test on the local PostgreSQL, a hub seeded through `common::store`
//! (as the control plane would), an in-process worker, and waits with a
//! deadline. Everything created is dropped at the end, also when a test fails.
//!
//! `MH_TEST_PG_URL` overrides the server (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, trust auth).

pub mod mariadb;
pub mod processes;
// The control plane's receiver: the worker exports the same way.
#[path = "../../../../control-plane/tests/it/support/otlp.rs"]
pub mod otlp;

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use apalis::prelude::TaskBuilder;
use common::{
    crypto::Keyring,
    domain::{
        Checksum, Direction, Engine, Role, RunState, TargetState, TlsMode, Version,
        directives::needs_no_transaction,
        import::{self, ImportedMigration},
        run::{ExecutionSettings, PinnedMigration},
    },
    queue::{TargetJob, queue_name},
    store::{
        self,
        inventory::{NewTarget, TargetRow},
        migrations::NewMigration,
        runs::{ExecutionRow, NewRun},
    },
};
use futures::StreamExt;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};
use uuid::Uuid;
use worker::Worker;

/// A shared workload folder (`MH_WORKLOADS_DIR`, else `shared/workloads`
/// beside the repository, where CI and the developers' machines keep it),
/// read as the import reads it.
pub fn workload(sub: &str) -> Vec<ImportedMigration> {
    let root = std::env::var_os("MH_WORKLOADS_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/workloads"),
        std::path::PathBuf::from,
    );
    let dir = root.join(sub);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "no workloads at {}: {e}; set MH_WORKLOADS_DIR",
            dir.display()
        )
    });
    let files: Vec<(String, String)> = entries
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    import::read(&files).unwrap().1
}

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

pub fn server_url() -> String {
    std::env::var("MH_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The server URL with its database replaced by `database`.
pub fn database_url(database: &str) -> String {
    let url = server_url();
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base.to_owned(), format!("?{query}")),
        None => (url.clone(), String::new()),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base.as_str(),
    };
    format!("{root}/{database}{query}")
}

/// Host and port of the test server, for target rows.
pub fn server_host_port() -> (String, u16) {
    let url = server_url();
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(5432)),
        None => (host_port.to_owned(), 5432),
    }
}

/// Runs `cleanup` to its end on a runtime of its own, on a plain thread: a
/// `Drop` cannot await, and may run inside a runtime that is shutting down.
fn run_detached<T: Send + 'static>(
    cleanup: impl Future<Output = T> + Send + 'static,
) -> std::thread::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime for cleanup")
            .block_on(cleanup)
    })
    .join()
}

/// Databases this test created; dropped (with their connections) on drop.
#[derive(Default)]
struct Created(Mutex<Vec<String>>);

impl Drop for Created {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.0.lock().unwrap());
        if names.is_empty() {
            return;
        }
        let admin = server_url();
        // A few at a time: each drop waits for a checkpoint, and concurrent
        // drops share one.
        let dropped = run_detached(async move {
            let drops = names.into_iter().map(|name| {
                let admin = admin.clone();
                async move {
                    let mut conn = PgConnection::connect(&admin).await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await?;
                    conn.close().await
                }
            });
            let results: Vec<Result<(), sqlx::Error>> = futures::stream::iter(drops)
                .buffer_unordered(8)
                .collect()
                .await;
            results.into_iter().collect::<Result<(), sqlx::Error>>()
        });
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: test databases were not all dropped: {dropped:?}");
        }
    }
}

async fn create_database(created: &Created, prefix: &str) -> String {
    let name = format!("{prefix}_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&server_url())
        .await
        .expect("the test PostgreSQL server is reachable (set MH_TEST_PG_URL)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    created.0.lock().unwrap().push(name.clone());
    name
}

/// A target database on the test server.
#[derive(Debug, Clone)]
pub struct TargetDb {
    pub row: TargetRow,
    pub database: String,
}

impl TargetDb {
    pub fn id(&self) -> Uuid {
        self.row.id
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&database_url(&self.database))
            .await
            .expect("connect to target")
    }

    /// `(version, checksum, run_id)` rows of the target's own history.
    pub async fn history(&self) -> Vec<(String, String, Uuid)> {
        let mut conn = self.connect().await;
        sqlx::query_as(
            "SELECT version, checksum, run_id FROM migrate_hub_history
             ORDER BY string_to_array(version, '.')::numeric[]",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default()
    }

    /// The versions in the target's own history, in version order.
    pub async fn versions(&self) -> Vec<String> {
        self.history().await.into_iter().map(|h| h.0).collect()
    }

    /// Whether nothing holds the target lock of PostgreSQL targets (a
    /// session of this test takes it and lets go again).
    pub async fn lock_is_free(&self) -> bool {
        let mut conn = self.connect().await;
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(worker::lock::PG_ADVISORY_KEY)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    pub async fn has_table(&self, name: &str) -> bool {
        let mut conn = self.connect().await;
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    pub async fn scalar_i64(&self, sql: &'static str) -> i64 {
        let mut conn = self.connect().await;
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }

    pub async fn execute(&self, sql: &'static str) {
        let mut conn = self.connect().await;
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
}

/// How a test target differs from a plain local database.
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    /// Point the target at this port instead of the test server's.
    pub port: Option<u16>,
    pub password: Option<&'static str>,
    pub session_settings: &'static str,
    /// `disable` unless set.
    pub tls_mode: Option<TlsMode>,
}

/// A project with one DB set in `daily` and its targets.
#[derive(Debug, Clone)]
pub struct Project {
    pub id: Uuid,
    pub db_set_id: Uuid,
    pub targets: Vec<TargetDb>,
    migrations: Arc<Mutex<Vec<(Uuid, Version, Checksum)>>>,
}

impl Project {
    /// The migrations a run to `target_version` pins, the way the control
    /// plane pins them (up: every migration up to the version, ascending;
    /// down: every migration above it, descending).
    pub fn pinned(
        &self,
        direction: Direction,
        target_version: &Version,
    ) -> Vec<(Uuid, PinnedMigration)> {
        let mut pinned: Vec<(Uuid, PinnedMigration)> = self
            .migrations
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v, _)| match direction {
                Direction::Up => v <= target_version,
                Direction::Down => v > target_version,
            })
            .map(|(id, version, checksum)| {
                (
                    *id,
                    PinnedMigration {
                        version: version.clone(),
                        checksum: checksum.clone(),
                    },
                )
            })
            .collect();
        pinned.sort_by(|a, b| a.1.version.cmp(&b.1.version));
        if direction == Direction::Down {
            pinned.reverse();
        }
        pinned
    }
}

/// A tool database with the hub's schema and the queue, plus the people and
/// keys the seeded rows need.
pub struct TestHub {
    pub db: PgPool,
    /// The tool database's URL, for workers with pools of their own.
    pub url: String,
    pub keys: Keyring,
    /// `MH_ENCRYPTION_KEYS` for `keys`, for worker processes.
    pub keys_spec: String,
    /// The worker pool (and queue) of this test's targets.
    pub pool_name: String,
    pub user_id: Uuid,
    created: Arc<Created>,
    /// MariaDB databases and users of this test (see [`mariadb`]).
    created_my: Arc<mariadb::Created>,
}

impl TestHub {
    pub async fn new() -> Self {
        let created = Arc::new(Created::default());
        let name = create_database(&created, "mh_test").await;
        Self::on_database(database_url(&name), created).await
    }

    /// A hub on the (empty) tool database at `url`.
    async fn on_database(url: String, created: Arc<Created>) -> Self {
        let db = common::db::connect(&url, 16)
            .await
            .expect("connect to tool database");
        common::db::migrate(&db)
            .await
            .expect("migrate tool database");
        let keys_spec = Keyring::generate_entry("k1");
        let keys = Keyring::parse(&keys_spec).unwrap();
        let mut conn = db.acquire().await.unwrap();
        let (user, _) =
            store::users::upsert(&mut conn, "requester@example.com", "R", Role::Manager)
                .await
                .unwrap();
        Self {
            db,
            url,
            keys,
            keys_spec,
            pool_name: "test-pool".into(),
            user_id: user.id,
            created,
            created_my: Default::default(),
        }
    }

    /// A project (its slug starts with `prefix`) whose DB set, `main` in
    /// `daily`, has no targets yet.
    pub async fn empty_project(&self, prefix: &str) -> Project {
        let mut conn = self.db.acquire().await.unwrap();
        let slug = format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let project = store::inventory::insert_project(&mut conn, &slug, "Test", "", self.user_id)
            .await
            .unwrap();
        let db_set = store::inventory::insert_db_set(&mut conn, project.id, "main", "daily")
            .await
            .unwrap();
        Project {
            id: project.id,
            db_set_id: db_set.id,
            targets: Vec::new(),
            migrations: Default::default(),
        }
    }

    /// Adds a target to the project's DB set that points wherever `target`
    /// says (another server, a user of its own, a wrong password).
    pub async fn add_target(&self, project: &mut Project, target: &NewTarget<'_>) -> TargetDb {
        let mut conn = self.db.acquire().await.unwrap();
        let row = store::inventory::insert_target(&mut conn, &self.keys, project.db_set_id, target)
            .await
            .unwrap();
        let db = TargetDb {
            row,
            database: target.database.to_owned(),
        };
        project.targets.push(db.clone());
        db
    }

    /// A project whose DB set has one fresh target database per entry.
    pub async fn project(&self, targets: &[TargetOptions]) -> Project {
        let mut project = self.empty_project("p").await;
        let (host, port) = server_host_port();
        for (i, options) in targets.iter().enumerate() {
            let database = create_database(&self.created, "mh_tgt").await;
            self.add_target(
                &mut project,
                &NewTarget {
                    name: &format!("t{i}"),
                    engine: Engine::Postgres,
                    host: &host,
                    port: i32::from(options.port.unwrap_or(port)),
                    database: &database,
                    username: "postgres",
                    password: options.password,
                    tls_mode: options.tls_mode.unwrap_or(TlsMode::Disable),
                    session_settings: options.session_settings,
                    worker_pool: &self.pool_name,
                },
            )
            .await;
        }
        project
    }

    /// `n` plain local targets.
    pub async fn project_with_targets(&self, n: usize) -> Project {
        self.project(&vec![TargetOptions::default(); n]).await
    }

    /// A migration; an empty `down` means no down script.
    pub async fn migration(&self, project: &Project, version: &str, up: &str, down: &str) -> Uuid {
        let down = (!down.is_empty()).then_some(down);
        self.migration_with(project, version, up, down, true).await
    }

    /// Adds migrations read from a folder (see [`workload`]) as an import
    /// would: each tool's meaning of its files, transactional unless the
    /// scripts need otherwise.
    pub async fn import(&self, project: &Project, migrations: &[ImportedMigration]) {
        for m in migrations {
            let down = m.down_sql.as_deref();
            let transactional =
                !needs_no_transaction(&m.up_sql) && !down.is_some_and(needs_no_transaction);
            self.migration_with(
                project,
                &m.version.to_string(),
                &m.up_sql,
                down,
                transactional,
            )
            .await;
        }
    }

    pub async fn migration_with(
        &self,
        project: &Project,
        version: &str,
        up: &str,
        down: Option<&str>,
        transactional: bool,
    ) -> Uuid {
        let version = Version::parse(version).unwrap();
        let mut conn = self.db.acquire().await.unwrap();
        let id = store::migrations::insert(
            &mut conn,
            project.id,
            self.user_id,
            &NewMigration {
                version: &version,
                name: &format!("migration {version}"),
                up_sql: up,
                down_sql: down,
                transactional,
            },
        )
        .await
        .unwrap();
        project
            .migrations
            .lock()
            .unwrap()
            .push((id, version, Checksum::of(up, down)));
        id
    }

    /// A run of the DB set to `target_version`, pinned the way the control
    /// plane pins it (up: every migration up to the version, ascending;
    /// down: every migration above it, descending), and approved.
    pub async fn approved_run(
        &self,
        project: &Project,
        direction: Direction,
        target_version: &str,
    ) -> Uuid {
        self.requested_and_approved(project, direction, target_version, 8)
            .await
    }

    /// What *Request* and *Approve* do: a run of the DB set to
    /// `target_version` pinning the migrations it covers, with the
    /// environment's timeouts (as the control plane reads them) and the
    /// given run concurrency, approved.
    pub async fn requested_and_approved(
        &self,
        project: &Project,
        direction: Direction,
        target_version: &str,
        concurrency: i32,
    ) -> Uuid {
        let mut tx = self.db.begin().await.unwrap();
        let env = store::inventory::environment(&mut tx, "daily")
            .await
            .unwrap()
            .expect("the daily environment exists");
        let settings = ExecutionSettings {
            direction,
            target_version: Version::parse(target_version).unwrap(),
            stop_on_failure: false,
            concurrency,
            canary: 0,
            lock_timeout_ms: env.lock_timeout_ms,
            statement_timeout_ms: env.statement_timeout_ms,
            lock_retries: Some(env.lock_retries),
            preflight_wait_ms: Some(env.preflight_wait_ms),
            blocker_age_ms: Some(env.blocker_age_ms),
            terminate_idle_blockers_after_ms: env.terminate_idle_blockers_after_ms,
        };
        let run_id = self
            .insert_approved_run(&mut tx, project, &env.name, &settings)
            .await;
        tx.commit().await.unwrap();
        run_id
    }

    /// In `tx`: a run of the project's DB set in `environment` with
    /// `settings`, pinning the migrations it covers, moved to `approved`.
    async fn insert_approved_run(
        &self,
        tx: &mut PgConnection,
        project: &Project,
        environment: &str,
        settings: &ExecutionSettings,
    ) -> Uuid {
        let pinned = project.pinned(settings.direction, &settings.target_version);
        let targets = store::runs::pinned_targets(&mut *tx, project.db_set_id)
            .await
            .unwrap();
        let (run_id, _digest) = store::runs::insert(
            &mut *tx,
            &NewRun {
                project_id: project.id,
                db_set_id: project.db_set_id,
                environment,
                requested_by: self.user_id,
                note: "",
                settings,
                migrations: &pinned,
                targets: &targets,
                out_of_order: &[],
                // What a review of these scripts says does not matter to
                // the workers; the control plane's tests cover it.
                review: &common::review::run::RunReview {
                    analyzers: common::review::run::ANALYZERS_VERSION.into(),
                    risk: common::review::policy::Risk::Low,
                    scripts: Vec::new(),
                },
            },
        )
        .await
        .unwrap();
        // The approval the environment asks for, on the pinned digest.
        let run = store::runs::lock(&mut *tx, run_id).await.unwrap().unwrap();
        store::runs::insert_decision(
            &mut *tx,
            run_id,
            self.user_id,
            "admin",
            "approved",
            "",
            &run.digest,
        )
        .await
        .unwrap();
        store::runs::set_state(&mut *tx, &run, RunState::Approved, Some(self.user_id), None)
            .await
            .unwrap();
        run_id
    }

    /// *Execute*, as the control plane does it (`lifecycle::execute`): the
    /// first targets the dispatch rule allows are queued and pushed, the
    /// rest follow as targets finish.
    pub async fn execute(&self, run_id: Uuid) {
        let caller = common::lifecycle::Caller {
            id: self.user_id,
            email: "requester@example.com".into(),
            role: Role::Manager,
            ip: None,
            route: "POST /api/v1/runs/{id}/execute".into(),
        };
        let mut tx = self.db.begin().await.unwrap();
        common::lifecycle::execute(&mut tx, &caller, run_id, None, None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// Executes the approved run and waits until it is final; returns its
    /// state.
    pub async fn execute_and_wait(&self, run_id: Uuid) -> RunState {
        self.execute(run_id).await;
        self.wait_for_run(run_id).await
    }

    /// Asks, as an admin's resolve does, for `run_id` to resume on the dirty
    /// `target` from statement `from`.
    pub async fn resume(&self, run_id: Uuid, target: &TargetDb, from: i32) {
        let mut tx = self.db.begin().await.unwrap();
        let queued = common::lifecycle::requeue_for_resume(&mut tx, target.id(), run_id, from)
            .await
            .unwrap();
        assert!(queued.is_some(), "the run's execution was queued again");
        tx.commit().await.unwrap();
    }

    /// Executes the approved run and waits (up to `within`) until it is
    /// final; it must have succeeded (else `target`'s error is shown).
    pub async fn execute_to_success(&self, run_id: Uuid, target: &TargetDb, within: Duration) {
        self.execute(run_id).await;
        assert_eq!(
            self.wait_for_run_within(run_id, within).await,
            RunState::Succeeded,
            "{:?}",
            self.execution(run_id, target).await.error
        );
    }

    /// Pushes the run's jobs once more, as a redelivery would.
    pub async fn push_again(&self, run_id: Uuid) {
        let executions = self.executions(run_id).await;
        let mut conn = self.db.acquire().await.unwrap();
        for e in executions {
            let job = TargetJob {
                run_id,
                target_id: e.target_id,
                execution_id: e.id,
                trace_context: Default::default(),
            };
            push(&mut conn, &self.pool_name, &job).await;
        }
    }

    pub async fn run_state(&self, run_id: Uuid) -> RunState {
        let mut conn = self.db.acquire().await.unwrap();
        store::runs::get(&mut conn, run_id)
            .await
            .unwrap()
            .expect("run exists")
            .state
    }

    /// Waits until the run is final and returns its state.
    pub async fn wait_for_run(&self, run_id: Uuid) -> RunState {
        self.wait_for_run_within(run_id, DEADLINE).await
    }

    pub async fn wait_for_run_within(&self, run_id: Uuid, deadline: Duration) -> RunState {
        let state = eventually_within(deadline, || async {
            let state = self.run_state(run_id).await;
            state.is_final().then_some(state)
        })
        .await;
        match state {
            Some(state) => state,
            None => panic!(
                "run {run_id} is still {} after {deadline:?}; executions: {:#?}",
                self.run_state(run_id).await,
                self.executions(run_id).await
            ),
        }
    }

    /// Waits until the run's execution on `target` is in `state`.
    pub async fn wait_for_execution(&self, run_id: Uuid, target: &TargetDb, state: TargetState) {
        let reached = eventually(|| async {
            (self.execution(run_id, target).await.state == state).then_some(())
        })
        .await;
        assert!(
            reached.is_some(),
            "execution on {} never became {state}: {:#?}",
            target.database,
            self.execution(run_id, target).await
        );
    }

    /// Waits until no job of the test's queue is waiting or running.
    pub async fn wait_for_idle_queue(&self) {
        let queue = queue_name(&self.pool_name);
        let idle = eventually(|| async {
            let busy: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM apalis.jobs
                 WHERE job_type = $1 AND status IN ('Pending', 'Queued', 'Running')",
            )
            .bind(&queue)
            .fetch_one(&self.db)
            .await
            .unwrap();
            (busy == 0).then_some(())
        })
        .await;
        assert!(
            idle.is_some(),
            "queue {queue} still busy after {DEADLINE:?}"
        );
    }

    pub async fn executions(&self, run_id: Uuid) -> Vec<ExecutionRow> {
        let mut conn = self.db.acquire().await.unwrap();
        store::runs::executions(&mut conn, run_id).await.unwrap()
    }

    /// The execution of `run_id` on `target`.
    pub async fn execution(&self, run_id: Uuid, target: &TargetDb) -> ExecutionRow {
        self.executions(run_id)
            .await
            .into_iter()
            .find(|e| e.target_id == target.id())
            .expect("execution of target")
    }

    /// The error of the execution of `run_id` on `target`, which failed.
    pub async fn failure(&self, run_id: Uuid, target: &TargetDb) -> String {
        let execution = self.execution(run_id, target).await;
        assert_eq!(execution.state, TargetState::Failed, "{execution:#?}");
        execution.error.expect("a failed execution says why")
    }

    /// The execution of `run_id` on `target` was interrupted: its worker
    /// died mid-run, and a worker of the pool settled it.
    pub async fn assert_interrupted(&self, run_id: Uuid, target: &TargetDb) {
        let execution = self.execution(run_id, target).await;
        assert_eq!(execution.state, TargetState::Interrupted, "{execution:#?}");
        let error = execution.error.unwrap_or_default();
        assert!(
            error.starts_with("the worker executing this target stopped mid-run"),
            "{error}"
        );
    }

    /// The hub's applied `(version, checksum)` of a target.
    pub async fn applied(&self, target: &TargetDb) -> Vec<(String, String)> {
        let mut conn = self.db.acquire().await.unwrap();
        store::executions::applied(&mut conn, target.id())
            .await
            .unwrap()
    }

    /// The versions the hub records as applied on a target, in order.
    pub async fn applied_versions(&self, target: &TargetDb) -> Vec<String> {
        self.applied(target)
            .await
            .into_iter()
            .map(|a| a.0)
            .collect()
    }

    /// Whether the test server accepts TLS connections.
    pub async fn server_has_tls(&self) -> bool {
        let ssl: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&self.db)
            .await
            .unwrap();
        ssl == "on"
    }

    pub async fn audit_count(&self, action: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = $1")
            .bind(action)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Starts an in-process worker for the test's pool and waits until it
    /// listens for new jobs, so a test never races the worker's start.
    /// (taken, hash) of the target's schema snapshots, oldest first.
    pub async fn snapshots_of(&self, target: Uuid) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT taken, hash FROM schema_snapshots WHERE target_id = $1 ORDER BY taken_at, id",
        )
        .bind(target)
        .fetch_all(&self.db)
        .await
        .unwrap()
    }

    /// How the schema stored under hash `to` differs from the one under `from`.
    pub async fn schema_diff(&self, from: &str, to: &str) -> common::domain::schema::SchemaDiff {
        let mut conn = self.db.acquire().await.unwrap();
        let mut text = async |hash: &str| {
            common::store::snapshots::text(&mut conn, hash)
                .await
                .unwrap()
                .expect("a stored schema")
        };
        let (before, after) = (text(from).await, text(to).await);
        common::domain::schema::diff(&before, &after)
    }

    pub async fn start_worker(&self, lock_wait_ms: u64) -> RunningWorker {
        self.start(Worker::new(
            self.db.clone(),
            self.keys.clone(),
            self.pool_name.clone(),
            4,
            lock_wait_ms,
        ))
        .await
    }

    pub async fn start(&self, worker: Worker) -> RunningWorker {
        let id = worker.id();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        self.wait_for_listener().await;
        RunningWorker {
            id,
            stop: Some(stop),
            handle,
        }
    }

    /// Waits until some worker listens for new jobs on the tool database.
    pub async fn wait_for_listener(&self) {
        let listening = eventually(|| async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN %'",
            )
            .fetch_one(&self.db)
            .await
            .unwrap();
            (n > 0).then_some(())
        })
        .await;
        assert!(listening.is_some(), "worker never started listening");
    }
}

async fn push(conn: &mut PgConnection, pool: &str, job: &TargetJob) {
    // `run_at` a minute back: apalis only NOTIFYs a job whose `run_at`
    // (whole seconds) is not after the pushing transaction's start.
    let run_at = SystemTime::now() - Duration::from_secs(60);
    let task = TaskBuilder::new(serde_json::to_vec(job).unwrap())
        .max_attempts(1)
        .run_at_time(run_at)
        .build();
    apalis_postgres::queries::push_tasks(conn, &queue_name(pool), vec![task])
        .await
        .unwrap();
}

/// A worker running in this test's runtime.
pub struct RunningWorker {
    pub id: Uuid,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    /// Asks the worker to stop and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.handle)
            .await
            .expect("worker stops in time")
            .expect("worker task did not panic")
            .expect("worker ran without error");
    }
}

/// Polls `check` until it yields a value or [`DEADLINE`] passes.
pub async fn eventually<T, F, Fut>(check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(DEADLINE, check).await
}

/// Polls `check` until it yields a value or `within` passes.
pub async fn eventually_within<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A dirty target row as the hub stores it.
#[derive(Debug, sqlx::FromRow)]
pub struct DirtyRow {
    pub run_id: uuid::Uuid,
    pub version: String,
    pub direction: String,
    pub statement_index: i32,
    pub statements_hash: String,
    pub error: String,
}

pub async fn dirty_row(hub: &TestHub, target: &TargetDb) -> Option<DirtyRow> {
    sqlx::query_as(
        "SELECT run_id, version, direction, statement_index, statements_hash, error
         FROM target_dirty_states WHERE target_id = $1",
    )
    .bind(target.id())
    .fetch_optional(&hub.db)
    .await
    .unwrap()
}
