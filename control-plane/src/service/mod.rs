//! What the control plane does for each resource, shared by the JSON API
//! (`api/`) and the pages (`web/`): inputs checked, one transaction per
//! change with its audit row (runs through `common::lifecycle`), and the
//! read models both answer with. Neither adapter imports the other; both
//! import this.

pub mod audit;
pub mod db_sets;
pub mod environments;
pub mod inventory;
pub mod lint;
pub mod me;
pub mod migrations;
pub mod projects;
pub mod run_events;
pub mod runs;
pub mod schema_drift;
pub mod snapshots;
pub mod targets;
pub mod users;
pub mod webhooks;
