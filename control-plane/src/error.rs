//! The API's one error type: every failure maps to a status and a stable
//! snake_case code, rendered as `{"error": {"code", "message"}}`.

use axum::{
    Json,
    extract::rejection::PathRejection,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use common::store::violated_constraint;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("sign in or send an API token")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    ForbiddenCode { code: &'static str, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    BadRequest(String),
    /// A rate limit was reached; answered with `Retry-After`.
    #[error("too many requests; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Anything unexpected. Logged with context; the client sees a generic message.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<crate::input::InvalidText> for ApiError {
    fn from(err: crate::input::InvalidText) -> Self {
        ApiError::Invalid {
            field: err.field,
            message: err.message,
        }
    }
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ForbiddenCode { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::ForbiddenCode { code, .. } => code,
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict { code, .. } => code,
            ApiError::Invalid { .. } => "invalid_field",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `not_found`, `invalid_field`, `duplicate_slug`.
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// With `invalid_field`: the field at fault (`name`, `targets[3].port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// What the client is told.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code().into(),
            // `Invalid` reads "field: message".
            message: self.to_string(),
            field: match self {
                ApiError::Invalid { field, .. } => Some(field.clone()),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(source) = &self {
            tracing::error!(error = format!("{source:#}"), "request failed");
        }
        let body = ErrorBody {
            error: self.detail(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(retry_after_secs),
            );
        }
        response
    }
}

/// Unique and check constraints that a client can violate map to 409/422;
/// the rest of the database's errors are internal.
impl From<common::lifecycle::LifecycleError> for ApiError {
    fn from(err: common::lifecycle::LifecycleError) -> Self {
        use common::lifecycle::LifecycleError as E;
        match err {
            E::NotFound(what) => ApiError::NotFound(what),
            E::Invalid { field, message } => ApiError::invalid(field, message),
            E::Conflict { code, message, .. } => ApiError::conflict(code, message),
            E::Forbidden {
                code: "forbidden",
                message,
            } => ApiError::Forbidden(message),
            E::Forbidden { code, message } => ApiError::ForbiddenCode { code, message },
            E::Db(err) => err.into(),
            E::Corrupt(what) => ApiError::Internal(anyhow::anyhow!(what)),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        let mapped = match violated_constraint(&err) {
            Some("projects_slug_key") => Some(ApiError::conflict(
                "duplicate_slug",
                "a project with this slug already exists",
            )),
            Some("migrations_project_version_key") => Some(ApiError::conflict(
                "duplicate_version",
                "a migration with this version already exists in the project",
            )),
            Some("db_sets_project_name_key") => Some(ApiError::conflict(
                "duplicate_name",
                "a DB set with this name already exists in the project",
            )),
            Some("targets_db_set_name_key") => Some(ApiError::conflict(
                "duplicate_name",
                "a target with this name already exists in the DB set",
            )),
            Some("environments_pkey") => Some(ApiError::conflict(
                "duplicate_name",
                "an environment with this name already exists",
            )),
            Some("environments_position_key") => Some(ApiError::conflict(
                "duplicate_position",
                "another environment already has this position",
            )),
            Some("users_email_key") => Some(ApiError::conflict(
                "duplicate_email",
                "a user with this e-mail already exists",
            )),
            Some("approvals_run_user_key") => Some(ApiError::conflict(
                "already_decided",
                "you have already decided on this run",
            )),
            _ => None,
        };
        mapped.unwrap_or_else(|| ApiError::Internal(err.into()))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        ApiError::Internal(err)
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        // A malformed id names nothing that exists.
        ApiError::NotFound("resource")
    }
}

/// `Json` whose rejections use the API's error contract: 400 for a body
/// that is not JSON, 422 naming the field for JSON of the wrong shape, 413
/// for a body over the limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if !is_json {
            return Err(ApiError::BadRequest(
                "send the body as JSON with Content-Type: application/json".into(),
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

async fn read_body<S: Send + Sync>(
    req: axum::extract::Request,
    state: &S,
) -> Result<axum::body::Bytes, ApiError> {
    use axum::extract::FromRequest;
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|_| ApiError::TooLarge("request body is too large".into()))
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Some(field) = crate::input::nul_in_json(bytes) {
        return Err(ApiError::invalid(field, "must not contain NUL characters"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        // serde_json reports an enum given as an array or number as a
        // syntax error; well-formed JSON of the wrong shape is still the
        // field's fault.
        if inner.classify() != serde_json::error::Category::Data
            && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err()
        {
            return ApiError::BadRequest("request body is not valid JSON".into());
        }
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        field_error(e.path(), message)
    })
}

/// A deserialization error as `invalid_field` naming the field at `path`.
fn field_error(path: &serde_path_to_error::Path, message: String) -> ApiError {
    let path = path.to_string();
    let field = if path != "." {
        path
    } else {
        // "missing field `name`" names the field only in its text.
        message.split('`').nth(1).unwrap_or("body").to_owned()
    };
    ApiError::invalid(field, message)
}

/// Deserializes `application/x-www-form-urlencoded` text (a query string
/// or a form body) into `T`, naming the field at fault. `refuse` says which
/// characters no value may hold.
fn parse_urlencoded<T: serde::de::DeserializeOwned>(
    text: &[u8],
    refuse: fn(&str) -> bool,
    what: &str,
) -> Result<T, ApiError> {
    for (name, value) in form_urlencoded::parse(text) {
        if refuse(&name) || refuse(&value) {
            return Err(ApiError::invalid(
                crate::input::printable(&name),
                format!("must not contain {what}"),
            ));
        }
    }
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(text));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let message = e.inner().to_string();
        field_error(e.path(), message)
    })
}

/// `Path` that refuses control characters in any parameter (422 naming
/// it) and answers 404 for a parameter of the wrong shape.
#[derive(Debug, Clone, Copy)]
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::{Path, RawPathParams};
        // A parameter that is not UTF-8 is left to `Path`, which refuses it.
        if let Ok(params) = RawPathParams::from_request_parts(parts, state).await {
            for (name, value) in &params {
                if crate::input::has_control(value) {
                    return Err(ApiError::invalid(
                        name,
                        "must not contain control characters",
                    ));
                }
            }
        }
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// `Query` that refuses control characters in any name or value and a value
/// of the wrong type or out of range, with 422 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        parse_urlencoded(
            query.as_bytes(),
            crate::input::has_control,
            "control characters",
        )
        .map(ApiQuery)
    }
}

/// The web forms' `Form`: a NUL in any field is refused with 422 naming the
/// field (text such as SQL keeps its tabs and line breaks), a field of the
/// wrong type likewise; pages render the error (`web::errors_as_pages`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiForm<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiForm<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(ApiError::BadRequest(
                "send the form as application/x-www-form-urlencoded".into(),
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_urlencoded(&bytes, |v| v.contains('\0'), "NUL characters").map(ApiForm)
    }
}

/// A JSON body that may be absent: an empty body means `T::default()`. For
/// actions like approve and execute, whose fields are all optional.
#[derive(Debug, Clone, Default)]
pub struct OptionalJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}
