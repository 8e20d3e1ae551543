//! What the edge refuses before a handler sees it. PostgreSQL cannot store
//! a NUL (0x00) in text, and a control character in an id, a name or a
//! query value is never meant: both are refused by the extractors
//! (`ApiPath`, `ApiQuery`, `ApiJson`, `ApiForm` in `error.rs`), naming the
//! field, so no handler has to remember them and none answers 500.

use serde_json::Value;

/// Ids, path segments and query values hold no control character at all.
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// Free text (names, descriptions, comments) may break lines and hold tabs,
/// but no other control character.
pub fn has_control_in_text(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// The path (`email`, `files[3].path`) of the first string in a JSON body
/// that holds a NUL, object keys included; `None` when there is none or the
/// body is not JSON (its parser then says what is wrong).
pub fn nul_in_json(bytes: &[u8]) -> Option<String> {
    // JSON text cannot carry a raw NUL: it is always written `\u0000`, so a
    // body without that escape (the common case) is not parsed twice.
    if !contains_nul_escape(bytes) {
        return None;
    }
    let value: Value = serde_json::from_slice(bytes).ok()?;
    nul_at(&value, String::new())
}

fn contains_nul_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(6)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && w[2..].iter().all(|&b| b == b'0'))
}

fn nul_at(value: &Value, path: String) -> Option<String> {
    let root = |path: String| if path.is_empty() { "body".into() } else { path };
    match value {
        Value::String(s) if s.contains('\0') => Some(root(path)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_at(item, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                return Some(root(path.clone()));
            }
            let field = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            nul_at(item, field)
        }),
        _ => None,
    }
}

/// A parameter's name as the error names it: control characters escaped.
pub fn printable(name: &str) -> String {
    name.escape_debug().to_string()
}

/// A field that breaks a text rule: `invalid_field` (422) naming it, once
/// converted into the API's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidText {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for InvalidText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl InvalidText {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Checks a required free-text field: present, trimmed, bounded.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String, InvalidText> {
    let value = value.trim();
    if value.is_empty() {
        return Err(InvalidText::new(field, "must not be empty"));
    }
    optional_text(field, value, max)
}

/// Checks an optional free-text field: bounded, no control characters
/// other than tab and line breaks.
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<String, InvalidText> {
    if value.chars().count() > max {
        return Err(InvalidText::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if has_control_in_text(value) {
        return Err(InvalidText::new(
            field,
            "must not contain control characters other than tab and line breaks",
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_found_with_its_path() {
        let at = |s: &str| nul_in_json(s.as_bytes());
        assert_eq!(
            at(r#"{"email":"a\u0000@example.com"}"#).as_deref(),
            Some("email")
        );
        assert_eq!(
            at(r#"{"files":[{"path":"a"},{"path":"b"},{"path":"c"},{"path":"d\u0000"}]}"#)
                .as_deref(),
            Some("files[3].path")
        );
        assert_eq!(at(r#"{"a":{"b":["\u0000"]}}"#).as_deref(), Some("a.b[0]"));
        assert_eq!(at(r#""\u0000""#).as_deref(), Some("body"));
        assert_eq!(at(r#"{"k\u0000":1}"#).as_deref(), Some("body"));
        // An escaped backslash followed by "u0000" is text, not a NUL.
        assert_eq!(at(r#"{"up_sql":"\\u0000"}"#), None);
        assert_eq!(at(r#"{"up_sql":"select 1;\n\tselect 2;"}"#), None);
        assert_eq!(at("not json \\u0000"), None);
    }

    #[test]
    fn names_may_hold_line_breaks_and_tabs_only() {
        assert!(!has_control_in_text("Billing\tservice\r\nnotes"));
        assert!(has_control_in_text("a\u{1b}[31m"));
        assert!(has_control_in_text("a\0"));
        assert!(has_control_in_text("a\u{7f}"));
        assert!(has_control("a\tb"));
        assert!(!has_control("prd-2"));
    }
}
