//! Baselining a target: one session that holds the target lock while the
//! hub reads another tool's history table and writes its own
//! `migrate_hub_history` rows, so a migration can never run in between
//! (workers take the same lock, [`super::lock`], before they read the
//! history).
//!
//! Every message is in the driver's or server's words, prefixed with what
//! was being done, and never contains the password.

use std::time::Duration;

use mysql_async::{Conn, TxOpts, prelude::Queryable};
use tokio_postgres::Client;

use super::{
    ConnectError, Endpoint, HISTORY_TABLE, Password, bounded,
    lock::{self, LockError},
    mysql, postgres, redact,
};
use crate::domain::{
    Engine,
    baseline::{ExternalHistory, FlywayRow, GolangMigrateRow, GooseRow, Source, TableName},
};

/// Why a baseline could not do its part on the target.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// No session: network, TLS, authentication or session settings.
    #[error("{0}")]
    Unreachable(String),
    /// A migration holds the target lock.
    #[error("{0}")]
    Busy(String),
    /// The tool's history table is not on the target.
    #[error("{0}")]
    TableNotFound(String),
    /// A statement failed on the target.
    #[error("{0}")]
    Target(String),
}

impl From<LockError> for AdoptError {
    fn from(err: LockError) -> Self {
        let message = err.to_string();
        match err {
            LockError::Busy { .. } => AdoptError::Busy(message),
            LockError::Target(_) => AdoptError::Target(message),
        }
    }
}

/// One version to record in the target's `migrate_hub_history`.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub version: String,
    pub checksum: String,
    pub name: String,
}

enum Session {
    Postgres(Client),
    Mysql { conn: Conn, database: String },
}

/// A session on a target, holding its lock when opened with `lock`.
pub struct LockedTarget {
    session: Session,
    locked: bool,
    wait: Duration,
    password: Option<Password>,
    place: String,
}

impl LockedTarget {
    /// Connects (within `wait`) and, with `lock`, takes the target lock,
    /// waiting at most `wait` for a running migration to release it.
    pub async fn open(
        engine: Engine,
        target: &Endpoint,
        password: Option<&Password>,
        wait: Duration,
        lock: bool,
    ) -> Result<Self, AdoptError> {
        let place = target.describe();
        let unreachable = |e: ConnectError| {
            AdoptError::Unreachable(redact(
                &format!("could not connect to {place}: {e}"),
                password,
            ))
        };
        let session = match engine {
            Engine::Postgres => {
                let client = postgres::connect(target, password, wait)
                    .await
                    .map_err(unreachable)?;
                if lock {
                    lock::acquire_pg(&client, wait)
                        .await
                        .map_err(AdoptError::from)?;
                }
                Session::Postgres(client)
            }
            Engine::Mysql => {
                let mut conn = mysql::connect(target, password, wait)
                    .await
                    .map_err(unreachable)?;
                if lock && let Err(e) = lock::acquire_mysql(&mut conn, &target.database, wait).await
                {
                    let _ = conn.disconnect().await;
                    return Err(e.into());
                }
                Session::Mysql {
                    conn,
                    database: target.database.clone(),
                }
            }
        };
        Ok(LockedTarget {
            session,
            locked: lock,
            wait,
            password: password.cloned(),
            place,
        })
    }

    /// `what` failed with the server's `message`, without the password.
    fn failed(&self, what: &str, message: String) -> AdoptError {
        AdoptError::Target(redact(
            &format!("could not {what} on {}: {message}", self.place),
            self.password.as_ref(),
        ))
    }

    /// How many rows the target's `migrate_hub_history` has (0 without the
    /// table).
    pub async fn history_rows(&mut self) -> Result<usize, AdoptError> {
        let wait = self.wait;
        let result = match &mut self.session {
            Session::Postgres(client) => {
                bounded(wait, async {
                    let exists: bool = client
                        .query_one(
                            &format!("SELECT to_regclass('{HISTORY_TABLE}') IS NOT NULL"),
                            &[],
                        )
                        .await
                        .map_err(pg_error)?
                        .get(0);
                    if !exists {
                        return Ok(0);
                    }
                    let rows: i64 = client
                        .query_one(&format!("SELECT count(*) FROM {HISTORY_TABLE}"), &[])
                        .await
                        .map_err(pg_error)?
                        .get(0);
                    Ok(rows)
                })
                .await
            }
            Session::Mysql { conn, database } => {
                let table = mysql::history_table(database);
                bounded(wait, async {
                    let exists: Option<i64> = conn
                        .query_first(format!(
                            "SELECT COUNT(*) FROM information_schema.tables \
                             WHERE table_schema = DATABASE() AND table_name = '{HISTORY_TABLE}'"
                        ))
                        .await
                        .map_err(my_error)?;
                    if exists.unwrap_or(0) == 0 {
                        return Ok(0);
                    }
                    let rows: Option<i64> = conn
                        .query_first(format!("SELECT COUNT(*) FROM {table}"))
                        .await
                        .map_err(my_error)?;
                    Ok(rows.unwrap_or(0))
                })
                .await
            }
        };
        result
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .map_err(|e| self.failed(&format!("read {HISTORY_TABLE}"), e.to_string()))
    }

