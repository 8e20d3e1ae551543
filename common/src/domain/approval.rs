//! Approval policy and separation of duties.

use serde::Serialize;
use uuid::Uuid;

use super::{
    role::{Capability, Role, allows},
    run::RunState,
};

/// An environment's approval policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub environment: String,
    pub required_approvals: i32,
    /// Whether the requester or an author of a covered migration may approve.
    pub allow_self_approval: bool,
    pub require_previous_success: bool,
    /// Approvals a high-risk run needs (never fewer than
    /// `required_approvals`; 0: no more than those).
    pub high_risk_approvals: i32,
    /// Whether one approver of a high-risk run must be an admin.
    pub high_risk_requires_admin: bool,
}

impl Policy {
    /// `prd` never allows self-approval, whatever its row says.
    pub fn self_approval_allowed(&self) -> bool {
        self.allow_self_approval && self.environment != "prd"
    }

    /// What a run needs before it is approved, given whether its review
    /// rated it high-risk.
    pub fn requirement(&self, high_risk: bool) -> Requirement {
        if high_risk {
            Requirement {
                approvals: self.required_approvals.max(self.high_risk_approvals),
                admin: self.high_risk_requires_admin,
            }
        } else {
            Requirement {
                approvals: self.required_approvals,
                admin: false,
            }
        }
    }
}

/// How many approvals a run needs, and whether one must come from an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Requirement {
    pub approvals: i32,
    pub admin: bool,
}

impl Requirement {
    /// The roles whose approval counts (`approver_roles` in the API): an
    /// admin is needed among them when `admin` is set.
    pub fn approver_roles(&self) -> &'static [&'static str] {
        if self.admin {
            &["admin"]
        } else {
            &["manager", "admin"]
        }
    }
}

/// What the approval rule needs to know about the run.
#[derive(Debug, Clone)]
pub struct ApprovalContext<'a> {
    pub state: RunState,
    pub requested_by: Uuid,
    pub authors: &'a [Uuid],
    /// Approvers already recorded for this run (with the current digest).
    pub approvers: &'a [Uuid],
    /// The digest the run pins now; `None` when the pinned facts changed.
    pub digest_current: bool,
    /// Whether the run's review rated it high-risk.
    pub high_risk: bool,
    /// Whether an admin is among the recorded approvers.
    pub admin_approved: bool,
}

/// What a manager decides on a run; refusals name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("only managers and admins approve or deny runs")]
    NotAllowed,
    #[error("this run is {0}; only runs waiting for approval can be approved or denied")]
    WrongState(RunState),
    #[error("the run's migrations or targets changed since it was requested; it is invalidated")]
    Stale,
    #[error(
        "you requested this run, and this environment's policy does not let its requester {0} it"
    )]
    SelfApproval(Decision),
    /// Authors are everyone who wrote or edited any revision of a covered
    /// migration.
    #[error(
        "you wrote or edited a migration in this run, and this environment's policy does not let an author {0} it"
    )]
    AuthorApproval(Decision),
    #[error("you have already approved this run")]
    AlreadyApproved,
}

/// The result of a valid approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalOutcome {
    /// Approvals counted after this one.
    pub count: i32,
    /// The run has now enough approvals and moves to `approved`.
    pub fully_approved: bool,
}

/// Decide whether `approver` (with `role`) may approve the run, and what follows.
pub fn decide_approval(
    policy: &Policy,
    ctx: &ApprovalContext<'_>,
    approver: Uuid,
    role: Role,
) -> Result<ApprovalOutcome, ApprovalError> {
    check_decider(policy, ctx, approver, role, Decision::Approve)?;
    if ctx.approvers.contains(&approver) {
        return Err(ApprovalError::AlreadyApproved);
    }
    let count = ctx.approvers.len() as i32 + 1;
    let needs = policy.requirement(ctx.high_risk);
    let admin = ctx.admin_approved || role == Role::Admin;
    Ok(ApprovalOutcome {
        count,
        fully_approved: count >= needs.approvals && (admin || !needs.admin),
    })
}

/// Deny follows the same rules as approve: a requester who may not approve
/// their own run may still cancel it, but not deny it.
pub fn check_denial(
    policy: &Policy,
    ctx: &ApprovalContext<'_>,
    decider: Uuid,
    role: Role,
) -> Result<(), ApprovalError> {
    check_decider(policy, ctx, decider, role, Decision::Deny)
}

