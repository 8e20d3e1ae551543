//! Browser sessions in the tool database, so they survive restarts and work
//! across control-plane replicas. (`tower-sessions-sqlx-store` is built on an
//! older sqlx than ours; this store is small enough to own.)

use async_trait::async_trait;
use common::store::sessions;
use sqlx::PgPool;
use tower_sessions::{
    session::{Id, Record},
    session_store::{self, ExpiredDeletion, SessionStore},
};
use uuid::Uuid;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "mh_session";

/// The session key holding the signed-in user's id. Kept in its own column
/// too, so disabling a user can delete their sessions at once.
pub const USER_ID_KEY: &str = "user_id";

#[derive(Debug, Clone)]
pub struct PgSessionStore {
    pool: PgPool,
}

impl PgSessionStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn backend(err: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

fn encode(record: &Record) -> session_store::Result<(Vec<u8>, Option<Uuid>)> {
    let data = serde_json::to_vec(&record.data)
        .map_err(|e| session_store::Error::Encode(e.to_string()))?;
    let user_id = record
        .data
        .get(USER_ID_KEY)
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok());
    Ok((data, user_id))
}

#[async_trait]
impl SessionStore for PgSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let (data, user_id) = encode(record)?;
        // Ids are random 128-bit values; on the impossible collision pick another.
        while !sessions::create(
            &self.pool,
            &record.id.to_string(),
            user_id,
            &data,
            record.expiry_date,
        )
        .await
        .map_err(backend)?
        {
            record.id = Id::default();
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let (data, user_id) = encode(record)?;
        sessions::save(
            &self.pool,
            &record.id.to_string(),
            user_id,
            &data,
            record.expiry_date,
        )
        .await
        .map_err(backend)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let row = sessions::load(&self.pool, &id.to_string())
            .await
            .map_err(backend)?;
        row.map(|(data, expiry_date)| {
            Ok(Record {
                id: *id,
                data: serde_json::from_slice(&data)
                    .map_err(|e| session_store::Error::Decode(e.to_string()))?,
                expiry_date,
            })
        })
        .transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        sessions::delete(&self.pool, &id.to_string())
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl ExpiredDeletion for PgSessionStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        sessions::delete_expired(&self.pool).await.map_err(backend)
    }
}
