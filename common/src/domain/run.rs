//! Runs and target executions: their states, the legal transitions, and the
//! digest that an approval pins.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{checksum::Checksum, version::Version};

pub use super::text_enum::UnknownValue;
use super::text_enum::text_enum;

text_enum!(
    /// Which way a run moves a DB set.
    Direction { Up => "up", Down => "down" }
);

text_enum!(
    /// The life of a run.
    RunState {
        PendingApproval => "pending_approval",
        Approved => "approved",
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        PartiallyFailed => "partially_failed",
        Denied => "denied",
        Cancelled => "cancelled",
        Invalidated => "invalidated",
    }
);

text_enum!(
    /// The life of one (run, target) pair.
    TargetState {
        Pending => "pending",
        Queued => "queued",
        Running => "running",
        /// Stopped between migrations at the end of a maintenance window, or
        /// not started outside one: its job is due at the next opening.
        WaitingForWindow => "waiting_for_window",
        Succeeded => "succeeded",
        Failed => "failed",
        Skipped => "skipped",
        Interrupted => "interrupted",
        Cancelled => "cancelled",
    }
);

/// Something that happens to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEvent {
    /// Enough approvals were recorded.
    FullyApproved,
    Deny,
    Cancel,
    /// Something the digest covers changed.
    Invalidate,
    Execute,
    /// The first target started.
    Start,
    /// The last target finished, with the derived outcome.
    Finish(RunState),
    /// An admin resumed a script that stopped part-way on one of the run's
    /// targets: that target's execution is queued again.
    Resume,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a run that is {from} cannot {event}")]
pub struct IllegalTransition {
    pub from: RunState,
    pub event: &'static str,
}

impl RunEvent {
    fn verb(self) -> &'static str {
        match self {
            RunEvent::FullyApproved => "be approved",
            RunEvent::Deny => "be denied",
            RunEvent::Cancel => "be cancelled",
            RunEvent::Invalidate => "be invalidated",
            RunEvent::Execute => "be executed",
            RunEvent::Start => "start",
            RunEvent::Finish(_) => "finish",
            RunEvent::Resume => "be resumed",
        }
    }
}

impl RunState {
    /// The state after `event`, or why it cannot happen.
    pub fn transition(self, event: RunEvent) -> Result<RunState, IllegalTransition> {
        use RunEvent as E;
        use RunState as S;
        let next = match (self, event) {
            (S::PendingApproval, E::FullyApproved) => S::Approved,
            (S::PendingApproval | S::Approved, E::Deny) => S::Denied,
            (S::PendingApproval | S::Approved | S::Queued | S::Running, E::Cancel) => S::Cancelled,
            (S::PendingApproval | S::Approved, E::Invalidate) => S::Invalidated,
            (S::Approved, E::Execute) => S::Queued,
            (S::Queued, E::Start) => S::Running,
            (
                S::Queued | S::Running,
                E::Finish(outcome @ (S::Succeeded | S::Failed | S::PartiallyFailed)),
            ) => outcome,
            (S::Running | S::Failed | S::PartiallyFailed, E::Resume) => S::Running,
            _ => {
                return Err(IllegalTransition {
                    from: self,
                    event: event.verb(),
                });
            }
        };
        Ok(next)
    }

    /// No further transition is possible, except an admin's resume of a
    /// dirty target, which takes a failed run back to `running`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded
                | RunState::Failed
                | RunState::PartiallyFailed
                | RunState::Denied
                | RunState::Cancelled
                | RunState::Invalidated
        )
    }
}

impl TargetState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TargetState::Succeeded
                | TargetState::Failed
                | TargetState::Skipped
                | TargetState::Interrupted
                | TargetState::Cancelled
        )
    }
}

/// The outcome of a run once every target execution is final.
/// `None` while any target is still pending, queued or running.
pub fn derive_outcome(targets: &[TargetState]) -> Option<RunState> {
    if targets.iter().any(|t| !t.is_final()) {
        return None;
    }
    let bad = targets
        .iter()
        .filter(|t| matches!(t, TargetState::Failed | TargetState::Interrupted))
        .count();
    let good = targets
        .iter()
        .filter(|t| matches!(t, TargetState::Succeeded | TargetState::Skipped))
        .count();
    Some(match (bad, good) {
        (0, _) => RunState::Succeeded,
        (_, 0) => RunState::Failed,
        _ => RunState::PartiallyFailed,
    })
}

