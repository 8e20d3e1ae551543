//! MariaDB targets for integration tests: fresh databases named
//! `mh_tgt_<uuid>` on the local server (and, for targets with a password, a
//! user of their own), dropped at the end even when the test fails.
//!
//! `MH_TEST_MY_URL` overrides the server (default
//! `mysql://root@127.0.0.1:3306`, no password).

use std::sync::Mutex;

use common::{
    domain::{Engine, TlsMode},
    store::inventory::NewTarget,
};
use mysql_async::{Conn, Opts, prelude::Queryable};
use uuid::Uuid;

use super::{Project, TargetDb, TargetOptions, TestHub, run_detached};

pub fn server_url() -> String {
    std::env::var("MH_TEST_MY_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

fn opts(database: Option<&str>) -> Opts {
    let opts = Opts::from_url(&server_url()).expect("MH_TEST_MY_URL is a mysql:// URL");
    mysql_async::OptsBuilder::from_opts(opts)
        .db_name(database)
        .prefer_socket(false)
        .into()
}

/// An administrator's session on the test server.
pub async fn admin() -> Conn {
    Conn::new(opts(None))
        .await
        .expect("the test MariaDB server is reachable (set MH_TEST_MY_URL)")
}

/// Databases and users a test created on the MariaDB server.
#[derive(Default)]
pub struct Created {
    databases: Mutex<Vec<String>>,
    users: Mutex<Vec<String>>,
}

impl Drop for Created {
    fn drop(&mut self) {
        let databases = std::mem::take(&mut *self.databases.lock().unwrap());
        let users = std::mem::take(&mut *self.users.lock().unwrap());
        if databases.is_empty() && users.is_empty() {
            return;
        }
        let dropped = run_detached(async move {
            let mut conn = Conn::new(opts(None)).await?;
            for name in &databases {
                // Sessions still in the database (a worker of a failed
                // test) could hold metadata locks that block the drop.
                let sessions: Vec<u64> = conn
                    .exec(
                        "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
                        (name,),
                    )
                    .await?;
                for id in sessions {
                    let _ = conn.query_drop(format!("KILL {id}")).await;
                }
                conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                    .await?;
            }
            for user in &users {
                conn.query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
                    .await?;
            }
            conn.disconnect().await
        });
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: MariaDB test databases were not all dropped: {dropped:?}");
        }
    }
}

impl TestHub {
    /// A project whose DB set has one fresh MariaDB database per entry.
    /// `password` makes a user of the target's own with that password;
    /// without one the target connects as the server's administrator.
    pub async fn mysql_project(&self, targets: &[TargetOptions]) -> Project {
        let mut project = self.empty_project("m").await;
        let server = opts(None);
        let mut admin = admin().await;
        for (i, options) in targets.iter().enumerate() {
            let database = format!("mh_tgt_{}", Uuid::new_v4().simple());
            admin
                .query_drop(format!("CREATE DATABASE `{database}`"))
                .await
                .expect("create MariaDB test database");
            self.created_my
                .databases
                .lock()
                .unwrap()
                .push(database.clone());
            let username = match options.password {
                None => server.user().unwrap_or("root").to_owned(),
                Some(password) => {
                    let user = format!("mh_u_{}", &Uuid::new_v4().simple().to_string()[..12]);
                    let literal = password.replace('\\', "\\\\").replace('\'', "\\'");
                    admin
                        .query_drop(format!(
                            "CREATE USER '{user}'@'%' IDENTIFIED BY '{literal}'"
                        ))
                        .await
                        .expect("create MariaDB test user");
                    self.created_my.users.lock().unwrap().push(user.clone());
                    admin
                        .query_drop(format!("GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
                        .await
                        .expect("grant the test user its database");
                    user
                }
            };
            self.add_target(
                &mut project,
                &NewTarget {
                    name: &format!("m{i}"),
                    engine: Engine::Mysql,
                    host: server.ip_or_hostname(),
                    port: i32::from(options.port.unwrap_or(server.tcp_port())),
                    database: &database,
                    username: &username,
                    password: options.password,
                    tls_mode: options.tls_mode.unwrap_or(TlsMode::Disable),
                    session_settings: options.session_settings,
                    worker_pool: &self.pool_name,
                },
            )
            .await;
        }
        let _ = admin.disconnect().await;
        project
    }

    /// `n` plain MariaDB targets.
    pub async fn mysql_project_with_targets(&self, n: usize) -> Project {
        self.mysql_project(&vec![TargetOptions::default(); n]).await
    }
}

/// One row of a MariaDB target's `migrate_hub_history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub version: String,
    pub checksum: String,
    pub name: String,
    pub run_id: String,
    pub statements: i64,
}

impl TargetDb {
    /// An administrator's session in the target's MariaDB database.
    pub async fn my_connect(&self) -> Conn {
        Conn::new(opts(Some(&self.database)))
            .await
            .expect("connect to MariaDB target")
    }

    /// The target's own history, in version order.
    pub async fn my_history(&self) -> Vec<HistoryRow> {
        let mut conn = self.my_connect().await;
        let exists: Option<i64> = conn
            .query_first(
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = DATABASE() AND table_name = 'migrate_hub_history'",
            )
            .await
            .unwrap();
        if exists == Some(0) {
            return Vec::new();
        }
        let rows: Vec<(String, String, String, String, i64)> = conn
            .query(
                "SELECT version, checksum, name, run_id, statements FROM migrate_hub_history
                 ORDER BY CAST(version AS DECIMAL(65, 0))",
            )
            .await
            .unwrap();
        let _ = conn.disconnect().await;
        rows.into_iter()
            .map(|(version, checksum, name, run_id, statements)| HistoryRow {
                version,
                checksum,
                name,
                run_id,
                statements,
            })
            .collect()
    }

    pub async fn my_versions(&self) -> Vec<String> {
        self.my_history()
            .await
            .into_iter()
            .map(|h| h.version)
            .collect()
    }

    pub async fn my_has_table(&self, name: &str) -> bool {
        let mut conn = self.my_connect().await;
        let n: Option<i64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = DATABASE() AND table_name = ?",
                (name,),
            )
            .await
            .unwrap();
        let _ = conn.disconnect().await;
        n == Some(1)
    }

    pub async fn my_scalar_i64(&self, sql: &str) -> i64 {
        let mut conn = self.my_connect().await;
        let value: Option<i64> = conn.query_first(sql).await.unwrap();
        let _ = conn.disconnect().await;
        value.expect("a row")
    }

    pub async fn my_execute(&self, sql: &str) {
        let mut conn = self.my_connect().await;
        conn.query_drop(sql).await.unwrap();
        let _ = conn.disconnect().await;
    }
}
