//! The pre-flight: before a target's first migration and before every
//! retry, the worker looks for sessions that would block the migration and
//! waits (up to the policy's `preflight_wait_ms`) for them to go, saying on
//! the run page whom it waits for. It then goes on either way — the short
//! lock budget bounds what a remaining blocker can cost — and a failure
//! names the blockers it last saw.
//!
//! - PostgreSQL: sessions of the target's database (`pg_stat_activity`)
//!   holding a lock on a table the migration names (`pg_locks`; the tables
//!   as PostgreSQL's parser reads the script) in a transaction already open
//!   longer than the lock budget — the short queries of a busy table come
//!   and go and are not waited for — and any transaction open longer than
//!   `blocker_age_ms`; `idle in transaction` included.
//! - MySQL/MariaDB: transactions (`information_schema.innodb_trx`) of
//!   sessions on the target's database (`PROCESSLIST`) open longer than
//!   `blocker_age_ms`. Metadata locks are not listed by a default MariaDB;
//!   a transaction that read the table is found by its age.

use std::time::Duration;

use common::domain::blockers::{Blocker, describe_all, to_terminate};
use mysql_async::{Conn, prelude::Queryable};
use tokio::time::Instant;
use tokio_postgres::Client;

use super::Job;
use crate::report::Reporter;

/// How often a waiting pre-flight looks again.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// Most blockers read per look.
const MOST: i64 = 20;

/// Whether another session of the target's database has had a
/// transaction open for at least `age_ms`: every blocker has.
async fn any_open_since(client: &Client, age_ms: i64) -> Result<bool, tokio_postgres::Error> {
    let rows = client
        .simple_query(&format!(
            "SELECT 1 FROM pg_stat_get_activity(NULL) s
             WHERE s.datid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
               AND s.pid <> pg_backend_pid()
               AND s.xact_start < clock_timestamp() - make_interval(secs => {age_ms}::float8 / 1000)
             LIMIT 1"
        ))
        .await?;
    Ok(rows
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))))
}

/// The blockers of a PostgreSQL target for a migration naming `tables`.
pub async fn postgres(
    client: &Client,
    tables: &[String],
    blocker_age_ms: i64,
    lock_budget_ms: i64,
) -> Result<Vec<Blocker>, tokio_postgres::Error> {
    // Without a budget (0: no limit) a lock holder counts from the age limit.
    let holder_age_ms = if lock_budget_ms > 0 {
        lock_budget_ms.min(blocker_age_ms)
    } else {
        blocker_age_ms
    };
    // Nearly always nobody qualifies: a small look at the server's sessions
    // (one round trip, few catalogs for a new session to load) says so,
    // before the full query with its views and lock table.
    if !any_open_since(client, holder_age_ms).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT a.pid::bigint, COALESCE(a.usename::text, ''), COALESCE(a.application_name, ''),
                    COALESCE(a.state, ''),
                    (extract(epoch FROM clock_timestamp() - a.xact_start) * 1000)::bigint,
                    COALESCE(a.query, '')
             FROM pg_stat_activity a
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
               AND a.xact_start IS NOT NULL
               AND (a.xact_start < clock_timestamp() - make_interval(secs => $1::float8 / 1000)
                    OR (a.xact_start < clock_timestamp() - make_interval(secs => $4::float8 / 1000)
                        AND EXISTS (SELECT 1 FROM pg_locks l
                                    WHERE l.pid = a.pid AND l.granted AND l.locktype = 'relation'
                                      AND l.relation IN (SELECT to_regclass(t)::oid FROM unnest($2::text[]) AS t))))
             ORDER BY a.xact_start LIMIT $3",
            &[&(blocker_age_ms as f64), &tables, &MOST, &(holder_age_ms as f64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Blocker {
            pid: r.get(0),
            user: r.get(1),
            application: r.get(2),
            state: r.get(3),
            transaction_ms: r.get(4),
            query: r.get(5),
        })
        .collect())
}

