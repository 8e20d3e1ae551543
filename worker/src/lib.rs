//! migrate-hub worker: executes approved runs against the targets of one
//! worker pool.
//!
//! - [`runner`] registers the worker, heartbeats and consumes the pool's queue;
//! - [`job`] takes one target execution from claim to finish;
//! - [`plan`] holds the pure rules (checksums, drift, what is pending);
//! - [`executor`] talks to each engine, under the target [`lock`];
//! - [`claim`] takes the execution, and the target's record under its lock;
//! - [`report`] writes progress and the outcome back to the tool database;
//! - [`env`] is what every job of one worker shares;
//! - [`retry`] lets those tool-database writes outlast a restart;
//! - [`snapshot`] takes the schema snapshots after executions, and [`scan`]
//!   reads the pool's targets now and then to find schema drift.

pub mod claim;
pub mod env;
pub mod executor;
pub mod job;
pub mod lock;
pub mod metrics;
pub mod plan;
pub mod queue;
pub mod report;
pub mod retry;
pub mod runner;
pub mod scan;
pub mod snapshot;

pub use runner::Worker;
