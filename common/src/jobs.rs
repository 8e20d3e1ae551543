//! Queue payloads shared by the control plane (producer) and workers (consumer).
//!
//! A job names what to do, never how to reach it: no host, no password. The
//! worker reads everything else from the tool database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Execute one run on one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetJob {
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub execution_id: Uuid,
    /// W3C trace context of the Execute request, so the worker's spans join its trace.
    #[serde(default)]
    pub trace_context: BTreeMap<String, String>,
}

/// The apalis queue that the workers of `pool` consume.
pub fn queue_name(pool: &str) -> String {
    format!("migrate-hub.pool.{pool}")
}
