//! Out-of-order versions: a version lower than one already applied.
//!
//! Migration tools apply versions in order and treat a version that appears
//! below the highest applied one as a mistake unless told otherwise
//! (Flyway's `outOfOrder`, goose's `-allow-missing`). The hub does the same:
//! adding such a version to a project needs an explicit flag, and a run that
//! would apply one on a target says so, so its approver sees it.

use super::version::Version;

/// A new version lower than the highest version applied on a target of the
/// project.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "version {version} is lower than version {applied}, already applied on target {target}; \
     set allow_out_of_order to add it anyway"
)]
pub struct OutOfOrder {
    pub version: Version,
    pub applied: Version,
    pub target: String,
}

/// Refuses the lowest of `new` versions that sits below `highest_applied`
/// (the project's highest applied version and the target holding it),
/// unless `allow` is set.
pub fn check_new<'a>(
    new: impl IntoIterator<Item = &'a Version>,
    highest_applied: Option<(&Version, &str)>,
    allow: bool,
) -> Result<(), OutOfOrder> {
    let Some((applied, target)) = highest_applied else {
        return Ok(());
    };
    match new.into_iter().filter(|v| *v < applied).min() {
        Some(version) if !allow => Err(OutOfOrder {
            version: version.clone(),
            applied: applied.clone(),
            target: target.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Whether an `up` run would apply, on a target holding `applied`, a
/// version of `pending` below the target's highest applied version.
pub fn applies_out_of_order<'a>(
    pending: impl IntoIterator<Item = &'a Version>,
    applied: &[Version],
) -> bool {
    let Some(highest) = applied.iter().max() else {
        return false;
    };
    pending
        .into_iter()
        .any(|v| v < highest && !applied.contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn new_versions_below_the_highest_applied_need_the_flag() {
        let ten = v("10");
        let new = [v("12"), v("5"), v("3")];
        let err = check_new(&new, Some((&ten, "shard-1")), false).unwrap_err();
        assert_eq!(
            (err.version.to_string(), err.applied.to_string()),
            ("3".into(), "10".into())
        );
        assert!(
            err.to_string()
                .contains("version 3 is lower than version 10")
        );
        assert!(err.to_string().contains("shard-1"));
        assert!(check_new(&new, Some((&ten, "shard-1")), true).is_ok());
        assert!(check_new(&[v("11")], Some((&ten, "shard-1")), false).is_ok());
        assert!(check_new(&new, None, false).is_ok(), "nothing applied yet");
        // Numeric order: 9 < 10 although "9" > "10" as text.
        assert!(check_new(&[v("9")], Some((&ten, "a")), false).is_err());
    }

    #[test]
    fn a_run_is_out_of_order_on_targets_past_a_pending_version() {
        let applied = [v("1"), v("10")];
        assert!(applies_out_of_order(&[v("5"), v("11")], &applied));
        assert!(!applies_out_of_order(&[v("11"), v("12")], &applied));
        assert!(!applies_out_of_order(&[v("5")], &[]), "a fresh target");
        assert!(
            !applies_out_of_order(&[v("10")], &applied),
            "applied versions are not pending"
        );
    }
}
