//! Project slugs: `[a-z0-9-]{2,40}`, used in URLs.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ProjectSlug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slug must be 2 to 40 characters of a-z, 0-9 and '-'")]
pub struct InvalidSlug;

impl ProjectSlug {
    pub fn parse(text: &str) -> Result<Self, InvalidSlug> {
        let ok = (2..=40).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidSlug)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProjectSlug {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_slugs() {
        for ok in ["ab", "orders", "billing-v2", "a1", &"x".repeat(40)] {
            assert!(ProjectSlug::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_invalid_slugs() {
        for bad in [
            "",
            "a",
            "Orders",
            "with space",
            "under_score",
            "é-x",
            &"x".repeat(41),
            "a/b",
        ] {
            assert_eq!(ProjectSlug::parse(bad), Err(InvalidSlug), "{bad}");
        }
    }
}