    /// Reads `source`'s history table `table`.
    pub async fn read(
        &mut self,
        source: Source,
        table: &TableName,
    ) -> Result<ExternalHistory, AdoptError> {
        let wait = self.wait;
        let exists = match &mut self.session {
            Session::Postgres(client) => {
                bounded(wait, async {
                    let row = client
                        .query_one(
                            "SELECT to_regclass($1::text) IS NOT NULL",
                            &[&table.quoted_pg()],
                        )
                        .await
                        .map_err(pg_error)?;
                    Ok(row.get::<_, bool>(0))
                })
                .await
            }
            Session::Mysql { conn, .. } => {
                bounded(wait, async {
                    let found: Option<i64> = conn
                        .exec_first(
                            "SELECT COUNT(*) FROM information_schema.tables \
                             WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
                            (table.qualifier(), table.name()),
                        )
                        .await
                        .map_err(my_error)?;
                    Ok(found.unwrap_or(0) > 0)
                })
                .await
            }
        }
        .map_err(|e| self.failed(&format!("look for {table}"), e.to_string()))?;
        if !exists {
            return Err(AdoptError::TableNotFound(format!(
                "there is no table {table} on {} to read {source}'s history from",
                self.place
            )));
        }
        let history = match &mut self.session {
            Session::Postgres(client) => {
                bounded(wait, read_pg(client, source, &table.quoted_pg())).await
            }
            Session::Mysql { conn, .. } => {
                bounded(wait, read_mysql(conn, source, &table.quoted_mysql())).await
            }
        };
        history.map_err(|e| self.failed(&format!("read {table}"), e.to_string()))
    }

    /// Creates the target's `migrate_hub_history` if needed (with the
    /// worker's DDL) and records `entries` in it, all or nothing.
    pub async fn record(&mut self, entries: &[HistoryEntry]) -> Result<(), AdoptError> {
        let wait = self.wait;
        let versions: Vec<&str> = entries.iter().map(|e| e.version.as_str()).collect();
        let checksums: Vec<&str> = entries.iter().map(|e| e.checksum.as_str()).collect();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let result = match &mut self.session {
            Session::Postgres(client) => {
                bounded(wait, async {
                    client
                        .batch_execute(postgres::HISTORY_DDL)
                        .await
                        .map_err(pg_error)?;
                    // One statement: every row or none.
                    client
                        .execute(
                            &format!(
                                "INSERT INTO {HISTORY_TABLE} (version, checksum, name) \
                                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
                            ),
                            &[&versions, &checksums, &names],
                        )
                        .await
                        .map_err(pg_error)?;
                    Ok(())
                })
                .await
            }
            Session::Mysql { conn, database } => {
                let table = mysql::history_table(database);
                bounded(wait, async {
                    // DDL commits implicitly, so it comes before the transaction.
                    conn.query_drop(mysql::history_ddl(database))
                        .await
                        .map_err(my_error)?;
                    let mut tx = conn
                        .start_transaction(TxOpts::default())
                        .await
                        .map_err(my_error)?;
                    tx.exec_batch(
                        format!("INSERT INTO {table} (version, checksum, name) VALUES (?, ?, ?)"),
                        entries
                            .iter()
                            .map(|e| (e.version.as_str(), e.checksum.as_str(), e.name.as_str())),
                    )
                    .await
                    .map_err(my_error)?;
                    tx.commit().await.map_err(my_error)
                })
                .await
            }
        };
        result.map_err(|e| self.failed(&format!("write {HISTORY_TABLE}"), e.to_string()))
    }

    /// Takes back what [`Self::record`] wrote, when the hub could not
    /// record its side. Best effort: the lock is still held, so no
    /// migration has seen the rows.
    pub async fn forget(&mut self, versions: &[String]) -> Result<(), AdoptError> {
        let wait = self.wait;
        let result = match &mut self.session {
            Session::Postgres(client) => {
                bounded(wait, async {
                    client
                        .execute(
                            &format!("DELETE FROM {HISTORY_TABLE} WHERE version = ANY($1)"),
                            &[&versions],
                        )
                        .await
                        .map(|_| ())
                        .map_err(pg_error)
                })
                .await
            }
            Session::Mysql { conn, database } => {
                let table = mysql::history_table(database);
                bounded(wait, async {
                    conn.exec_batch(
                        format!("DELETE FROM {table} WHERE version = ?"),
                        versions.iter().map(|v| (v.as_str(),)),
                    )
                    .await
                    .map_err(my_error)
                })
                .await
            }
        };
        result.map_err(|e| self.failed(&format!("clean up {HISTORY_TABLE}"), e.to_string()))
    }

