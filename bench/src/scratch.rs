//! Throw-away databases with unique names on the local servers, dropped by
//! [`Scratch::drop_all`] when the benchmark is over (also after a failure).

use std::sync::Mutex;

use anyhow::Context as _;
use mysql_async::prelude::Queryable;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Where the servers are.
#[derive(Debug, Clone)]
pub struct Servers {
    /// An administrative PostgreSQL URL (any database; `postgres` by default).
    pub pg_url: String,
    /// An administrative MariaDB/MySQL URL without a database.
    pub mysql_url: String,
}

impl Servers {
    /// `pg_url` with its database name replaced.
    pub fn pg_database_url(&self, database: &str) -> String {
        let (base, query) = match self.pg_url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (self.pg_url.as_str(), None),
        };
        let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
        match query {
            Some(q) => format!("{base}/{database}?{q}"),
            None => format!("{base}/{database}"),
        }
    }

    pub fn pg(&self) -> Endpoint {
        endpoint(&self.pg_url, 5432, "postgres")
    }

    pub fn mysql(&self) -> Endpoint {
        endpoint(&self.mysql_url, 3306, "root")
    }

    pub async fn pg_admin(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.pg_url)
            .await
            .with_context(|| format!("PostgreSQL does not answer at {}", redact(&self.pg_url)))
    }

    pub async fn mysql_admin(&self) -> anyhow::Result<mysql_async::Conn> {
        let opts = mysql_async::Opts::from_url(&self.mysql_url)
            .with_context(|| format!("not a mysql:// URL: {}", redact(&self.mysql_url)))?;
        mysql_async::Conn::new(opts)
            .await
            .with_context(|| format!("MariaDB does not answer at {}", redact(&self.mysql_url)))
    }
}

/// Host, port, user and password of a server, for clients and targets.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
}

fn endpoint(url: &str, default_port: u16, default_user: &str) -> Endpoint {
    match reqwest::Url::parse(url) {
        Ok(u) => Endpoint {
            host: u.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: u.port().unwrap_or(default_port),
            user: if u.username().is_empty() {
                default_user.to_owned()
            } else {
                u.username().to_owned()
            },
            password: u.password().map(str::to_owned),
        },
        Err(_) => Endpoint {
            host: "127.0.0.1".into(),
            port: default_port,
            user: default_user.into(),
            password: None,
        },
    }
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Every database this process created, so that all are dropped at the end.
pub struct Scratch {
    pub servers: Servers,
    /// Unique per bench process; every database name starts with it.
    pub prefix: String,
    /// Experiment: tool databases get `synchronous_commit = off`.
    pub tool_async_commit: bool,
    pg: Mutex<Vec<String>>,
    mysql: Mutex<Vec<String>>,
}

impl Scratch {
    pub fn new(servers: Servers) -> Scratch {
        let id = Uuid::new_v4().simple().to_string();
        Scratch {
            servers,
            prefix: format!("mh_bench_{}", &id[..12]),
            tool_async_commit: false,
            pg: Mutex::new(Vec::new()),
            mysql: Mutex::new(Vec::new()),
        }
    }

    fn name(&self, label: &str) -> String {
        let id = Uuid::new_v4().simple().to_string();
        format!("{}_{label}_{}", self.prefix, &id[..8])
    }

    /// Creates one fresh PostgreSQL database and returns its name.
    pub async fn pg_database(&self, label: &str) -> anyhow::Result<String> {
        Ok(self.pg_databases(label, 1).await?.remove(0))
    }

    /// Creates `n` fresh PostgreSQL databases (on one admin connection).
    pub async fn pg_databases(&self, label: &str, n: usize) -> anyhow::Result<Vec<String>> {
        let mut admin = self.servers.pg_admin().await?;
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.name(label);
            // Registered first: a half-made database is still dropped.
            self.pg.lock().unwrap().push(name.clone());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut admin)
                .await
                .with_context(|| format!("creating PostgreSQL database {name}"))?;
            names.push(name);
        }
        // Each new database is a copy of the template written to the WAL;
        // flushed now, the checkpoint they would otherwise cause does not
        // run (spread over minutes) beside what is measured next.
        if let Err(err) = sqlx::query("CHECKPOINT").execute(&mut admin).await {
            eprintln!("bench: CHECKPOINT after creating databases failed: {err}");
        }
        let _ = admin.close().await;
        Ok(names)
    }

    /// Creates `n` fresh MariaDB/MySQL databases.
    pub async fn mysql_databases(&self, label: &str, n: usize) -> anyhow::Result<Vec<String>> {
        let mut admin = self.servers.mysql_admin().await?;
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.name(label);
            self.mysql.lock().unwrap().push(name.clone());
            admin
                .query_drop(format!("CREATE DATABASE `{name}`"))
                .await
                .with_context(|| format!("creating MariaDB database {name}"))?;
            names.push(name);
        }
        let _ = admin.disconnect().await;
        Ok(names)
    }

    pub async fn mysql_database(&self, label: &str) -> anyhow::Result<String> {
        Ok(self.mysql_databases(label, 1).await?.remove(0))
    }

    /// Drops every database created so far; reports how many could not be.
    pub async fn drop_all(&self) -> usize {
        let pg: Vec<String> = std::mem::take(&mut *self.pg.lock().unwrap());
        let mysql: Vec<String> = std::mem::take(&mut *self.mysql.lock().unwrap());
        let mut failed = 0;
        if !pg.is_empty() {
            match self.servers.pg_admin().await {
                Ok(mut admin) => {
                    for name in &pg {
                        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                        if dropped.is_err() {
                            failed += 1;
                        }
                    }
                }
                Err(_) => failed += pg.len(),
            }
        }
        if !mysql.is_empty() {
            match self.servers.mysql_admin().await {
                Ok(mut admin) => {
                    for name in &mysql {
                        if admin
                            .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                            .await
                            .is_err()
                        {
                            failed += 1;
                        }
                    }
                    let _ = admin.disconnect().await;
                }
                Err(_) => failed += mysql.len(),
            }
        }
        failed
    }
}
