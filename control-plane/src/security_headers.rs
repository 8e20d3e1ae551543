//! Headers that tell browsers and caches what they may do with an answer:
//! the Content-Security-Policy of every response, and `no-store` on every
//! answer to a request that carries credentials.

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::Response,
};
use reqwest::Url;

use crate::auth::session_store;

/// The Content-Security-Policy of every response. Forms may post to this
/// site only, plus the identity provider's origin: the sign-in form's GET
/// to `/auth/login` is redirected there, and browsers apply `form-action`
/// to the redirects that follow a form submission.
pub fn content_security_policy(oidc_issuer: Option<&str>) -> String {
    let mut form_action = String::from("'self'");
    if let Some(origin) = oidc_issuer.and_then(issuer_origin) {
        form_action.push(' ');
        form_action.push_str(&origin);
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         frame-ancestors 'none'; form-action {form_action}; base-uri 'none'"
    )
}

/// `scheme://host[:port]` of an http(s) issuer URL; `None` for anything
/// else, so a malformed setting cannot add to or break the policy.
fn issuer_origin(issuer: &str) -> Option<String> {
    let url = Url::parse(issuer).ok()?;
    if !matches!(url.scheme(), "https" | "http") {
        return None;
    }
    let origin = url.origin().ascii_serialization();
    origin
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:/[]".contains(&b))
        .then_some(origin)
}

/// [`content_security_policy`] as a header value.
pub fn content_security_policy_header(oidc_issuer: Option<&str>) -> HeaderValue {
    HeaderValue::from_str(&content_security_policy(oidc_issuer))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
}

/// Whether the request carries credentials: an `Authorization` header or
/// the session cookie. The answer may then be personal (a page for the
/// signed-in viewer, an API answer, a new token shown once).
pub fn carries_credentials(headers: &HeaderMap) -> bool {
    let session_cookie = format!("{}=", session_store::COOKIE_NAME);
    headers.contains_key(header::AUTHORIZATION)
        || headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .any(|c| c.trim_start().starts_with(&session_cookie))
}

/// `Cache-Control: no-store` on every answer to a request that carries
/// credentials, so no browser or shared cache keeps a personal page, API
/// answer or token. An answer that sets its own `Cache-Control` (the
/// static stylesheet and script) keeps it.
pub async fn no_store_with_credentials(req: Request, next: Next) -> Response {
    let personal = carries_credentials(req.headers());
    let mut response = next.run(req).await;
    if personal && !response.headers().contains_key(header::CACHE_CONTROL) {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITHOUT_ISSUER: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
        img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

    #[test]
    fn forms_post_to_this_site_and_the_issuer_origin_only() {
        assert_eq!(content_security_policy(None), WITHOUT_ISSUER);
        for (issuer, origin) in [
            ("https://accounts.google.com", "https://accounts.google.com"),
            (
                "https://accounts.google.com/",
                "https://accounts.google.com",
            ),
            ("http://127.0.0.1:4011/oidc", "http://127.0.0.1:4011"),
            ("https://idp.example:443/realms/x", "https://idp.example"),
        ] {
            let policy = content_security_policy(Some(issuer));
            assert!(
                policy.contains(&format!("form-action 'self' {origin}; ")),
                "{issuer}: {policy}"
            );
            assert!(!policy.contains("https: http:"), "{policy}");
            assert!(HeaderValue::from_str(&policy).is_ok());
        }
    }

    #[test]
    fn a_malformed_issuer_adds_nothing() {
        for issuer in ["", "not a url", "javascript:alert(1)", "data:text/html,x"] {
            assert_eq!(
                content_security_policy(Some(issuer)),
                WITHOUT_ISSUER,
                "{issuer}"
            );
        }
    }

    #[test]
    fn credentials_are_a_bearer_token_or_the_session_cookie() {
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(name, HeaderValue::from_str(value).unwrap());
            }
            map
        };
        assert!(carries_credentials(&headers(&[(
            header::AUTHORIZATION,
            "Bearer mh_x"
        )])));
        assert!(carries_credentials(&headers(&[(
            header::COOKIE,
            "mh_session=abc"
        )])));
        assert!(carries_credentials(&headers(&[(
            header::COOKIE,
            "theme=dark; mh_session=abc"
        )])));
        assert!(carries_credentials(&headers(&[
            (header::COOKIE, "theme=dark"),
            (header::COOKIE, "mh_session=abc"),
        ])));
        assert!(!carries_credentials(&headers(&[])));
        assert!(!carries_credentials(&headers(&[(
            header::COOKIE,
            "theme=dark; not_mh_session=1"
        )])));
    }
}