/// One migration as pinned by a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinnedMigration {
    pub version: Version,
    pub checksum: Checksum,
}

/// One target as resolved when the run was requested: where and as whom
/// its migrations run. The one definition of what an approval covers of a
/// target — the digest pins it, and an edit of a target that changes it
/// invalidates the runs waiting on the target's DB set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinnedTarget {
    pub id: uuid::Uuid,
    pub engine: super::Engine,
    pub host: String,
    pub port: i32,
    pub database: String,
    pub username: String,
    pub tls_mode: super::TlsMode,
    pub session_settings: String,
    pub worker_pool: String,
}

impl PinnedTarget {
    /// The target as digests of version 1 pinned it (before TLS mode and
    /// session settings were covered).
    fn v1(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "engine": self.engine,
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "username": self.username,
            "worker_pool": self.worker_pool,
        })
    }
}

/// The execution settings a run pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecutionSettings {
    pub direction: Direction,
    pub target_version: Version,
    pub stop_on_failure: bool,
    pub concurrency: i32,
    pub canary: i32,
    pub lock_timeout_ms: i32,
    pub statement_timeout_ms: i32,
    /// How often a migration whose lock budget ran out is tried again
    /// (`None` for runs requested before retries existed: their digests
    /// stay as they were approved, and they are not retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_retries: Option<i32>,
    /// The pre-flight: how long a target waits for blocking sessions to go,
    /// and from what age an open transaction counts as one (`None` for
    /// runs requested before the pre-flight existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preflight_wait_ms: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocker_age_ms: Option<i32>,
    /// Opt-in: terminate blockers `idle in transaction` this long after
    /// the pre-flight's wait (`None`: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminate_idle_blockers_after_ms: Option<i32>,
}

/// Everything an approval covers. If any of it changes, so does the digest,
/// and the approval no longer applies (rule 2).
#[derive(Debug, Clone, Serialize)]
pub struct RunPin<'a> {
    pub migrations: &'a [PinnedMigration],
    pub targets: &'a [PinnedTarget],
    pub settings: &'a ExecutionSettings,
    /// The digest of the run's SQL review (`None` for runs requested before
    /// reviews existed, whose digests stay as they were approved).
    pub review: Option<&'a str>,
}

