//! Targets on the local database servers, added through the API, and the
//! hub's record of what they have applied.

use common::testing::{TestDatabase, TestMysqlDatabase};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::TestApp;

/// The request that adds `db`, on the local PostgreSQL server (trust
/// authentication: the password is stored, never needed), as target `name`.
pub fn pg_target_json(name: &str, db: &TestDatabase) -> Value {
    json!({"name": name, "engine": "postgres", "host": "127.0.0.1", "port": 5432,
           "database": db.name, "username": "postgres", "password": "unused-with-trust",
           "tls_mode": "disable"})
}

/// The request that adds `db`, on the local MariaDB server, as target `name`.
pub fn mysql_target_json(name: &str, db: &TestMysqlDatabase) -> Value {
    json!({"name": name, "engine": "mysql", "host": db.host, "port": db.port,
           "database": db.name, "username": db.user, "password": db.password,
           "tls_mode": "disable"})
}

impl TestApp {
    /// Adds the target `body` describes to DB set `set` as manager; returns
    /// its id.
    pub async fn add_target(&self, slug: &str, set: &str, body: Value) -> String {
        let (status, created) = self
            .post(
                &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
                &self.manager,
                body,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    /// Adds `db` as PostgreSQL target `name` (see [`pg_target_json`]).
    pub async fn pg_target(&self, slug: &str, set: &str, name: &str, db: &TestDatabase) -> String {
        self.add_target(slug, set, pg_target_json(name, db)).await
    }

    /// Adds `db` as MariaDB target `name` (see [`mysql_target_json`]).
    pub async fn mysql_target(
        &self,
        slug: &str,
        set: &str,
        name: &str,
        db: &TestMysqlDatabase,
    ) -> String {
        self.add_target(slug, set, mysql_target_json(name, db))
            .await
    }

    /// The target's state as users read it: applied versions, dirty mark,
    /// drift (read live from the target).
    pub async fn target_state(&self, target: &str) -> Value {
        let (status, state) = self
            .get(&format!("/api/v1/targets/{target}/state"), &self.user)
            .await;
        assert_eq!(status, StatusCode::OK, "{state}");
        state
    }

    /// Baselines `target` (as admin) at `version`: the project's migrations
    /// up to it are recorded as applied there. Returns the answer.
    pub async fn baseline_at(&self, target: &str, version: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/api/v1/targets/{target}/baseline"),
                &self.admin,
                json!({"version": version}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Records every migration of the hub as applied on `target`, as if
    /// runs had applied them.
    pub async fn mark_applied(&self, target: &str) {
        sqlx::query(
            "INSERT INTO applied_migrations (target_id, version, version_key, migration_id, checksum)
             SELECT $1::uuid, version, version_key, id, checksum FROM migrations",
        )
        .bind(target)
        .execute(&self.pool)
        .await
        .unwrap();
    }
}