    /// Releases the lock and ends the session.
    pub async fn close(self) {
        match self.session {
            Session::Postgres(client) => {
                if self.locked {
                    lock::release_pg(&client).await;
                }
            }
            Session::Mysql { mut conn, database } => {
                if self.locked {
                    lock::release_mysql(&mut conn, &database).await;
                }
                let _ = conn.disconnect().await;
            }
        }
    }
}

fn pg_error(e: tokio_postgres::Error) -> ConnectError {
    ConnectError::Driver(postgres::describe(&e))
}

fn my_error(e: mysql_async::Error) -> ConnectError {
    ConnectError::Driver(mysql::describe(&e))
}

/// Reads the tool's table on PostgreSQL. Columns are cast to the types the
/// tools use, so a table of another shape fails with the server's message
/// naming the missing column.
async fn read_pg(
    client: &Client,
    source: Source,
    table: &str,
) -> Result<ExternalHistory, ConnectError> {
    Ok(match source {
        Source::Flyway => ExternalHistory::Flyway(
            client
                .query(
                    &format!(
                        "SELECT installed_rank::bigint, version::text, description::text, \
                         type::text, success::boolean FROM {table}"
                    ),
                    &[],
                )
                .await
                .map_err(pg_error)?
                .iter()
                .map(|row| FlywayRow {
                    installed_rank: row.get(0),
                    version: row.get(1),
                    description: row.get::<_, Option<String>>(2).unwrap_or_default(),
                    kind: row.get::<_, Option<String>>(3).unwrap_or_default(),
                    success: row.get::<_, Option<bool>>(4).unwrap_or(false),
                })
                .collect(),
        ),
        Source::GolangMigrate => ExternalHistory::GolangMigrate(
            client
                .query(
                    &format!("SELECT version::bigint, dirty::boolean FROM {table}"),
                    &[],
                )
                .await
                .map_err(pg_error)?
                .iter()
                .map(|row| GolangMigrateRow {
                    version: row.get(0),
                    dirty: row.get(1),
                })
                .collect(),
        ),
        Source::Dbmate => ExternalHistory::Dbmate(
            client
                .query(&format!("SELECT version::text FROM {table}"), &[])
                .await
                .map_err(pg_error)?
                .iter()
                .map(|row| row.get(0))
                .collect(),
        ),
        Source::Goose => ExternalHistory::Goose(
            client
                .query(
                    &format!(
                        "SELECT id::bigint, version_id::bigint, is_applied::boolean FROM {table}"
                    ),
                    &[],
                )
                .await
                .map_err(pg_error)?
                .iter()
                .map(|row| GooseRow {
                    id: row.get(0),
                    version_id: row.get(1),
                    is_applied: row.get(2),
                })
                .collect(),
        ),
    })
}

/// `installed_rank, version, description, type, success` of a Flyway row.
type FlywayColumns = (i64, Option<String>, Option<String>, Option<String>, i64);

/// Reads the tool's table on MySQL/MariaDB (booleans are `tinyint(1)`).
async fn read_mysql(
    conn: &mut Conn,
    source: Source,
    table: &str,
) -> Result<ExternalHistory, ConnectError> {
    Ok(match source {
        Source::Flyway => {
            let rows: Vec<FlywayColumns> = conn
                .query(format!(
                    "SELECT CAST(installed_rank AS SIGNED), version, description, type, \
                     CAST(success AS SIGNED) FROM {table}"
                ))
                .await
                .map_err(my_error)?;
            ExternalHistory::Flyway(
                rows.into_iter()
                    .map(|(rank, version, description, kind, success)| FlywayRow {
                        installed_rank: rank,
                        version,
                        description: description.unwrap_or_default(),
                        kind: kind.unwrap_or_default(),
                        success: success != 0,
                    })
                    .collect(),
            )
        }
        Source::GolangMigrate => {
            let rows: Vec<(i64, i64)> = conn
                .query(format!(
                    "SELECT CAST(version AS SIGNED), CAST(dirty AS SIGNED) FROM {table}"
                ))
                .await
                .map_err(my_error)?;
            ExternalHistory::GolangMigrate(
                rows.into_iter()
                    .map(|(version, dirty)| GolangMigrateRow {
                        version,
                        dirty: dirty != 0,
                    })
                    .collect(),
            )
        }
        Source::Dbmate => ExternalHistory::Dbmate(
            conn.query(format!("SELECT CAST(version AS CHAR) FROM {table}"))
                .await
                .map_err(my_error)?,
        ),
        Source::Goose => {
            let rows: Vec<(i64, i64, i64)> = conn
                .query(format!(
                    "SELECT CAST(id AS SIGNED), CAST(version_id AS SIGNED), \
                     CAST(is_applied AS SIGNED) FROM {table}"
                ))
                .await
                .map_err(my_error)?;
            ExternalHistory::Goose(
                rows.into_iter()
                    .map(|(id, version_id, is_applied)| GooseRow {
                        id,
                        version_id,
                        is_applied: is_applied != 0,
                    })
                    .collect(),
            )
        }
    })
}
