//! Roles and the capability matrix of the product.
//!
//! Every route and background action names one [`Capability`]; whether a role
//! has it is decided here and nowhere else.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Roles are ordered: every capability of `user` is also a `manager`'s, and so on.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Manager,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::User, Role::Manager, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role must be one of user, manager, admin; got {0:?}")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "manager" => Ok(Role::Manager),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// What someone may do. Ownership rules ("own runs", "own actions") are
/// checked on top of these by the rule that owns the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Sign in; view projects, migrations, runs, targets (never secrets).
    View,
    /// Create and edit migrations, request runs, create own API tokens.
    Author,
    /// Execute or cancel a run someone else requested.
    OperateAnyRun,
    /// Approve or deny runs.
    Approve,
    /// Create and edit DB sets and targets, test connections.
    ManageTargets,
    /// Create and archive projects, manage environments and policies.
    ManageProjects,
    /// Manage users and roles, rotate keys, see the worker fleet.
    Administer,
    /// Read every audit row (users see their own).
    ReadAllAudit,
    /// Export the audit log.
    ExportAudit,
    /// Waive a finding of a run's SQL review, with a reason.
    WaiveFindings,
}

impl Capability {
    /// The least role that holds this capability.
    pub fn minimum_role(self) -> Role {
        match self {
            Capability::View | Capability::Author => Role::User,
            Capability::OperateAnyRun
            | Capability::Approve
            | Capability::ManageTargets
            | Capability::ReadAllAudit => Role::Manager,
            Capability::ManageProjects
            | Capability::Administer
            | Capability::ExportAudit
            | Capability::WaiveFindings => Role::Admin,
        }
    }
}

/// Whether `role` holds `capability`.
pub fn allows(role: Role, capability: Capability) -> bool {
    role >= capability.minimum_role()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_matches_the_requirements() {
        use Capability::*;
        let table = [
            (View, [true, true, true]),
            (Author, [true, true, true]),
            (OperateAnyRun, [false, true, true]),
            (Approve, [false, true, true]),
            (ManageTargets, [false, true, true]),
            (ManageProjects, [false, false, true]),
            (Administer, [false, false, true]),
            (ReadAllAudit, [false, true, true]),
            (ExportAudit, [false, false, true]),
            (WaiveFindings, [false, false, true]),
        ];
        for (cap, expected) in table {
            for (role, want) in Role::ALL.into_iter().zip(expected) {
                assert_eq!(allows(role, cap), want, "{role} / {cap:?}");
            }
        }
    }

    #[test]
    fn roles_parse_and_print() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Admin".parse::<Role>().is_err());
    }
}
