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

    /// Runs `sql` in the database as its dedicated user.
    pub async fn run(&self, sql: &str) {
        use mysql_async::prelude::Queryable;
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.as_str())
            .tcp_port(self.port)
            .user(Some(self.user.as_str()))
            .pass(Some(self.password.as_str()))
            .db_name(Some(self.name.as_str()))
            .prefer_socket(false);
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .expect("the test database's user connects");
        conn.query_drop(sql).await.expect("test SQL runs");
        let _ = conn.disconnect().await;
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
