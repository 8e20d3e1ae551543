//! The worker's side of the apalis queue: the payload as consumed, and the
//! codec that decodes it.
//!
//! apalis treats a payload that fails to decode as a *backend* error, which
//! stops the whole consumer; the job would then be re-enqueued as orphaned
//! and stop the next consumer too. The codec here therefore never fails: a
//! payload that is not a [`TargetJob`] is handed to the handler as
//! [`QueuedJob::Malformed`], which fails that one job and moves on.

use apalis::prelude::Codec;
use common::queue::TargetJob;

/// A job as it comes off the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueuedJob {
    Target(TargetJob),
    /// Not a `TargetJob`: the reason, for the log and the job's result.
    Malformed(String),
}

/// JSON, like the control plane's producer, but lenient on decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobCodec;

impl Codec<QueuedJob> for JobCodec {
    type Error = serde_json::Error;
    type Compact = Vec<u8>;

    fn encode(&self, job: &QueuedJob) -> Result<Vec<u8>, Self::Error> {
        match job {
            QueuedJob::Target(job) => serde_json::to_vec(job),
            QueuedJob::Malformed(reason) => serde_json::to_vec(reason),
        }
    }

    fn decode(&self, payload: &Vec<u8>) -> Result<QueuedJob, Self::Error> {
        Ok(match serde_json::from_slice(payload) {
            Ok(job) => QueuedJob::Target(job),
            Err(err) => QueuedJob::Malformed(format!("payload is not a target job: {err}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn decodes_what_the_control_plane_pushes() {
        let job = TargetJob {
            run_id: Uuid::now_v7(),
            target_id: Uuid::now_v7(),
            execution_id: Uuid::now_v7(),
            trace_context: Default::default(),
        };
        let bytes = serde_json::to_vec(&job).unwrap();
        assert_eq!(JobCodec.decode(&bytes).unwrap(), QueuedJob::Target(job));
    }

    #[test]
    fn garbage_is_a_malformed_job_not_an_error() {
        for payload in [&b"not json"[..], b"{\"run_id\": 1}", b""] {
            let decoded = JobCodec.decode(&payload.to_vec()).unwrap();
            assert!(matches!(decoded, QueuedJob::Malformed(_)), "{decoded:?}");
        }
    }
}
