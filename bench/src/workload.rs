//! The workloads (golang-migrate folders) and the floors: the same SQL
//! through plain `psql` / `mysql` sessions, and through dbmate.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context as _, bail};
use tokio::{process::Command, sync::Semaphore, task::JoinSet};

use crate::scratch::Endpoint;

/// One migration of a golang-migrate folder.
#[derive(Debug, Clone)]
pub struct Migration {
    /// As in the file name (`001`, `20150100000001000000`).
    pub version: String,
    pub name: String,
    pub up: String,
    /// `None`: no down file, so the version cannot be rolled back.
    pub down: Option<String>,
}

impl Migration {
    /// The version as the hub stores it (leading zeros dropped).
    pub fn hub_version(&self) -> String {
        let v = self.version.trim_start_matches('0');
        if v.is_empty() { "0".into() } else { v.into() }
    }
}

/// Reads `<version>_<name>.up.sql` / `.down.sql` pairs, in version order.
pub fn golang_migrate(dir: &Path) -> anyhow::Result<Vec<Migration>> {
    let mut by_version: HashMap<String, Migration> = HashMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let (stem, up) = if let Some(s) = file.strip_suffix(".up.sql") {
            (s, true)
        } else if let Some(s) = file.strip_suffix(".down.sql") {
            (s, false)
        } else {
            continue;
        };
        let Some((version, name)) = stem.split_once('_') else {
            bail!("{}: not a golang-migrate file name", path.display());
        };
        let sql = std::fs::read_to_string(&path)?;
        let m = by_version
            .entry(version.to_owned())
            .or_insert_with(|| Migration {
                version: version.to_owned(),
                name: name.to_owned(),
                up: String::new(),
                down: None,
            });
        if up {
            m.up = sql;
        } else {
            m.down = Some(sql);
        }
    }
    let mut out: Vec<Migration> = by_version.into_values().collect();
    out.sort_by_key(|m| version_key(&m.version));
    if out.is_empty() {
        bail!("{} holds no golang-migrate migrations", dir.display());
    }
    Ok(out)
}

fn version_key(v: &str) -> (usize, String) {
    let v = v.trim_start_matches('0');
    (v.len(), v.to_owned())
}

/// The downs a `down` run to the oldest possible version performs: from the
/// newest version down to just above the newest migration that has no down
/// file (it cannot be rolled back) or is `fails_at` (whose down script is
/// known to fail for every tool). An empty down file rolls back as a no-op,
/// as golang-migrate and dbmate run it. Returns (the run's target version,
/// the migrations newest first).
pub fn supported_downs(
    migrations: &[Migration],
    fails_at: Option<&str>,
) -> (String, Vec<Migration>) {
    let stop = migrations
        .iter()
        .rposition(|m| m.down.is_none() || fails_at == Some(m.hub_version().as_str()))
        .map(|i| i + 1)
        .unwrap_or(0);
    let target = if stop == 0 {
        "0".to_owned()
    } else {
        migrations[stop - 1].hub_version()
    };
    let mut downs = migrations[stop..].to_vec();
    downs.reverse();
    (target, downs)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// A `psql` script: each transactional migration between `BEGIN;` and
/// `COMMIT;`, the others as they are (psql sends statements one by one).
pub fn psql_script(
    migrations: &[Migration],
    direction: Direction,
    transactional: &dyn Fn(&Migration) -> bool,
) -> String {
    let mut script = String::new();
    for m in migrations {
        let sql = match direction {
            Direction::Up => &m.up,
            Direction::Down => m.down.as_deref().unwrap_or(""),
        };
        if transactional(m) {
            script.push_str("BEGIN;\n");
            script.push_str(sql);
            script.push_str("\nCOMMIT;\n");
        } else {
            script.push_str(sql);
            script.push('\n');
        }
    }
    script
}

/// A `mysql` script: the session settings, then each migration.
pub fn mysql_script(migrations: &[Migration], direction: Direction, session: &str) -> String {
    let mut script = String::new();
    if !session.trim().is_empty() {
        script.push_str(session.trim());
        script.push('\n');
    }
    for m in migrations {
        script.push_str(match direction {
            Direction::Up => &m.up,
            Direction::Down => m.down.as_deref().unwrap_or(""),
        });
        script.push('\n');
    }
    script
}

/// Writes `content` to a fresh file under `dir` and returns its path.
pub fn write_script(dir: &Path, name: &str, content: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs `script` in one `psql` session on `database`, stopping at the first error.
pub async fn psql(server: &Endpoint, database: &str, script: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        &server.host,
        "-p",
    ])
    .arg(server.port.to_string())
    .args(["-U", &server.user, "-d", database, "-f"])
    .arg(script)
    .env("PGOPTIONS", "--client-min-messages=warning");
    if let Some(p) = &server.password {
        cmd.env("PGPASSWORD", p);
    }
    run(cmd, None, &format!("psql on {database}")).await
}

