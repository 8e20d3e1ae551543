//! The audit log: append-only and hash-chained.
//!
//! Each row's hash is SHA-256 over the previous row's hash and a canonical
//! rendering of the row, so changing, removing or reordering any row breaks
//! every hash after it. Appends lock the single `audit_head` row, which
//! serializes them (gap-free `seq`) only for the rest of the appending
//! transaction; callers therefore append last, just before commit. The
//! append is one statement that locks the head, hashes the row (SHA-256 in
//! the database, over the same bytes [`chain_hash`] reads) and moves the
//! head, so the lock is held for that statement and the commit alone.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// Who did it: a person (or their token), or the system itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User { id: Uuid, email: String },
    System(String),
}

impl Actor {
    pub fn system(name: &str) -> Self {
        Actor::System(name.to_owned())
    }
    fn id(&self) -> Option<Uuid> {
        match self {
            Actor::User { id, .. } => Some(*id),
            Actor::System(_) => None,
        }
    }
    fn label(&self) -> String {
        match self {
            Actor::User { email, .. } => email.clone(),
            Actor::System(name) => format!("system:{name}"),
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone)]
pub struct Entry {
    pub actor: Actor,
    pub action: &'static str,
    pub object_type: &'static str,
    pub object_id: String,
    pub project_id: Option<Uuid>,
    pub details: Value,
    pub ip: Option<String>,
}

impl Entry {
    pub fn new(
        actor: Actor,
        action: &'static str,
        object_type: &'static str,
        object_id: impl ToString,
    ) -> Self {
        Self {
            actor,
            action,
            object_type,
            object_id: object_id.to_string(),
            project_id: None,
            details: Value::Object(Default::default()),
            ip: None,
        }
    }
    pub fn project(mut self, project_id: Uuid) -> Self {
        self.project_id = Some(project_id);
        self
    }
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
    pub fn ip(mut self, ip: Option<String>) -> Self {
        self.ip = ip;
        self
    }
}

#[derive(Serialize, Clone, Copy)]
struct Canonical<'a> {
    seq: i64,
    at_micros: i128,
    actor_id: Option<Uuid>,
    actor: &'a str,
    action: &'a str,
    object_type: &'a str,
    object_id: &'a str,
    project_id: Option<Uuid>,
    details: &'a Value,
    ip: Option<&'a str>,
}

fn chain_hash(prev_hash: &str, row: &Canonical<'_>) -> String {
    // serde_json's Value keeps object keys sorted, so jsonb round trips
    // (which reorder keys) hash the same.
    let body = serde_json::to_vec(row).expect("audit row serializes");
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(&body);
    hex::encode(h.finalize())
}

/// What [`chain_hash`] hashes after the previous hash and `{"seq":`, for
/// any `seq`: the row's canonical body from just after its `seq` (its first
/// field), so the database can hash the row once it knows the `seq`.
fn body_after_seq(row: &Canonical<'_>) -> Vec<u8> {
    const SEQ_ZERO: &[u8] = b"{\"seq\":0";
    let body = serde_json::to_vec(&Canonical { seq: 0, ..*row }).expect("audit row serializes");
    assert!(
        body.starts_with(SEQ_ZERO),
        "seq is the canonical body's first field"
    );
    body[SEQ_ZERO.len()..].to_vec()
}

fn micros(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos() / 1_000
}