impl RunPin<'_> {
    /// SHA-256 over a canonical JSON rendering of the pin. Migrations keep
    /// their execution order; targets are sorted by id so that the order in
    /// which a DB set lists them does not matter.
    pub fn digest(&self) -> String {
        let targets: Vec<serde_json::Value> = self
            .sorted_targets()
            .into_iter()
            .map(|t| serde_json::to_value(t).expect("a target serializes"))
            .collect();
        match self.review {
            Some(review) => self.digest_of(3, &targets, Some(review)),
            None => self.digest_of(2, &targets, None),
        }
    }

    /// Whether `pinned` is this pin's digest, as written now or as version 1
    /// wrote it (runs requested before TLS mode and session settings were
    /// pinned keep the digest they were approved with).
    pub fn matches(&self, pinned: &str) -> bool {
        if pinned == self.digest() {
            return true;
        }
        let v1: Vec<serde_json::Value> = self
            .sorted_targets()
            .into_iter()
            .map(PinnedTarget::v1)
            .collect();
        self.review.is_none() && pinned == self.digest_of(1, &v1, None)
    }

    fn sorted_targets(&self) -> Vec<&PinnedTarget> {
        let mut targets: Vec<&PinnedTarget> = self.targets.iter().collect();
        targets.sort_by_key(|t| t.id);
        targets
    }

    fn digest_of(
        &self,
        version: u8,
        targets: &[serde_json::Value],
        review: Option<&str>,
    ) -> String {
        let mut canonical = serde_json::json!({
            "v": version,
            "migrations": self.migrations,
            "targets": targets,
            "settings": self.settings,
        });
        if let Some(review) = review {
            canonical["review"] = serde_json::json!(review);
        }
        let bytes = serde_json::to_vec(&canonical).expect("pin serializes");
        hex::encode(Sha256::digest(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path() {
        let s = RunState::PendingApproval;
        let s = s.transition(RunEvent::FullyApproved).unwrap();
        assert_eq!(s, RunState::Approved);
        let s = s.transition(RunEvent::Execute).unwrap();
        assert_eq!(s, RunState::Queued);
        let s = s.transition(RunEvent::Start).unwrap();
        assert_eq!(s, RunState::Running);
        let s = s.transition(RunEvent::Finish(RunState::Succeeded)).unwrap();
        assert_eq!(s, RunState::Succeeded);
    }

    #[test]
    fn only_approved_runs_execute() {
        for &state in RunState::ALL {
            let result = state.transition(RunEvent::Execute);
            assert_eq!(result.is_ok(), state == RunState::Approved, "{state}");
        }
    }

    #[test]
    fn invalidated_and_denied_runs_are_final() {
        for &state in RunState::ALL.iter().filter(|s| s.is_final()) {
            for event in [
                RunEvent::FullyApproved,
                RunEvent::Deny,
                RunEvent::Cancel,
                RunEvent::Invalidate,
                RunEvent::Execute,
                RunEvent::Start,
            ] {
                assert!(
                    state.transition(event).is_err(),
                    "{state} accepted {event:?}"
                );
            }
        }
    }

    #[test]
    fn only_failed_or_running_runs_can_be_resumed() {
        for &state in RunState::ALL {
            let ok = state.transition(RunEvent::Resume);
            let want = matches!(
                state,
                RunState::Running | RunState::Failed | RunState::PartiallyFailed
            );
            assert_eq!(ok.is_ok(), want, "{state}");
            if want {
                assert_eq!(ok.unwrap(), RunState::Running);
            }
        }
    }

    #[test]
    fn only_runs_awaiting_execution_can_be_invalidated() {
        for &state in RunState::ALL {
            let ok = state.transition(RunEvent::Invalidate).is_ok();
            let want = matches!(state, RunState::PendingApproval | RunState::Approved);
            assert_eq!(ok, want, "{state}");
        }
    }

    #[test]
    fn finish_only_with_an_outcome() {
        assert!(
            RunState::Running
                .transition(RunEvent::Finish(RunState::Approved))
                .is_err()
        );
        assert_eq!(
            RunState::Queued.transition(RunEvent::Finish(RunState::Failed)),
            Ok(RunState::Failed)
        );
    }

    #[test]
    fn states_round_trip_as_text() {
        for &state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>().unwrap(), state);
        }
        for &state in TargetState::ALL {
            assert_eq!(state.as_str().parse::<TargetState>().unwrap(), state);
        }
        assert!("done".parse::<RunState>().is_err());
    }

    #[test]
    fn outcome_is_derived_from_targets() {
        use TargetState::*;
        assert_eq!(derive_outcome(&[Succeeded, Running]), None);
        assert_eq!(
            derive_outcome(&[Succeeded, Skipped]),
            Some(RunState::Succeeded)
        );
        assert_eq!(derive_outcome(&[Failed, Failed]), Some(RunState::Failed));
        assert_eq!(
            derive_outcome(&[Succeeded, Failed]),
            Some(RunState::PartiallyFailed)
        );
        assert_eq!(
            derive_outcome(&[Skipped, Interrupted]),
            Some(RunState::PartiallyFailed)
        );
        assert_eq!(
            derive_outcome(&[Cancelled, Succeeded]),
            Some(RunState::Succeeded)
        );
        assert_eq!(derive_outcome(&[]), Some(RunState::Succeeded));
    }

    fn pin_fixture() -> (Vec<PinnedMigration>, Vec<PinnedTarget>, ExecutionSettings) {
        let migrations = vec![PinnedMigration {
            version: Version::parse("1").unwrap(),
            checksum: Checksum::of("CREATE TABLE a();", None),
        }];
        let target = |n: u128| PinnedTarget {
            id: uuid::Uuid::from_u128(n),
            engine: super::super::Engine::Postgres,
            host: "127.0.0.1".into(),
            port: 5432,
            database: format!("db{n}"),
            username: "app".into(),
            tls_mode: super::super::TlsMode::Prefer,
            session_settings: String::new(),
            worker_pool: "default".into(),
        };
        let settings = ExecutionSettings {
            direction: Direction::Up,
            target_version: Version::parse("1").unwrap(),
            stop_on_failure: false,
            concurrency: 8,
            canary: 0,
            lock_timeout_ms: 5000,
            lock_retries: None,
            preflight_wait_ms: None,
            blocker_age_ms: None,
            terminate_idle_blockers_after_ms: None,
            statement_timeout_ms: 60000,
        };
        (migrations, vec![target(1), target(2)], settings)
    }

    #[test]
    fn tls_mode_and_session_settings_are_covered() {
        let (m, t, s) = pin_fixture();
        let pin = |targets: &[PinnedTarget]| {
            RunPin {
                migrations: &m,
                targets,
                settings: &s,
                review: None,
            }
            .digest()
        };
        let base = pin(&t);
        let mut tls = t.clone();
        tls[0].tls_mode = super::super::TlsMode::Disable;
        assert_ne!(base, pin(&tls));
        let mut session = t.clone();
        session[1].session_settings = "search_path=evil".into();
        assert_ne!(base, pin(&session));
    }

    #[test]
    fn a_version_1_digest_still_matches_the_same_facts() {
        let (m, t, s) = pin_fixture();
        let pin = RunPin {
            migrations: &m,
            targets: &t,
            settings: &s,
            review: None,
        };
        // As version 1 computed it: targets without TLS mode and session
        // settings, sorted by id.
        let v1 = {
            let targets: Vec<_> = t.iter().map(PinnedTarget::v1).collect();
            let canonical = serde_json::json!({
                "v": 1, "migrations": m, "targets": targets, "settings": s,
            });
            hex::encode(Sha256::digest(serde_json::to_vec(&canonical).unwrap()))
        };
        assert_ne!(v1, pin.digest());
        assert!(pin.matches(&v1));
        assert!(pin.matches(&pin.digest()));
        // Once a pinned fact changes, neither matches.
        let mut moved = t.clone();
        moved[0].host = "10.0.0.9".into();
        let changed = RunPin {
            migrations: &m,
            targets: &moved,
            settings: &s,
            review: None,
        };
        assert!(!changed.matches(&v1));
        assert!(!changed.matches(&pin.digest()));
    }

    #[test]
    fn digest_changes_with_every_pinned_fact() {
        let (m, t, s) = pin_fixture();
        let base = RunPin {
            migrations: &m,
            targets: &t,
            settings: &s,
            review: None,
        }
        .digest();

        let mut m2 = m.clone();
        m2[0].checksum = Checksum::of("CREATE TABLE b();", None);
        assert_ne!(
            base,
            RunPin {
                migrations: &m2,
                targets: &t,
                settings: &s,
                review: None,
            }
            .digest()
        );

        let t2 = vec![t[0].clone()];
        assert_ne!(
            base,
            RunPin {
                migrations: &m,
                targets: &t2,
                settings: &s,
                review: None,
            }
            .digest()
        );

        let mut s2 = s.clone();
        s2.statement_timeout_ms += 1;
        assert_ne!(
            base,
            RunPin {
                migrations: &m,
                targets: &t,
                settings: &s2,
                review: None,
            }
            .digest()
        );

        let mut s3 = s.clone();
        s3.stop_on_failure = true;
        assert_ne!(
            base,
            RunPin {
                migrations: &m,
                targets: &t,
                settings: &s3,
                review: None,
            }
            .digest()
        );
    }

    #[test]
    fn digest_ignores_target_listing_order() {
        let (m, t, s) = pin_fixture();
        let reversed: Vec<_> = t.iter().rev().cloned().collect();
        assert_eq!(
            RunPin {
                migrations: &m,
                targets: &t,
                settings: &s,
                review: None,
            }
            .digest(),
            RunPin {
                migrations: &m,
                targets: &reversed,
                settings: &s,
                review: None,
            }
            .digest()
        );
    }

    #[test]
    fn the_review_is_pinned_and_a_reviewed_run_never_matches_an_older_digest() {
        let (m, t, s) = pin_fixture();
        let pin = |review| RunPin {
            migrations: &m,
            targets: &t,
            settings: &s,
            review,
        };
        let unreviewed = pin(None).digest();
        let reviewed = pin(Some("aaaa")).digest();
        assert_ne!(unreviewed, reviewed);
        assert_ne!(reviewed, pin(Some("bbbb")).digest());
        assert!(pin(Some("aaaa")).matches(&reviewed));
        assert!(!pin(Some("aaaa")).matches(&unreviewed));
        assert!(!pin(Some("bbbb")).matches(&reviewed));
    }
}
