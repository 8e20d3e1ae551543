//! Migration checksums: SHA-256 over the `up` and `down` text.
//!
//! Only two normalisations are applied before hashing, so that a file saved by
//! an editor on another platform does not look like an edit: a leading UTF-8
//! byte-order mark is dropped and CRLF line endings become LF. Everything else
//! (whitespace, comments, case) is significant, because it is what runs.
//!
//! A migration's down script is either absent (it cannot be rolled back) or
//! present, possibly empty (rolling back needs no SQL). The hashed bytes are
//!
//! ```text
//! u64be(len(up)) ‖ up ‖ u64be(len(down)) ‖ down            absent, or present and not blank
//! u64be(len(up)) ‖ up ‖ u64be(len(down)) ‖ down ‖ FF×8     present and blank
//! ```
//!
//! where an absent down script is hashed as its stored text (empty for every
//! migration written since the distinction exists; possibly whitespace for
//! older ones, which meant "absent" then) and "blank" means nothing but
//! whitespace. The first form is the one every checksum had before absent and
//! empty were told apart, so checksums already recorded in targets' histories
//! stay valid; the eight `FF` bytes (a length no text can have) make a present
//! but blank down script hash differently from an absent one.

use std::{borrow::Cow, fmt};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A lowercase hex SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Checksum(String);

/// Appended after a present but blank down script; see the module docs.
const PRESENT_BLANK_DOWN: [u8; 8] = [0xff; 8];

impl Checksum {
    /// The checksum of a migration's scripts; `down_sql` is `None` when the
    /// migration cannot be rolled back.
    pub fn of(up_sql: &str, down_sql: Option<&str>) -> Self {
        match down_sql {
            Some(down) => Self::of_stored(up_sql, down, true),
            None => Self::of_stored(up_sql, "", false),
        }
    }

    /// The checksum of scripts as the tool database stores them: the down
    /// text, and whether it is present (`reversible`). An absent down script
    /// stored with text (whitespace, from before absent and empty were told
    /// apart) hashes as that text, as it always did.
    pub fn of_stored(up_sql: &str, down_text: &str, reversible: bool) -> Self {
        let mut hasher = Sha256::new();
        let (up, down) = (normalize(up_sql), normalize(down_text));
        // Length-prefixed, so moving text between `up` and `down` changes the digest.
        for part in [&up, &down] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        if reversible && down.trim().is_empty() {
            hasher.update(PRESENT_BLANK_DOWN);
        }
        Self(hex::encode(hasher.finalize()))
    }

    /// A digest of one text, for names derived from it (lock keys).
    pub fn of_text(text: &str) -> Self {
        Self::of(text, None)
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
        let plain = Checksum::of(
            "CREATE TABLE a (id int);\nSELECT 1;\n",
            Some("DROP TABLE a;\n"),
        );
        let windows = Checksum::of(
            "\u{feff}CREATE TABLE a (id int);\r\nSELECT 1;\r\n",
            Some("DROP TABLE a;\r\n"),
        );
        assert_eq!(plain, windows);
    }

    #[test]
    fn any_other_change_does() {
        let base = Checksum::of("SELECT 1;", Some(""));
        assert_ne!(base, Checksum::of("SELECT 1; ", Some("")));
        assert_ne!(base, Checksum::of("select 1;", Some("")));
        assert_ne!(base, Checksum::of("SELECT 1;", Some("SELECT 2;")));
        // A lone CR is not a line ending we normalise.
        assert_ne!(
            Checksum::of("a\nb", Some("")),
            Checksum::of("a\rb", Some(""))
        );
    }

    #[test]
    fn up_and_down_are_not_interchangeable() {
        assert_ne!(Checksum::of("ab", Some("c")), Checksum::of("a", Some("bc")));
        assert_ne!(Checksum::of("x", Some("")), Checksum::of("", Some("x")));
    }

    #[test]
    fn is_lowercase_hex_sha256() {
        let c = Checksum::of("", Some(""));
        assert_eq!(c.as_str().len(), 64);
        assert!(
            c.as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    /// The encoding from before absent and empty down scripts were told
    /// apart: checksums recorded then (in the hub and in targets' histories)
    /// must come out the same.
    fn legacy(up: &str, down: &str) -> String {
        let mut h = Sha256::new();
        for part in [up, down] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    #[test]
    fn absent_and_written_downs_keep_the_checksums_recorded_before() {
        let up = "CREATE TABLE a (id int);\n";
        assert_eq!(Checksum::of(up, None).as_str(), legacy(up, ""));
        assert_eq!(
            Checksum::of(up, Some("DROP TABLE a;\n")).as_str(),
            legacy(up, "DROP TABLE a;\n")
        );
        // An old row whose blank down meant "absent" keeps its text and its sum.
        assert_eq!(
            Checksum::of_stored(up, "\n", false).as_str(),
            legacy(up, "\n")
        );
        // Lock keys derived from a name do not move either.
        assert_eq!(Checksum::of_text("shop").as_str(), legacy("shop", ""));
    }

    #[test]
    fn an_empty_down_is_not_an_absent_one() {
        let up = "SELECT 1;";
        let absent = Checksum::of(up, None);
        assert_ne!(absent, Checksum::of(up, Some("")));
        assert_ne!(Checksum::of(up, Some("")), Checksum::of(up, Some("\n")));
        assert_ne!(
            Checksum::of_stored(up, "\n", false),
            Checksum::of_stored(up, "\n", true)
        );
        // A down script with a comment in it is written SQL, hashed as always.
        assert_eq!(
            Checksum::of(up, Some("-- nothing to undo")).as_str(),
            legacy(up, "-- nothing to undo")
        );
        // Empty up scripts (no-op versions) hash like any other text.
        assert_ne!(Checksum::of("", None), Checksum::of("", Some("")));
    }

    #[test]
    fn only_a_leading_bom_is_dropped() {
        assert_ne!(
            Checksum::of("a\u{feff}b", Some("")),
            Checksum::of("ab", Some(""))
        );
    }

    proptest! {
        #[test]
        fn crlf_normalisation_is_invisible(lines in prop::collection::vec("[^\r\n\u{feff}]{0,20}", 0..8)) {
            let lf = lines.join("\n");
            let crlf = format!("\u{feff}{}", lines.join("\r\n"));
            prop_assert_eq!(Checksum::of(&lf, Some(&lf)), Checksum::of(&crlf, Some(&crlf)));
        }

        #[test]
        fn text_without_bom_or_cr_is_untouched(text in "[^\r\u{feff}]{0,64}") {
            prop_assert_eq!(normalize(&text), Cow::Borrowed(text.as_str()));
        }
    }
}
