//! The server-rendered pages as a browser sees them: a cookie-keeping client
//! that follows redirects one at a time, one that carries an API token
//! instead of a session, and the checks the page tests share.

use reqwest::StatusCode;

use super::TestApp;

/// A script payload for fields that must come back escaped.
pub const XSS: &str = "<script>alert('x')</script>";

/// `payload` does not appear raw in `body`, and an escaped `<script>` does.
pub fn assert_escaped(body: &str, payload: &str, what: &str) {
    assert!(!body.contains(payload), "{what} renders the payload raw");
    assert!(body.contains("&lt;script&gt;"), "{what} shows it escaped");
}

/// A cookie-keeping HTTP client that follows redirects one at a time, like a
/// browser but observable.
pub struct Browser {
    pub client: reqwest::Client,
}

pub struct Page {
    pub status: StatusCode,
    pub url: String,
    pub body: String,
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Sends `req` and follows redirects until a non-redirect response, or
    /// until the next URL starts with `stop_before` (returned unvisited as a 3xx page).
    pub async fn follow(&self, req: reqwest::RequestBuilder, stop_before: Option<&str>) -> Page {
        let mut resp = req.send().await.expect("request is sent");
        let mut url = resp.url().to_string();
        for _ in 0..20 {
            if !resp.status().is_redirection() {
                break;
            }
            let location = resp.headers()[reqwest::header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned();
            let next = reqwest::Url::parse(&url)
                .unwrap()
                .join(&location)
                .unwrap()
                .to_string();
            if stop_before.is_some_and(|p| next.starts_with(p)) {
                return Page {
                    status: resp.status(),
                    url: next,
                    body: String::new(),
                };
            }
            url = next;
            resp = self
                .client
                .get(&url)
                .send()
                .await
                .expect("redirect is followed");
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Page { status, url, body }
    }

    pub async fn get(&self, url: &str) -> Page {
        self.follow(self.client.get(url), None).await
    }

    /// Signs in at the identity provider's login form shown on `login_page`.
    pub async fn submit_login(
        &self,
        login_page: &Page,
        email: &str,
        password: &str,
        stop_before: Option<&str>,
    ) -> Page {
        let action = login_page
            .body
            .split("action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no login form on {}: {}", login_page.url, login_page.body));
        let action = reqwest::Url::parse(&login_page.url)
            .unwrap()
            .join(action)
            .unwrap();
        let req = self
            .client
            .post(action)
            .form(&[("login", email), ("password", password)]);
        self.follow(req, stop_before).await
    }
}

/// The CSRF token a page carries in its forms.
pub fn csrf_token(html: &str) -> String {
    html.split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token on the page: {html}"))
        .to_owned()
}

/// A browser whose requests carry an API token (pages accept them too, and
/// need no CSRF token then; session forms with CSRF are covered for every
/// route by `signin.rs`).
pub struct TokenBrowser<'a> {
    app: &'a TestApp,
    token: &'a str,
    browser: Browser,
}

/// A response to a form: status, redirect target (unvisited) and body.
pub struct Posted {
    pub status: StatusCode,
    pub location: String,
    pub body: String,
}

impl<'a> TokenBrowser<'a> {
    pub fn new(app: &'a TestApp, token: &'a str) -> Self {
        TokenBrowser {
            app,
            token,
            browser: Browser::new(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let req = self
            .browser
            .client
            .get(self.app.url(path))
            .bearer_auth(self.token);
        self.browser.follow(req, None).await
    }

    /// Posts a form; the redirect it answers with is not followed.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Posted {
        let resp = self
            .browser
            .client
            .post(self.app.url(path))
            .bearer_auth(self.token)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Posted {
            status,
            location,
            body: resp.text().await.unwrap(),
        }
    }
}
