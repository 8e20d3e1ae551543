//! Key rotation: every sealed column of the tool database, re-encrypted
//! with the newest key.
//!
//! Each secret is bound to its row (the row id is the associated data), so
//! a rotation opens it under the row's id and seals it again under the same
//! id. Rows are handled in batches, each batch in its caller's transaction
//! with its rows locked, so a concurrent edit of a target either sees the
//! old ciphertext and waits, or comes after the batch.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::crypto::{CryptoError, Keyring, Sealed};

/// A table with a sealed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// `targets.password_ciphertext` / `password_key_id`.
    TargetPassword,
    /// `webhooks.url_ciphertext` / `url_key_id`.
    WebhookUrl,
}

impl SecretKind {
    pub const ALL: [SecretKind; 2] = [SecretKind::TargetPassword, SecretKind::WebhookUrl];

    /// (table, ciphertext column, key id column). Fixed names, never input.
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SecretKind::TargetPassword => ("targets", "password_ciphertext", "password_key_id"),
            SecretKind::WebhookUrl => ("webhooks", "url_ciphertext", "url_key_id"),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SecretKind::TargetPassword => "target password",
            SecretKind::WebhookUrl => "webhook URL",
        }
    }
}

/// A secret that could not be re-encrypted; names the row, never the secret.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{label} of row {id}: {source}")]
    Open {
        label: &'static str,
        id: Uuid,
        #[source]
        source: CryptoError,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Re-encrypts up to `limit` secrets of `kind` that are not yet under the
/// newest key, locking their rows; returns how many it re-encrypted (0 when
/// everything is on the newest key). Soft-deleted rows are included: every
/// stored secret moves, so an old key can be retired.
pub async fn rotate_batch(
    conn: &mut PgConnection,
    keys: &Keyring,
    kind: SecretKind,
    limit: i64,
) -> Result<usize, RotationError> {
    let (table, ciphertext, key_id) = kind.columns();
    let current = keys.current_key_id();
    let rows: Vec<(Uuid, Vec<u8>, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, {ciphertext}, {key_id} FROM {table}
         WHERE {ciphertext} IS NOT NULL AND {key_id} <> $1
         ORDER BY id LIMIT $2 FOR UPDATE"
    )))
    .bind(current)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut ciphertexts = Vec::with_capacity(rows.len());
    for (id, old_ciphertext, old_key_id) in rows {
        let sealed = Sealed {
            key_id: old_key_id,
            ciphertext: old_ciphertext,
        };
        let plaintext =
            keys.open(id.as_bytes(), &sealed)
                .map_err(|source| RotationError::Open {
                    label: kind.label(),
                    id,
                    source,
                })?;
        ids.push(id);
        ciphertexts.push(keys.seal(id.as_bytes(), &plaintext).ciphertext);
    }
    if ids.is_empty() {
        return Ok(0);
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET {ciphertext} = n.ciphertext, {key_id} = $3
         FROM unnest($1::uuid[], $2::bytea[]) AS n(id, ciphertext) WHERE {table}.id = n.id"
    )))
    .bind(&ids)
    .bind(&ciphertexts)
    .bind(current)
    .execute(conn)
    .await?;
    Ok(ids.len())
}

/// How many secrets of `kind` are already under the newest key.
pub async fn count_current(
    conn: &mut PgConnection,
    keys: &Keyring,
    kind: SecretKind,
) -> Result<i64, sqlx::Error> {
    let (table, ciphertext, key_id) = kind.columns();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE {ciphertext} IS NOT NULL AND {key_id} = $1"
    )))
    .bind(keys.current_key_id())
    .fetch_one(conn)
    .await
}
