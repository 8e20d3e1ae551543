//! Where the browser goes after sign-in: only a path on this site.
//!
//! `return_to` comes from the query string of `/signin` and `/auth/login`, so
//! anyone can put anything in a link. Browsers are forgiving in ways that
//! turn a harmless-looking path into another origin: they drop tabs and
//! newlines (`/\t/evil.test` → `//evil.test`), read `\` as `/`, and resolve
//! dot segments (`/./..//evil.test`). The rule is therefore "what remains
//! after every such normalisation is a single-slash path", checked on the
//! percent-decoded text as well, and the value that is kept is encoded so
//! it is a valid `Location` header.

use reqwest::Url;

/// Longest `return_to` that is kept; longer ones are not links a person
/// followed on this site.
const MAX_LEN: usize = 2048;

/// How many layers of percent-encoding are looked through (`%252F` is `/`
/// encoded twice); text still changing after that is refused.
const MAX_DECODE_ROUNDS: usize = 4;

/// Stand-in origin for the final check: the value must resolve against it
/// to the same origin.
const BASE: &str = "http://return-to.invalid/";

/// A local path to return to after sign-in; anything else becomes `/`, so the
/// sign-in flow cannot be used to redirect to another site.
pub fn safe_return_to(raw: Option<&str>) -> String {
    raw.and_then(local_path).unwrap_or_else(|| "/".to_owned())
}

/// `raw` as a `Location` value that stays on this origin, or `None`.
fn local_path(raw: &str) -> Option<String> {
    if raw.len() > MAX_LEN || !has_one_leading_slash(raw) || !valid_escapes(raw) {
        return None;
    }
    let split = raw.find(['?', '#']).unwrap_or(raw.len());
    let (path, rest) = raw.split_at(split);
    let mut path = path.as_bytes().to_vec();
    let mut rest = rest.as_bytes().to_vec();
    for round in 0..=MAX_DECODE_ROUNDS {
        if !acceptable_path(&path) || has_forbidden_bytes(&rest) {
            return None;
        }
        let (next_path, next_rest) = (percent_decode(&path), percent_decode(&rest));
        if next_path == path && next_rest == rest {
            break;
        }
        if round == MAX_DECODE_ROUNDS {
            return None;
        }
        (path, rest) = (next_path, next_rest);
    }
    let encoded = encode_for_location(raw);
    stays_on_origin(&encoded).then_some(encoded)
}

fn has_one_leading_slash(text: &str) -> bool {
    text.strip_prefix('/')
        .is_some_and(|rest| !rest.starts_with('/'))
}

