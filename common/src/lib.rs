//! Shared core of migrate-hub: domain rules, configuration, secrets, the tool
//! database store and the queue payloads used by both the control plane and
//! the workers.

pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod lifecycle;
pub mod queue;
pub mod review;
pub mod store;
pub mod targets;
pub mod telemetry;

#[cfg(feature = "test-support")]
pub mod testing;
