//! What the tests ask of a PostgreSQL target database directly, as
//! [`common::testing::TestMysqlDatabase`] offers for MariaDB.

use common::testing::TestDatabase;
use sqlx::{Connection, PgConnection};

pub trait PgTarget {
    /// A session in the database.
    async fn connect(&self) -> PgConnection;

    /// Runs `sql` (one statement or several).
    async fn run(&self, sql: &str) {
        let mut conn = self.connect().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }

    /// The number a query answers (`SELECT count(*) …`).
    async fn number(&self, sql: &str) -> i64 {
        let mut conn = self.connect().await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    async fn has_table(&self, table: &str) -> bool {
        let mut conn = self.connect().await;
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

impl PgTarget for TestDatabase {
    async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }
}
