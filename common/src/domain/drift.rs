//! Drift: where the hub's record of what is applied on a target and the
//! target's own `migrate_hub_history` disagree. The target state page lists
//! every disagreement; a job stops at the first one, because neither side
//! can then be trusted to say what is pending.

use std::{cmp::Ordering, fmt};

use serde::Serialize;

use super::Version;

/// One version on which the two records disagree. A missing side means the
/// version is recorded on the other side only.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub version: String,
    pub hub_checksum: Option<String>,
    pub target_checksum: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = &self.version;
        match (&self.hub_checksum, &self.target_checksum) {
            (Some(hub), Some(target)) => write!(
                f,
                "version {version} has checksum {target} on the target but {hub} in the hub"
            ),
            (None, Some(_)) => write!(
                f,
                "version {version} is in the target's history but not recorded in the hub"
            ),
            (_, None) => write!(
                f,
                "version {version} is recorded as applied in the hub but is missing from the target"
            ),
        }
    }
}

/// Every disagreement between the hub's applied (version, checksum) pairs
/// and the target's, in version order. Empty means in sync.
pub fn differences(hub: &[(String, String)], target: &[(String, String)]) -> Vec<Difference> {
    let mut versions: Vec<&str> = hub.iter().chain(target).map(|(v, _)| v.as_str()).collect();
    versions.sort_by(|a, b| version_order(a, b));
    versions.dedup();
    let find = |side: &[(String, String)], version: &str| {
        side.iter()
            .find(|(v, _)| v == version)
            .map(|(_, c)| c.clone())
    };
    versions
        .into_iter()
        .filter_map(|version| {
            let hub_checksum = find(hub, version);
            let target_checksum = find(target, version);
            (hub_checksum != target_checksum).then(|| Difference {
                version: version.to_owned(),
                hub_checksum,
                target_checksum,
            })
        })
        .collect()
}

/// The disagreement with the lowest version, if the records disagree at all.
pub fn first_difference(
    hub: &[(String, String)],
    target: &[(String, String)],
) -> Option<Difference> {
    differences(hub, target).into_iter().next()
}

/// Numeric version order; a version a foreign tool wrote that does not
/// parse sorts after every valid one, then as text.
fn version_order(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(v, c)| (v.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn identical_records_are_in_sync() {
        let both = pairs(&[("1", "a"), ("2", "b")]);
        assert!(differences(&both, &both).is_empty());
        assert!(differences(&[], &[]).is_empty());
    }

    #[test]
    fn every_kind_of_disagreement_is_listed_in_version_order() {
        let hub = pairs(&[("10", "x"), ("2", "b"), ("1", "a")]);
        let target = pairs(&[("1", "a"), ("2", "B"), ("3", "c"), ("legacy", "z")]);
        let found = differences(&hub, &target);
        let summary: Vec<(&str, Option<&str>, Option<&str>)> = found
            .iter()
            .map(|d| {
                (
                    d.version.as_str(),
                    d.hub_checksum.as_deref(),
                    d.target_checksum.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("2", Some("b"), Some("B")),
                ("3", None, Some("c")),
                ("10", Some("x"), None),
                ("legacy", None, Some("z")),
            ]
        );
    }

    #[test]
    fn the_first_difference_is_the_lowest_version() {
        let hub = pairs(&[("1", "a"), ("10", "x"), ("9", "c")]);
        let target = pairs(&[("1", "a"), ("9", "other"), ("2", "b")]);
        let first = first_difference(&hub, &target).unwrap();
        assert_eq!(first.version, "2");
        assert_eq!(
            first.to_string(),
            "version 2 is in the target's history but not recorded in the hub"
        );
        let both = pairs(&[("1", "a"), ("2", "b")]);
        assert_eq!(first_difference(&both, &both), None);
        assert_eq!(first_difference(&[], &[]), None);
    }

    #[test]
    fn differences_say_which_side_holds_what() {
        let hub = pairs(&[("1", "a"), ("9", "c")]);
        let target = pairs(&[("1", "a"), ("9", "other")]);
        assert_eq!(
            first_difference(&hub, &target).unwrap().to_string(),
            "version 9 has checksum other on the target but c in the hub"
        );
        assert_eq!(
            first_difference(&pairs(&[("1.1", "a")]), &[])
                .unwrap()
                .to_string(),
            "version 1.1 is recorded as applied in the hub but is missing from the target"
        );
    }
}