/// The blockers of a MySQL/MariaDB target.
pub async fn mysql(
    conn: &mut Conn,
    blocker_age_ms: i64,
) -> Result<Vec<Blocker>, mysql_async::Error> {
    let rows: Vec<(i64, String, String, String, i64, String)> = conn
        .exec(
            "SELECT p.ID, COALESCE(p.USER, ''), COALESCE(p.HOST, ''), COALESCE(p.COMMAND, ''),
                    TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) DIV 1000,
                    COALESCE(p.INFO, t.trx_query, '')
             FROM information_schema.INNODB_TRX t
             JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
             WHERE p.ID <> CONNECTION_ID() AND p.DB = DATABASE()
               AND TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) DIV 1000 >= ?
             ORDER BY t.trx_started LIMIT 20",
            (blocker_age_ms,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(pid, user, host, command, ms, query)| Blocker {
            pid,
            user,
            application: host,
            // A session asleep with a transaction open is idle in it.
            state: if command == "Sleep" {
                "idle in transaction".into()
            } else {
                command.to_lowercase()
            },
            transaction_ms: Some(ms),
            query,
        })
        .collect())
}

/// Terminates a PostgreSQL session; whether it was still there to end.
pub async fn terminate_postgres(client: &Client, pid: i64) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT pg_terminate_backend($1::int)", &[&(pid as i32)])
        .await?;
    Ok(row.get(0))
}

/// Ends a MySQL/MariaDB connection.
pub async fn terminate_mysql(conn: &mut Conn, id: i64) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!("KILL CONNECTION {id}")).await
}

/// The blockers an environment that opted in terminates (see
/// [`common::domain::blockers::to_terminate`]), after a wait that ran out.
pub fn victims<'b>(job: &Job<'_>, left: &'b [Blocker], look_once: bool) -> Vec<&'b Blocker> {
    match job.terminate_after_ms {
        Some(after) if !look_once => to_terminate(left, after),
        _ => Vec::new(),
    }
}

/// After the victims' terminations (`Ok(true)`: ended by the hub,
/// `Ok(false)`: gone already, `Err`: refused, with why): audits each one the
/// hub ended, logs each refusal, and returns the blockers left.
pub async fn settle(
    reporter: &Reporter,
    left: Vec<Blocker>,
    outcomes: Vec<(i64, Result<bool, String>)>,
) -> Vec<Blocker> {
    let mut ended = Vec::new();
    for (pid, outcome) in outcomes {
        match outcome {
            Ok(true) => {
                if let Some(victim) = left.iter().find(|b| b.pid == pid) {
                    reporter.blocker_terminated(&victim.describe()).await;
                }
                ended.push(pid);
            }
            Ok(false) => ended.push(pid),
            Err(error) => tracing::warn!(%error, pid, "could not terminate a blocker"),
        }
    }
    left.into_iter()
        .filter(|b| !ended.contains(&b.pid))
        .collect()
}

/// One pre-flight's wait: looks until no blocker is left or the policy's
/// wait is over, saying on the run page whom it waits for.
pub struct Wait<'a> {
    reporter: &'a Reporter,
    until: Instant,
    said: Option<String>,
}

impl<'a> Wait<'a> {
    /// A wait of the policy's length; `look_once` only looks.
    pub fn new(job: &Job<'_>, reporter: &'a Reporter, look_once: bool) -> Self {
        let wait = if look_once {
            Duration::ZERO
        } else {
            job.preflight_wait()
        };
        Wait {
            reporter,
            until: Instant::now() + wait,
            said: None,
        }
    }

    /// After a look that found `blockers`: `true` to look again (after a
    /// pause), `false` to go on.
    pub async fn again(&mut self, blockers: &[Blocker]) -> bool {
        if blockers.is_empty() || Instant::now() >= self.until {
            if self.said.take().is_some() && blockers.is_empty() {
                self.reporter.waiting(None, false).await;
            }
            return false;
        }
        let note = format!("waiting for {}", describe_all(blockers));
        if self.said.as_deref() != Some(note.as_str()) {
            self.reporter.waiting(Some(&note), false).await;
            self.said = Some(note);
        }
        tokio::time::sleep(LOOK_EVERY.min(self.until - Instant::now())).await;
        true
    }
}
