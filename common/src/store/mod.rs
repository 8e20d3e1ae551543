//! The only place that speaks SQL to the tool database. Functions take a
//! connection (or a transaction) so that callers own the transaction.

pub mod audit;
pub mod baseline;
pub mod executions;
pub mod fleet;
pub mod inventory;
pub mod migrations;
pub mod runs;
pub mod schema_drift;
pub mod secrets;
pub mod sessions;
pub mod snapshots;
pub mod stats;
pub mod target_state;
pub mod users;
pub mod webhooks;
pub mod workers;

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}
