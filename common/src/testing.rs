//! Helpers for integration tests: throw-away databases on the local servers
//! and waiting on a condition with a deadline. Compiled only with the
//! `test-support` feature.

use std::{future::Future, time::Duration};

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The server tests create their databases on (`MH_TEST_PG_URL`).
pub fn pg_admin_url() -> String {
    std::env::var("MH_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// A PostgreSQL database with a unique name, dropped when the value is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&pg_admin_url())
            .await
            .expect("test PostgreSQL server answers (is it running on 127.0.0.1:5432?)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = with_database(&pg_admin_url(), &name);
        TestDatabase { name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context; use a small runtime of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut admin = PgConnection::connect(&pg_admin_url()).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// The MariaDB/MySQL server tests create their databases on
/// (`MH_TEST_MYSQL_URL`; root without a password on the local MariaDB).
pub fn mysql_admin_url() -> String {
    std::env::var("MH_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A MariaDB/MySQL database with a unique name and a dedicated user, with a
/// random password, that has every privilege on it and nothing else. Both
/// are dropped when the value is dropped.
pub struct TestMysqlDatabase {
    pub name: String,
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
}

impl TestMysqlDatabase {
    pub async fn create(prefix: &str) -> Self {
        use mysql_async::prelude::Queryable;
        let id = Uuid::new_v4().simple().to_string();
        let name = format!("{prefix}_{id}");
        let user = format!("mh_{}", &id[..16]);
        let password = Uuid::new_v4().simple().to_string();
        let opts = mysql_async::Opts::from_url(&mysql_admin_url())
            .expect("MH_TEST_MYSQL_URL is a mysql:// URL");
        let (host, port) = (opts.ip_or_hostname().to_owned(), opts.tcp_port());
        let mut admin = mysql_async::Conn::new(opts)
            .await
            .expect("test MariaDB server answers (is it running on 127.0.0.1:3306?)");
        for statement in [
            format!("CREATE DATABASE `{name}`"),
            format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"),
            format!("GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'%'"),
        ] {
            admin
                .query_drop(&statement)
                .await
                .expect("create test MariaDB database and user");
        }
        let _ = admin.disconnect().await;
        TestMysqlDatabase {
            name,
            user,
            password,
            host,
            port,
        }
    }

    async fn connect(&self) -> mysql_async::Conn {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.as_str())
            .tcp_port(self.port)
            .user(Some(self.user.as_str()))
            .pass(Some(self.password.as_str()))
            .db_name(Some(self.name.as_str()))
            .prefer_socket(false);
        mysql_async::Conn::new(opts)
            .await
            .expect("the test database's user connects")
    }

    /// Runs `sql` in the database as its dedicated user.
    pub async fn run(&self, sql: &str) {
        use mysql_async::prelude::Queryable;
        let mut conn = self.connect().await;
        conn.query_drop(sql).await.expect("test SQL runs");
        let _ = conn.disconnect().await;
    }

    /// The number `sql` (a query such as `SELECT COUNT(*) …`) answers, as
    /// the database's dedicated user.
    pub async fn number(&self, sql: &str) -> i64 {
        use mysql_async::prelude::Queryable;
        let mut conn = self.connect().await;
        let value: Option<i64> = conn.query_first(sql).await.expect("test query runs");
        let _ = conn.disconnect().await;
        value.expect("the query answers a row")
    }
}

impl Drop for TestMysqlDatabase {
    fn drop(&mut self) {
        let (name, user) = (self.name.clone(), self.user.clone());
        // Drop runs outside async context; use a small runtime of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                use mysql_async::prelude::Queryable;
                let mut admin = mysql_async::Conn::from_url(mysql_admin_url()).await.ok()?;
                let _ = admin
                    .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                    .await;
                let _ = admin
                    .query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
                    .await;
                admin.disconnect().await.ok()
            })
        })
        .join();
    }
}

/// Polls `check` every 20 ms until it yields a value, or panics with `what`
/// after `deadline`. The way tests wait: on a condition, never a fixed sleep.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= until {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A PostgreSQL server of a test's own, started from the distribution's
/// binaries in a temporary directory: for faults that must not touch the
/// shared server (a restart, password authentication). Stopped and removed
/// when dropped.
///
/// The binaries are taken from `MH_TEST_PG_BIN` or else the newest
/// `/usr/lib/postgresql/<major>/bin`. Run as root, the server runs as the
/// `postgres` user (through `runuser`), which owns the directory. The
/// methods block while `pg_ctl` works; they are meant for test set-up and
/// for the fault itself.
pub struct TestPgInstance {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    /// The TCP port the server listens on, on 127.0.0.1.
    pub port: u16,
    password: Option<String>,
}

impl TestPgInstance {
    /// A server that trusts every local connection, like the shared one.
    pub fn start() -> Self {
        Self::init(None)
    }

    /// A server whose TCP connections must authenticate with a password
    /// (scram-sha-256). The superuser `postgres` has `password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::init(Some(password.to_owned()))
    }

    fn init(password: Option<String>) -> Self {
        let bin = pg_bin_dir();
        let dir = std::env::temp_dir().join(format!("mh-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the test server's directory");
        let mut instance = TestPgInstance {
            dir,
            bin,
            port: 0,
            password,
        };
        let mut initdb = instance.pg_command("initdb");
        initdb.arg("-D").arg(instance.data_dir()).args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--no-sync",
        ]);
        if let Some(password) = &instance.password {
            let file = instance.dir.join("pwfile");
            std::fs::write(&file, password).expect("write the superuser's password file");
            initdb
                .arg("--auth-host=scram-sha-256")
                .arg("--pwfile")
                .arg(file);
        } else {
            initdb.arg("--auth-host=trust");
        }
        if running_as_root() {
            let chown = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&instance.dir)
                .status()
                .expect("run chown");
            assert!(chown.success(), "chown of the test server's directory");
        }
        instance.run_checked(initdb, "initdb");
        // Another process may take the free port between our probe and the
        // server's bind: try a few.
        for attempt in 1..=3 {
            instance.port = free_port();
            let mut start = instance.pg_ctl();
            start.arg("start").args(instance.server_options());
            let output = start.output().expect("run pg_ctl start");
            if output.status.success() {
                return instance;
            }
            if attempt == 3 {
                panic!(
                    "pg_ctl start failed: {}{}\nserver log:\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                    instance.server_log()
                );
            }
        }
        unreachable!()
    }

    /// The superuser's URL for database `database`, over TCP.
    pub fn url(&self, database: &str) -> String {
        match &self.password {
            Some(password) => format!(
                "postgres://postgres:{password}@127.0.0.1:{}/{database}",
                self.port
            ),
            None => format!("postgres://postgres@127.0.0.1:{}/{database}", self.port),
        }
    }

    /// The superuser's URL for the `postgres` database.
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// `pg_ctl restart -m fast`: every session is cut, the server is down
    /// for a moment and comes back with the same data and port. Returns
    /// once it accepts connections again.
    pub fn restart(&self) {
        let mut restart = self.pg_ctl();
        restart
            .arg("restart")
            .args(["-m", "fast"])
            .args(self.server_options());
        self.run_checked(restart, "pg_ctl restart");
    }

    /// The server's own log, for a failing test's message.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.join("data")
    }

    fn server_options(&self) -> Vec<std::ffi::OsString> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        vec!["-o".into(), options.into()]
    }

    fn pg_ctl(&self) -> std::process::Command {
        let mut command = self.pg_command("pg_ctl");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60"]);
        command
    }

    /// `program` of the server's binaries, as the `postgres` user when root.
    fn pg_command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if running_as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            std::process::Command::new(path)
        }
    }

    fn run_checked(&self, mut command: std::process::Command, what: &str) {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        assert!(
            output.status.success(),
            "{what} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server_log()
        );
    }
}

impl Drop for TestPgInstance {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let mut stop = self.pg_ctl();
            stop.arg("stop").args(["-m", "immediate"]);
            let _ = stop.output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A TCP port on 127.0.0.1 that nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe a free port")
        .port()
}

/// `MH_TEST_PG_BIN`, or the newest `/usr/lib/postgresql/<major>/bin`.
fn pg_bin_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("MH_TEST_PG_BIN") {
        return dir.into();
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries: install postgresql or set MH_TEST_PG_BIN \
             to the directory holding initdb and pg_ctl"
        ),
    }
}