/// Appends `entry` in the caller's transaction and returns its `seq`.
pub async fn append(conn: &mut PgConnection, entry: &Entry) -> Result<i64, sqlx::Error> {
    // PostgreSQL keeps microseconds; hash exactly what is stored.
    let now = OffsetDateTime::now_utc();
    let at = now
        .replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .expect("truncated nanoseconds are valid");
    let actor_label = entry.actor.label();
    let row = Canonical {
        seq: 0,
        at_micros: micros(at),
        actor_id: entry.actor.id(),
        actor: &actor_label,
        action: entry.action,
        object_type: entry.object_type,
        object_id: &entry.object_id,
        project_id: entry.project_id,
        details: &entry.details,
        ip: entry.ip.as_deref(),
    };
    // Lock the head, hash, append and move the head in one statement (see
    // the module's note); the hash is `chain_hash` of the row at its seq.
    sqlx::query_scalar(
        r#"WITH head AS (
             SELECT seq + 1 AS seq, hash AS prev FROM audit_head WHERE id FOR UPDATE
           ), linked AS (
             SELECT seq, prev,
                    encode(sha256(convert_to(prev || E'\n{"seq":' || seq::text, 'UTF8') || $10), 'hex') AS hash
               FROM head
           ), appended AS (
             INSERT INTO audit_log (seq, at, actor_id, actor, action, object_type, object_id, project_id, details, ip, prev_hash, hash)
             SELECT seq, $1, $2, $3, $4, $5, $6, $7, $8, $9, prev, hash FROM linked
           )
           UPDATE audit_head SET seq = linked.seq, hash = linked.hash FROM linked
            WHERE audit_head.id
           RETURNING linked.seq"#,
    )
    .bind(at)
    .bind(row.actor_id)
    .bind(&actor_label)
    .bind(entry.action)
    .bind(entry.object_type)
    .bind(&entry.object_id)
    .bind(entry.project_id)
    .bind(&entry.details)
    .bind(&entry.ip)
    .bind(body_after_seq(&row))
    .fetch_one(&mut *conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct AuditRow {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub project_id: Option<Uuid>,
    pub details: Value,
    pub ip: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The result of walking the chain.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub rows_checked: i64,
    /// The first row whose hash or link does not match.
    pub first_broken_seq: Option<i64>,
    pub reason: Option<String>,
}

/// Walks the whole chain in `seq` order, in pages, and reports the first break.
pub async fn verify(pool: &PgPool) -> Result<Verification, sqlx::Error> {
    const PAGE: i64 = 1000;
    let mut prev_hash = "0".repeat(64);
    let mut expected_seq = 1i64;
    let mut checked = 0i64;
    loop {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, at, actor_id, actor, action, object_type, object_id, project_id, details, ip, prev_hash, hash
             FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(expected_seq)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let broken = |reason: String| Verification {
                ok: false,
                rows_checked: checked,
                first_broken_seq: Some(row.seq),
                reason: Some(reason),
            };
            if row.seq != expected_seq {
                return Ok(Verification {
                    first_broken_seq: Some(expected_seq),
                    ..broken(format!("row {expected_seq} is missing"))
                });
            }
            if row.prev_hash != prev_hash {
                return Ok(broken("link to the previous row does not match".into()));
            }
            let recomputed = chain_hash(
                &prev_hash,
                &Canonical {
                    seq: row.seq,
                    at_micros: micros(row.at),
                    actor_id: row.actor_id,
                    actor: &row.actor,
                    action: &row.action,
                    object_type: &row.object_type,
                    object_id: &row.object_id,
                    project_id: row.project_id,
                    details: &row.details,
                    ip: row.ip.as_deref(),
                },
            );
            if recomputed != row.hash {
                return Ok(broken("row content does not match its hash".into()));
            }
            prev_hash = row.hash.clone();
            expected_seq += 1;
            checked += 1;
        }
    }
    let head: (i64, String) = sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id")
        .fetch_one(pool)
        .await?;
    if head.0 != checked || head.1 != prev_hash {
        return Ok(Verification {
            ok: false,
            rows_checked: checked,
            first_broken_seq: Some(checked + 1),
            reason: Some("rows at the end of the chain are missing".into()),
        });
    }
    Ok(Verification {
        ok: true,
        rows_checked: checked,
        first_broken_seq: None,
        reason: None,
    })
}

/// Filters of the audit list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor_id: Option<Uuid>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub project_id: Option<Uuid>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Rows with `seq` below this (newest first paging).
    pub before_seq: Option<i64>,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, f: &Filter) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, at, actor_id, actor, action, object_type, object_id, project_id, details, ip, prev_hash, hash
         FROM audit_log
         WHERE ($1::uuid IS NULL OR actor_id = $1)
           AND ($2::text IS NULL OR actor = $2)
           AND ($3::text IS NULL OR action = $3)
           AND ($4::uuid IS NULL OR project_id = $4)
           AND ($5::timestamptz IS NULL OR at >= $5)
           AND ($6::timestamptz IS NULL OR at < $6)
           AND ($7::bigint IS NULL OR seq < $7)
         ORDER BY seq DESC
         LIMIT $8",
    )
    .bind(f.actor_id)
    .bind(&f.actor)
    .bind(&f.action)
    .bind(f.project_id)
    .bind(f.since)
    .bind(f.until)
    .bind(f.before_seq)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

