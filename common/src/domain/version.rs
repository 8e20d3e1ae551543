//! Migration versions: dot-separated non-negative integers compared numerically.
//!
//! `1 < 1.1 < 2 < 10 < 20261124093000`. Leading zeros are dropped when a version
//! is parsed (`0001` is `1`), so golang-migrate's zero-padded names and Flyway's
//! `V1_1` both land on one canonical spelling. A version with more components
//! sorts after its own prefix (`1 < 1.0`), which matches PostgreSQL's ordering
//! of `numeric[]` used by the tool database.

use std::{cmp::Ordering, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most components a version may have, and most digits per component.
const MAX_COMPONENTS: usize = 8;
const MAX_DIGITS: usize = 38;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    components: Vec<u128>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version is empty")]
    Empty,
    #[error("version must be dot-separated integers (like 1, 1.2 or 20261124093000), got {0:?}")]
    Malformed(String),
    #[error("version has more than {MAX_COMPONENTS} components")]
    TooManyComponents,
    #[error("a version component has more than {MAX_DIGITS} digits")]
    TooLong,
}

impl Version {
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        let mut components = Vec::new();
        for part in text.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(VersionError::Malformed(text.to_owned()));
            }
            let digits = part.trim_start_matches('0');
            if digits.len() > MAX_DIGITS {
                return Err(VersionError::TooLong);
            }
            components.push(if digits.is_empty() {
                0
            } else {
                digits.parse().map_err(|_| VersionError::TooLong)?
            });
            if components.len() > MAX_COMPONENTS {
                return Err(VersionError::TooManyComponents);
            }
        }
        Ok(Self { components })
    }

    pub fn components(&self) -> &[u128] {
        &self.components
    }

    /// Components as decimal strings, for binding to a `numeric[]` sort key.
    pub fn sort_key(&self) -> Vec<String> {
        self.components.iter().map(u128::to_string).collect()
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.components.cmp(&other.components)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.components.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn orders_numerically_not_lexically() {
        assert!(v("2") < v("10"));
        assert!(v("1.2") < v("1.10"));
        assert!(v("1") < v("1.1"));
        assert!(v("9") < v("20261124093000"));
        assert!(v("20200831110752000003") < v("20260616000000000000"));
    }

    #[test]
    fn prefix_sorts_first() {
        assert!(v("1") < v("1.0"));
        assert_ne!(v("1"), v("1.0"));
    }

    #[test]
    fn leading_zeros_are_canonicalised() {
        assert_eq!(v("0001").to_string(), "1");
        assert_eq!(v("01.002"), v("1.2"));
        assert_eq!(v("0").to_string(), "0");
    }

    #[test]
    fn rejects_malformed_versions() {
        for bad in [
            "", " ", "a", "1.", ".1", "1..2", "1.a", "-1", "1_2", "v1", "1 .2",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(Version::parse(&"9".repeat(39)), Err(VersionError::TooLong));
        assert_eq!(
            Version::parse("1.2.3.4.5.6.7.8.9"),
            Err(VersionError::TooManyComponents)
        );
    }

    #[test]
    fn twenty_digit_kratos_versions_fit() {
        assert_eq!(
            v("20150100000001000000").to_string(),
            "20150100000001000000"
        );
    }

    proptest! {
        #[test]
        fn display_round_trips(parts in prop::collection::vec(0u128..u128::from(u64::MAX), 1..6)) {
            let text = parts.iter().map(u128::to_string).collect::<Vec<_>>().join(".");
            let parsed = v(&text);
            prop_assert_eq!(parsed.to_string(), text.clone());
            prop_assert_eq!(v(&parsed.to_string()), parsed);
        }

        #[test]
        fn order_matches_component_order(
            a in prop::collection::vec(0u128..1000, 1..5),
            b in prop::collection::vec(0u128..1000, 1..5),
        ) {
            let join = |p: &[u128]| p.iter().map(u128::to_string).collect::<Vec<_>>().join(".");
            prop_assert_eq!(v(&join(&a)).cmp(&v(&join(&b))), a.cmp(&b));
        }
    }
}
