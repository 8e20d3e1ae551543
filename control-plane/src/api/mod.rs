//! The JSON API under `/api/v1`, one module per resource.

use crate::routes::{Access, Routes};

pub mod audit;
pub mod db_sets;
pub mod environments;
pub mod health;
pub mod inventory;
pub mod lint;
pub mod me;
pub mod migrations;
pub mod openapi;
pub mod projects;
pub mod runs;
pub mod targets;
pub mod users;
pub mod webhooks;

pub fn router() -> Routes {
    Routes::new().merge(health::router()).nest(
        "/api/v1",
        Routes::new()
            .get("/openapi.json", Access::Public, openapi::serve)
            .merge(me::router())
            .merge(users::router())
            .merge(inventory::router())
            .merge(environments::router())
            .merge(projects::router())
            .merge(db_sets::router())
            .merge(targets::router())
            .merge(migrations::router())
            .merge(runs::router())
            .merge(lint::router())
            .merge(audit::router())
            .merge(webhooks::router()),
    )
}