/// The actions the log holds, by name (a loose scan of the action index:
/// one probe per distinct action, whatever the log's length).
pub async fn actions(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH RECURSIVE a(action) AS (
             (SELECT action FROM audit_log ORDER BY action LIMIT 1)
             UNION ALL
             SELECT (SELECT l.action FROM audit_log l WHERE l.action > a.action
                     ORDER BY l.action LIMIT 1)
             FROM a WHERE a.action IS NOT NULL)
         SELECT action FROM a WHERE action IS NOT NULL",
    )
    .fetch_all(pool)
    .await
}

/// What an id in the log names, for people: a run, target, execution,
/// project, DB set, user, worker or migration, with its page when it has one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Named {
    pub id: Uuid,
    pub label: String,
    pub href: Option<String>,
}

/// The names of those of `ids` that the tool database knows.
pub async fn names(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Named>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT r.id, 'run ' || left(r.id::text, 8) || ' (' || p.slug || ': ' || r.direction || ' to '
                || r.target_version || ' on ' || r.environment || ')' AS label,
                '/runs/' || r.id AS href
         FROM runs r JOIN projects p ON p.id = r.project_id WHERE r.id = ANY($1)
         UNION ALL
         SELECT t.id, 'target ' || t.name || ' (' || p.slug || ' / ' || d.name || ')',
                '/targets/' || t.id
         FROM targets t JOIN db_sets d ON d.id = t.db_set_id JOIN projects p ON p.id = d.project_id
         WHERE t.id = ANY($1)
         UNION ALL
         SELECT e.id, 'target ' || t.name || ' in run ' || left(e.run_id::text, 8), '/runs/' || e.run_id
         FROM target_executions e JOIN targets t ON t.id = e.target_id WHERE e.id = ANY($1)
         UNION ALL
         SELECT p.id, 'project ' || p.slug, '/projects/' || p.slug FROM projects p WHERE p.id = ANY($1)
         UNION ALL
         SELECT d.id, 'DB set ' || d.name || ' (' || p.slug || ')',
                '/projects/' || p.slug || '/db-sets/' || d.id
         FROM db_sets d JOIN projects p ON p.id = d.project_id WHERE d.id = ANY($1)
         UNION ALL
         SELECT u.id, u.email, NULL FROM users u WHERE u.id = ANY($1)
         UNION ALL
         SELECT w.id, 'worker ' || w.hostname || ' (pool ' || w.pool || ')', '/admin/workers'
         FROM workers w WHERE w.id = ANY($1)
         UNION ALL
         SELECT m.id, 'migration ' || m.version || ' (' || p.slug || ')',
                '/projects/' || p.slug || '/migrations/' || m.version
         FROM migrations m JOIN projects p ON p.id = m.project_id WHERE m.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The database hashes the previous hash, `\n{"seq":`, the seq and
    /// [`body_after_seq`]: exactly the bytes [`chain_hash`] (and so the
    /// verification) reads.
    #[test]
    fn the_body_after_seq_rebuilds_the_chain_hash() {
        let details = serde_json::json!({"b": "x\"y\n", "a": [1, 2.5, null], "ü": {"z": true}});
        let prev = "ab".repeat(32);
        for seq in [1, 10, 1_234_567] {
            let row = Canonical {
                seq,
                at_micros: 1_700_000_000_123_456,
                actor_id: Some(Uuid::nil()),
                actor: "someone@example.com",
                action: "run.executed",
                object_type: "run",
                object_id: "0190",
                project_id: None,
                details: &details,
                ip: Some("127.0.0.1"),
            };
            let mut h = Sha256::new();
            h.update(prev.as_bytes());
            h.update(b"\n{\"seq\":");
            h.update(seq.to_string().as_bytes());
            h.update(body_after_seq(&row));
            assert_eq!(hex::encode(h.finalize()), chain_hash(&prev, &row));
        }
    }
}
