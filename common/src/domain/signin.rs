//! Who may sign in with a verified identity from the OIDC issuer, and as what.

use crate::config::Provisioning;

use super::Role;

/// What the ID token says about the person (already signature-checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub email: Option<String>,
    pub email_verified: bool,
    /// Google Workspace domain (`hd` claim).
    pub hosted_domain: Option<String>,
    pub name: Option<String>,
}

/// The sign-in settings of this installation.
#[derive(Debug, Clone)]
pub struct SignInPolicy<'a> {
    pub allowed_domains: &'a [String],
    pub provisioning: Provisioning,
    pub bootstrap_admins: &'a [String],
}

/// The user row that matches the e-mail, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownUser {
    None,
    Enabled(Role),
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// Sign in an existing user, optionally raising their role (bootstrap admins).
    Existing {
        email: String,
        promote_to: Option<Role>,
    },
    /// Create the user with this role, then sign in.
    Provision { email: String, role: Role },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the identity provider did not share an e-mail address")]
    NoEmail,
    #[error("your e-mail address is not verified with the identity provider")]
    EmailUnverified,
    #[error("accounts of this domain may not sign in here")]
    DomainNotAllowed,
    #[error("there is no migrate-hub account for this e-mail address; ask an admin to add you")]
    UnknownUser,
    #[error("your migrate-hub account is disabled")]
    Disabled,
}

impl Refusal {
    /// Stable reason recorded in the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoEmail => "no_email",
            Refusal::EmailUnverified => "email_unverified",
            Refusal::DomainNotAllowed => "domain_not_allowed",
            Refusal::UnknownUser => "unknown_user",
            Refusal::Disabled => "disabled",
        }
    }
}

/// The e-mail that `identity` may sign in as, checked for verification and
/// domain, before any user look-up.
pub fn verified_email(identity: &Identity, policy: &SignInPolicy<'_>) -> Result<String, Refusal> {
    let email = identity
        .email
        .as_deref()
        .map(|e| e.trim().to_lowercase())
        .filter(|e| e.contains('@'))
        .ok_or(Refusal::NoEmail)?;
    if !identity.email_verified {
        return Err(Refusal::EmailUnverified);
    }
    let bootstrap = policy.bootstrap_admins.contains(&email);
    if !bootstrap && !policy.allowed_domains.is_empty() && !domain_allowed(identity, &email, policy)
    {
        return Err(Refusal::DomainNotAllowed);
    }
    Ok(email)
}

fn domain_allowed(identity: &Identity, email: &str, policy: &SignInPolicy<'_>) -> bool {
    let email_domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let hd = identity.hosted_domain.as_deref().map(str::to_lowercase);
    policy
        .allowed_domains
        .iter()
        .any(|d| d == email_domain || hd.as_deref() == Some(d.as_str()))
}

/// Decides the sign-in of a verified `email` given the matching user row.
pub fn decide(
    email: String,
    known: KnownUser,
    policy: &SignInPolicy<'_>,
) -> Result<SignIn, Refusal> {
    let bootstrap = policy.bootstrap_admins.contains(&email);
    match known {
        KnownUser::Disabled => Err(Refusal::Disabled),
        KnownUser::Enabled(role) => Ok(SignIn::Existing {
            email,
            promote_to: (bootstrap && role != Role::Admin).then_some(Role::Admin),
        }),
        KnownUser::None if bootstrap => Ok(SignIn::Provision {
            email,
            role: Role::Admin,
        }),
        KnownUser::None
            if policy.provisioning == Provisioning::Domain
                && !policy.allowed_domains.is_empty() =>
        {
            Ok(SignIn::Provision {
                email,
                role: Role::User,
            })
        }
        KnownUser::None => Err(Refusal::UnknownUser),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(email: &str, verified: bool, hd: Option<&str>) -> Identity {
        Identity {
            email: Some(email.into()),
            email_verified: verified,
            hosted_domain: hd.map(Into::into),
            name: None,
        }
    }

    fn policy<'a>(
        domains: &'a [String],
        provisioning: Provisioning,
        admins: &'a [String],
    ) -> SignInPolicy<'a> {
        SignInPolicy {
            allowed_domains: domains,
            provisioning,
            bootstrap_admins: admins,
        }
    }

    #[test]
    fn unverified_email_is_refused() {
        let p = policy(&[], Provisioning::Off, &[]);
        assert_eq!(
            verified_email(&id("a@x.com", false, None), &p),
            Err(Refusal::EmailUnverified)
        );
    }

    #[test]
    fn missing_email_is_refused() {
        let p = policy(&[], Provisioning::Off, &[]);
        let mut identity = id("a@x.com", true, None);
        identity.email = None;
        assert_eq!(verified_email(&identity, &p), Err(Refusal::NoEmail));
    }

    #[test]
    fn domains_are_checked_by_hd_or_email_domain() {
        let domains = vec!["example.com".to_string()];
        let p = policy(&domains, Provisioning::Off, &[]);
        assert_eq!(
            verified_email(&id("A@Example.com", true, None), &p),
            Ok("a@example.com".into())
        );
        assert_eq!(
            verified_email(&id("a@gmail.com", true, Some("example.com")), &p),
            Ok("a@gmail.com".into())
        );
        assert_eq!(
            verified_email(&id("a@foreign.test", true, None), &p),
            Err(Refusal::DomainNotAllowed)
        );
        // An empty list allows any verified e-mail (of a known user).
        let open = policy(&[], Provisioning::Off, &[]);
        assert!(verified_email(&id("a@foreign.test", true, None), &open).is_ok());
    }

    #[test]
    fn provisioning_off_needs_a_known_user() {
        let domains = vec!["example.com".to_string()];
        let p = policy(&domains, Provisioning::Off, &[]);
        assert_eq!(
            decide("a@example.com".into(), KnownUser::None, &p),
            Err(Refusal::UnknownUser)
        );
        assert_eq!(
            decide(
                "a@example.com".into(),
                KnownUser::Enabled(Role::Manager),
                &p
            ),
            Ok(SignIn::Existing {
                email: "a@example.com".into(),
                promote_to: None
            })
        );
    }

    #[test]
    fn domain_provisioning_creates_users() {
        let domains = vec!["example.com".to_string()];
        let p = policy(&domains, Provisioning::Domain, &[]);
        assert_eq!(
            decide("a@example.com".into(), KnownUser::None, &p),
            Ok(SignIn::Provision {
                email: "a@example.com".into(),
                role: Role::User
            })
        );
        // Without a domain list there is nothing to provision from.
        let p = policy(&[], Provisioning::Domain, &[]);
        assert_eq!(
            decide("a@example.com".into(), KnownUser::None, &p),
            Err(Refusal::UnknownUser)
        );
    }

    #[test]
    fn bootstrap_admins_become_admin_but_disabled_stays_out() {
        let admins = vec!["boss@example.com".to_string()];
        let p = policy(&[], Provisioning::Off, &admins);
        assert_eq!(
            decide("boss@example.com".into(), KnownUser::None, &p),
            Ok(SignIn::Provision {
                email: "boss@example.com".into(),
                role: Role::Admin
            })
        );
        assert_eq!(
            decide(
                "boss@example.com".into(),
                KnownUser::Enabled(Role::User),
                &p
            ),
            Ok(SignIn::Existing {
                email: "boss@example.com".into(),
                promote_to: Some(Role::Admin)
            })
        );
        assert_eq!(
            decide("boss@example.com".into(), KnownUser::Disabled, &p),
            Err(Refusal::Disabled)
        );
    }
}