/// Every `%` starts a two-digit hex escape (RFC 3986 `pct-encoded`).
fn valid_escapes(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// One layer of a path: single leading slash, no forbidden bytes, no `//`
/// before or after dot segments are resolved, not the sign-in flow itself.
fn acceptable_path(path: &[u8]) -> bool {
    if has_forbidden_bytes(path) {
        return false;
    }
    let Ok(path) = std::str::from_utf8(path) else {
        // Not text after decoding: it names no page of this site.
        return false;
    };
    let resolved = remove_dot_segments(path);
    has_one_leading_slash(path)
        && !path.contains("//")
        && has_one_leading_slash(&resolved)
        && !resolved.contains("//")
        && !resolved.starts_with("/auth/")
}

/// Control characters (C0, DEL and, in UTF-8, C1 and other Unicode `Cc`)
/// and backslashes.
fn has_forbidden_bytes(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\')
        || String::from_utf8_lossy(bytes).chars().any(char::is_control)
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((high, low)) => {
                // Two hex digits fit a byte.
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'%'));
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." if last => out.push(""),
            "." => {}
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Percent-encodes everything a URI may not hold literally (non-ASCII,
/// space, `"<>[]^`{|}`), so the value is a valid header and a valid
/// relative reference. Existing escapes are kept as they are.
fn encode_for_location(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?#%".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Resolved the way a browser resolves `Location` (WHATWG URL), the value
/// lands on the same origin and on a single-slash path.
fn stays_on_origin(location: &str) -> bool {
    let Ok(base) = Url::parse(BASE) else {
        return false;
    };
    base.join(location).is_ok_and(|url| {
        url.origin() == base.origin()
            && url.username().is_empty()
            && url.password().is_none()
            && has_one_leading_slash(url.path())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(raw: &str) -> String {
        safe_return_to(Some(raw))
    }

    #[test]
    fn local_paths_are_kept() {
        for path in [
            "/",
            "/runs/1",
            "/tokens",
            "/projects/shop?tab=runs",
            "/ok?x=1#f",
            "/projects/shop#webhooks",
            "/a/../b",
            "/runs/1?next=https://example.com/x",
            "/search?q=a%2Fb",
            "/admin/users?role=manager&disabled=false",
        ] {
            assert_eq!(kept(path), path, "{path}");
        }
    }

    #[test]
    fn unicode_is_kept_percent_encoded() {
        assert_eq!(kept("/projects/café"), "/projects/caf%C3%A9");
        assert_eq!(kept("/search?q=日本"), "/search?q=%E6%97%A5%E6%9C%AC");
        assert_eq!(kept("/a b"), "/a%20b");
        // Already-encoded UTF-8 stays as it is.
        assert_eq!(kept("/projects/caf%C3%A9"), "/projects/caf%C3%A9");
        // A full-width solidus is not a slash to anyone.
        assert_eq!(kept("/／evil.test"), "/%EF%BC%8Fevil.test");
    }

    #[test]
    fn other_sites_and_tricks_become_the_home_page() {
        for bad in [
            // Tabs and newlines are dropped by browsers: `//evil.test`.
            "/\t/evil.test/",
            "/%09/evil.test/",
            "/\n/evil.test",
            "/%0A/evil.test",
            "/\r\n/evil.test",
            "/%0D%0A/evil.test",
            "/\u{0}/evil.test",
            "/%00/evil.test",
            "/\u{7f}/evil.test",
            "/\u{85}/evil.test",
            "/%C2%85/evil.test",
            // Backslashes are slashes to browsers.
            "/\\evil",
            "/\\/evil",
            "/%5Cevil",
            "/%5C%5Cevil",
            // Protocol-relative, encoded or hidden behind dot segments.
            "//evil",
            "//evil.test/",
            "///evil.test",
            "/%2F/evil",
            "/%2f/evil",
            "/%252F/evil",
            "/%25252F/evil",
            "/./..//evil",
            "/..//evil",
            "/a/..//evil",
            "/%2E%2E//evil",
            "/%2e/%2e%2e/%2Fevil",
            "/a//b",
            // Absolute URLs and things that are not paths.
            "https://evil",
            "https://evil.test/",
            "http:/evil.test",
            "javascript:alert(1)",
            "evil",
            "evil.test/x",
            "",
            " /x",
            // Invalid escapes, or too many layers of them.
            "/ok%zz",
            "/ok%2",
            "/%2525252F/evil",
            // The sign-in flow itself.
            "/auth/login",
            "/auth/callback?code=x",
            "/x/../auth/login",
            "/%61uth/login",
            // Control characters and backslashes in the query or fragment.
            "/ok?x=\n",
            "/ok?x=%0A",
            "/ok#\\evil",
        ] {
            assert_eq!(kept(bad), "/", "{bad:?}");
        }
        assert_eq!(safe_return_to(None), "/");
        assert_eq!(kept(&format!("/{}", "a".repeat(MAX_LEN))), "/");
    }

    /// Every byte, raw or percent-encoded, between the slashes of
    /// `/?/evil.test/` and doubled before the host: whatever is kept is a
    /// valid header value and, resolved the way browsers do, stays here.
    #[test]
    fn no_single_character_leads_elsewhere() {
        let base = Url::parse("https://hub.example/signin").unwrap();
        let mut candidates = Vec::new();
        for b in 0u8..=0xff {
            candidates.push(format!("/%{b:02X}/evil.test/"));
            candidates.push(format!("/%{b:02X}%{b:02X}evil.test/"));
            candidates.push(format!("/x/..%{b:02X}/evil.test/"));
        }
        for c in (0u32..0x3100)
            .filter_map(char::from_u32)
            .chain(['\u{2028}', '\u{feff}'])
        {
            candidates.push(format!("/{c}/evil.test/"));
            candidates.push(format!("/{c}{c}evil.test/"));
            candidates.push(format!("/x/..{c}/evil.test/"));
        }
        for raw in candidates {
            let location = kept(&raw);
            assert!(
                axum::http::HeaderValue::from_str(&location).is_ok(),
                "{raw:?} → {location:?}"
            );
            assert!(
                location.bytes().all(|b| b.is_ascii_graphic()),
                "{raw:?} → {location:?}"
            );
            let landed = base.join(&location).unwrap();
            assert_eq!(landed.host_str(), Some("hub.example"), "{raw:?}");
            assert!(!landed.path().starts_with("//"), "{raw:?} → {landed}");
        }
    }

    #[test]
    fn dot_segments_resolve_as_in_rfc_3986() {
        for (path, resolved) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/./..//evil", "//evil"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/a//..", "/a/"),
            ("/", "/"),
        ] {
            assert_eq!(remove_dot_segments(path), resolved, "{path}");
        }
    }
}