fn check_decider(
    policy: &Policy,
    ctx: &ApprovalContext<'_>,
    decider: Uuid,
    role: Role,
    decision: Decision,
) -> Result<(), ApprovalError> {
    if !allows(role, Capability::Approve) {
        return Err(ApprovalError::NotAllowed);
    }
    if ctx.state != RunState::PendingApproval {
        return Err(ApprovalError::WrongState(ctx.state));
    }
    if !ctx.digest_current {
        return Err(ApprovalError::Stale);
    }
    if !policy.self_approval_allowed() {
        if ctx.requested_by == decider {
            return Err(ApprovalError::SelfApproval(decision));
        }
        if ctx.authors.contains(&decider) {
            return Err(ApprovalError::AuthorApproval(decision));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(env: &str, required: i32, self_ok: bool) -> Policy {
        Policy {
            environment: env.into(),
            required_approvals: required,
            allow_self_approval: self_ok,
            require_previous_success: false,
            high_risk_approvals: 0,
            high_risk_requires_admin: false,
        }
    }

    const REQUESTER: Uuid = Uuid::from_u128(1);
    const AUTHOR: Uuid = Uuid::from_u128(2);
    const M1: Uuid = Uuid::from_u128(3);
    const M2: Uuid = Uuid::from_u128(4);

    fn ctx<'a>(approvers: &'a [Uuid], authors: &'a [Uuid]) -> ApprovalContext<'a> {
        ApprovalContext {
            state: RunState::PendingApproval,
            requested_by: REQUESTER,
            authors,
            approvers,
            digest_current: true,
            high_risk: false,
            admin_approved: false,
        }
    }

    #[test]
    fn a_high_risk_run_needs_more_approvals_and_an_admin_where_the_policy_says_so() {
        let mut p = policy("prd", 2, false);
        p.high_risk_approvals = 3;
        p.high_risk_requires_admin = true;
        assert_eq!(
            p.requirement(false),
            Requirement {
                approvals: 2,
                admin: false
            }
        );
        assert_eq!(p.requirement(true).approver_roles(), ["admin"]);
        let mut high = ctx(&[M1], &[]);
        high.high_risk = true;
        // Two managers: enough for a low-risk run, not for a high-risk one.
        assert!(
            !decide_approval(&p, &high, M2, Role::Manager)
                .unwrap()
                .fully_approved
        );
        let low = ctx(&[M1], &[]);
        assert!(
            decide_approval(&p, &low, M2, Role::Manager)
                .unwrap()
                .fully_approved
        );
        // Three managers are still not enough without an admin.
        let three = [M1, M2];
        let mut c = ctx(&three, &[]);
        c.high_risk = true;
        assert!(
            !decide_approval(&p, &c, AUTHOR, Role::Manager)
                .unwrap()
                .fully_approved
        );
        assert!(
            decide_approval(&p, &c, AUTHOR, Role::Admin)
                .unwrap()
                .fully_approved
        );
        c.admin_approved = true;
        assert!(
            decide_approval(&p, &c, AUTHOR, Role::Manager)
                .unwrap()
                .fully_approved
        );
        // High-risk approvals below the base count never lower it.
        p.high_risk_approvals = 1;
        p.high_risk_requires_admin = false;
        assert_eq!(p.requirement(true).approvals, 2);
    }

    #[test]
    fn one_manager_approves_daily() {
        let out = decide_approval(&policy("daily", 1, true), &ctx(&[], &[]), M1, Role::Manager);
        assert_eq!(
            out,
            Ok(ApprovalOutcome {
                count: 1,
                fully_approved: true
            })
        );
    }

    #[test]
    fn users_cannot_approve() {
        let out = decide_approval(&policy("daily", 1, true), &ctx(&[], &[]), M1, Role::User);
        assert_eq!(out, Err(ApprovalError::NotAllowed));
    }

    #[test]
    fn prd_needs_two_distinct_managers() {
        let p = policy("prd", 2, false);
        let first = decide_approval(&p, &ctx(&[], &[]), M1, Role::Manager).unwrap();
        assert!(!first.fully_approved);
        assert_eq!(
            decide_approval(&p, &ctx(&[M1], &[]), M1, Role::Manager),
            Err(ApprovalError::AlreadyApproved)
        );
        let second = decide_approval(&p, &ctx(&[M1], &[]), M2, Role::Admin).unwrap();
        assert!(second.fully_approved);
    }

    #[test]
    fn prd_never_allows_self_approval_even_if_the_row_says_so() {
        let p = policy("prd", 1, true);
        assert_eq!(
            decide_approval(&p, &ctx(&[], &[]), REQUESTER, Role::Admin),
            Err(ApprovalError::SelfApproval(Decision::Approve))
        );
        assert_eq!(
            decide_approval(&p, &ctx(&[], &[AUTHOR]), AUTHOR, Role::Admin),
            Err(ApprovalError::AuthorApproval(Decision::Approve))
        );
    }

    #[test]
    fn self_approval_follows_policy_elsewhere() {
        let strict = policy("stg", 1, false);
        assert_eq!(
            decide_approval(&strict, &ctx(&[], &[]), REQUESTER, Role::Manager),
            Err(ApprovalError::SelfApproval(Decision::Approve))
        );
        let lax = policy("daily", 1, true);
        assert!(decide_approval(&lax, &ctx(&[], &[AUTHOR]), AUTHOR, Role::Manager).is_ok());
    }

    #[test]
    fn stale_or_settled_runs_cannot_be_approved() {
        let p = policy("daily", 1, true);
        let mut c = ctx(&[], &[]);
        c.digest_current = false;
        assert_eq!(
            decide_approval(&p, &c, M1, Role::Manager),
            Err(ApprovalError::Stale)
        );
        for state in [RunState::Invalidated, RunState::Approved, RunState::Denied] {
            let mut c = ctx(&[], &[]);
            c.state = state;
            assert_eq!(
                decide_approval(&p, &c, M1, Role::Manager),
                Err(ApprovalError::WrongState(state))
            );
        }
    }

    #[test]
    fn a_refused_denial_says_deny() {
        let p = policy("prd", 2, false);
        let err = check_denial(&p, &ctx(&[], &[AUTHOR]), AUTHOR, Role::Manager).unwrap_err();
        assert_eq!(err, ApprovalError::AuthorApproval(Decision::Deny));
        assert!(err.to_string().contains("an author deny it"), "{err}");
        let err = check_denial(&p, &ctx(&[], &[]), REQUESTER, Role::Manager).unwrap_err();
        assert!(err.to_string().contains("its requester deny it"), "{err}");
        assert!(!err.to_string().contains("approve"), "{err}");
    }
}
