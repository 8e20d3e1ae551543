//! Migration checksums: SHA-256 over the `up` and `down` text.
//!
//! Only two normalisations are applied before hashing, so that a file saved by
//! an editor on another platform does not look like an edit: a leading UTF-8
//! byte-order mark is dropped and CRLF line endings become LF. Everything else
//! (whitespace, comments, case) is significant, because it is what runs.

use std::{borrow::Cow, fmt};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A lowercase hex SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Checksum(String);

impl Checksum {
    /// The checksum of a migration's scripts.
    pub fn of(up_sql: &str, down_sql: &str) -> Self {
        let mut hasher = Sha256::new();
        // Length-prefixed, so moving text between `up` and `down` changes the digest.
        for part in [normalize(up_sql), normalize(down_sql)] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        Self(hex::encode(hasher.finalize()))
    }

    /// Wraps a stored digest. Stored values are checked by a constraint.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Drops a leading BOM and turns CRLF into LF; nothing else.
pub fn normalize(text: &str) -> Cow<'_, str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains("\r\n") {
        Cow::Owned(text.replace("\r\n", "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bom_and_crlf_do_not_change_the_checksum() {
        let plain = Checksum::of("CREATE TABLE a (id int);\nSELECT 1;\n", "DROP TABLE a;\n");
        let windows = Checksum::of(
            "\u{feff}CREATE TABLE a (id int);\r\nSELECT 1;\r\n",
            "DROP TABLE a;\r\n",
        );
        assert_eq!(plain, windows);
    }

    #[test]
    fn any_other_change_does() {
        let base = Checksum::of("SELECT 1;", "");
        assert_ne!(base, Checksum::of("SELECT 1; ", ""));
        assert_ne!(base, Checksum::of("select 1;", ""));
        assert_ne!(base, Checksum::of("SELECT 1;", "SELECT 2;"));
        // A lone CR is not a line ending we normalise.
        assert_ne!(Checksum::of("a\nb", ""), Checksum::of("a\rb", ""));
    }

    #[test]
    fn up_and_down_are_not_interchangeable() {
        assert_ne!(Checksum::of("ab", "c"), Checksum::of("a", "bc"));
        assert_ne!(Checksum::of("x", ""), Checksum::of("", "x"));
    }

    #[test]
    fn is_lowercase_hex_sha256() {
        let c = Checksum::of("", "");
        assert_eq!(c.as_str().len(), 64);
        assert!(
            c.as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn only_a_leading_bom_is_dropped() {
        assert_ne!(Checksum::of("a\u{feff}b", ""), Checksum::of("ab", ""));
    }

    proptest! {
        #[test]
        fn crlf_normalisation_is_invisible(lines in prop::collection::vec("[^\r\n\u{feff}]{0,20}", 0..8)) {
            let lf = lines.join("\n");
            let crlf = format!("\u{feff}{}", lines.join("\r\n"));
            prop_assert_eq!(Checksum::of(&lf, &lf), Checksum::of(&crlf, &crlf));
        }

        #[test]
        fn text_without_bom_or_cr_is_untouched(text in "[^\r\u{feff}]{0,64}") {
            prop_assert_eq!(normalize(&text), Cow::Borrowed(text.as_str()));
        }
    }
}