/// Runs `script` in one `mysql` session on `database`, stopping at the first error.
pub async fn mysql(server: &Endpoint, database: &str, script: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("mysql");
    cmd.args(["--batch", "--silent", "-h", &server.host, "-P"])
        .arg(server.port.to_string())
        .args(["-u", &server.user]);
    if let Some(p) = &server.password {
        cmd.env("MYSQL_PWD", p);
    }
    cmd.arg(database);
    run(cmd, Some(script), &format!("mysql on {database}")).await
}

async fn run(mut cmd: Command, stdin: Option<&Path>, what: &str) -> anyhow::Result<()> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    match stdin {
        Some(path) => {
            cmd.stdin(std::fs::File::open(path)?);
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    let out = cmd
        .output()
        .await
        .with_context(|| format!("{what}: cannot start the client"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{what} failed ({}): {}", out.status, err.trim());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub enum Client {
    Psql,
    Mysql,
}

/// Runs one script per database with at most `parallel` sessions at once;
/// returns the wall time in seconds.
pub async fn fan_out(
    client: Client,
    server: &Endpoint,
    databases: &[String],
    script: &Path,
    parallel: usize,
) -> anyhow::Result<f64> {
    let gate = Arc::new(Semaphore::new(parallel));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for db in databases {
        let (gate, server, db, script) = (
            gate.clone(),
            server.clone(),
            db.clone(),
            script.to_path_buf(),
        );
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            match client {
                Client::Psql => psql(&server, &db, &script).await,
                Client::Mysql => mysql(&server, &db, &script).await,
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// dbmate, installed by npm under the bench's folder (`bench/node_modules`).
pub struct Dbmate {
    pub binary: PathBuf,
    pub url: String,
    pub dir: PathBuf,
}

impl Dbmate {
    /// Writes the migrations in dbmate's layout (`<version>_<name>.sql` with
    /// `-- migrate:up` / `-- migrate:down` sections) into `dir`.
    pub fn prepare(
        binary: PathBuf,
        url: String,
        dir: PathBuf,
        migrations: &[Migration],
        transactional: &dyn Fn(&Migration) -> bool,
    ) -> anyhow::Result<Dbmate> {
        std::fs::create_dir_all(&dir)?;
        for m in migrations {
            let option = if transactional(m) {
                ""
            } else {
                " transaction:false"
            };
            let mut content = format!("-- migrate:up{option}\n{}\n", m.up);
            if let Some(down) = &m.down {
                content.push_str(&format!("\n-- migrate:down{option}\n{down}\n"));
            }
            std::fs::write(dir.join(format!("{}_{}.sql", m.version, m.name)), content)?;
        }
        Ok(Dbmate { binary, url, dir })
    }

    async fn command(&self, action: &str) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--url")
            .arg(&self.url)
            .arg("--migrations-dir")
            .arg(&self.dir)
            .args(["--no-dump-schema", action]);
        run(cmd, None, &format!("dbmate {action}")).await
    }

    /// `dbmate up`; seconds.
    pub async fn up(&self) -> anyhow::Result<f64> {
        let started = Instant::now();
        self.command("up").await?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// `dbmate rollback` `times` times (one migration per call); seconds.
    pub async fn rollback(&self, times: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        for _ in 0..times {
            self.command("rollback").await?;
        }
        Ok(started.elapsed().as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(version: &str, down: Option<&str>) -> Migration {
        Migration {
            version: version.into(),
            name: "x".into(),
            up: "SELECT 1;".into(),
            down: down.map(Into::into),
        }
    }

    #[test]
    fn downs_stop_above_the_newest_missing_or_failing_down() {
        let ms = [
            m("001", Some("a;")),
            m("002", None),
            m("003", Some("  \n")),
            m("010", Some("c;")),
        ];
        let (target, downs) = supported_downs(&ms, None);
        assert_eq!(target, "2");
        let versions: Vec<_> = downs.iter().map(|m| m.version.as_str()).collect();
        assert_eq!(versions, ["010", "003"], "an empty down file rolls back");
        let (target, downs) = supported_downs(&ms[2..], None);
        assert_eq!((target.as_str(), downs.len()), ("0", 2));
        let (target, downs) = supported_downs(&ms, Some("3"));
        assert_eq!((target.as_str(), downs.len()), ("3", 1));
    }

    #[test]
    fn psql_script_wraps_only_transactional_migrations() {
        let ms = [m("1", None), m("2", None)];
        let script = psql_script(&ms, Direction::Up, &|m| m.version == "1");
        assert_eq!(script, "BEGIN;\nSELECT 1;\nCOMMIT;\nSELECT 1;\n");
    }
}
