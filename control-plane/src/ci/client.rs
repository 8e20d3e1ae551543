//! The HTTP side of the pipeline client: one bearer token, JSON in and out,
//! and every refusal turned into the API's `{code, message}`.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::Failure;

/// How long one request may take: a hung control plane fails the step
/// instead of the pipeline's own (often much longer) job timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A migrate-hub instance as one API token sees it.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: String,
}

/// Never shows the token: a `{:?}` in a log line must not leak it.
impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// An answer of the API: its status and JSON body (`Null` when empty, a
/// JSON string when the body was not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The `{"error": {"code", "message"}}` of a refusal, or a code made
    /// from the status when the body has none (a proxy's error page).
    pub fn failure(&self) -> Failure {
        let error = &self.body["error"];
        match (error["code"].as_str(), error["message"].as_str()) {
            (Some(code), message) => Failure::new(code, message.unwrap_or_default()),
            _ => {
                let text = match &self.body {
                    Value::String(s) => s.chars().take(200).collect::<String>(),
                    Value::Null => String::new(),
                    other => other.to_string().chars().take(200).collect(),
                };
                Failure::new(
                    format!("http_{}", self.status.as_u16()),
                    format!(
                        "{} {}",
                        self.status
                            .canonical_reason()
                            .unwrap_or("unexpected status"),
                        text.trim()
                    )
                    .trim(),
                )
            }
        }
    }

    /// Worth asking again later: the control plane is restarting or
    /// behind a proxy that says so, or the token's request budget is spent.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        )
    }
}

impl Api {
    /// `url` is the instance's public URL (`MH_URL`), e.g.
    /// `https://migrate.example.com`; a trailing slash is fine.
    pub fn new(url: &str, token: &str) -> Result<Api, Failure> {
        let trimmed = url.trim().trim_end_matches('/');
        let base = Url::parse(trimmed)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Failure::new(
                    "configuration",
                    format!("MH_URL (--url) must be an http:// or https:// URL, not {trimmed:?}"),
                )
            })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(Failure::new(
                "configuration",
                "MH_TOKEN (--token) is empty; create a token with `control-plane token create`",
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("migrate-hub-ci/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::new("configuration", format!("HTTP client: {e}")))?;
        Ok(Api {
            http,
            base,
            token: token.to_owned(),
        })
    }

    /// The instance's URL of `segments`, each one percent-encoded, so a
    /// project slug can never reach another path.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have paths")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// `segments` under `/api/v1`.
    pub fn api_url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["api", "v1"];
        all.extend_from_slice(segments);
        self.url(&all)
    }

    /// Sends one request; only a failure to get an answer is an error here.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Answer, Failure> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            // reqwest's text names the URL (never the token) and the cause.
            Failure::new(
                "unreachable",
                format!("{method} {}: {}", url.path(), error_chain(&e)),
            )
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            Failure::new(
                "unreachable",
                format!("{method} {}: {}", url.path(), error_chain(&e)),
            )
        })?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }

    /// A request whose every non-2xx answer is a failure.
    pub async fn expect_success(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Answer, Failure> {
        let answer = self.send(method, url, body).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(answer.failure())
        }
    }
}

/// An error with its causes, e.g. "error sending request: connection refused".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
