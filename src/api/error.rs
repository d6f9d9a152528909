//! API errors with stable codes, and the JSON body extractor that refuses
//! malformed, unknown-field and oversized bodies with a precise message.

use crate::node::FieldError;
use crate::store::StoreError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use utoipa::ToSchema;

/// The body of every error answer (the OpenAPI document's schema of it;
/// [`ApiError::into_response`] writes it).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `not_found`, `invalid_field`, `invalid_body`,
    /// `malformed_json`, `body_too_large`, `unauthorized`, `forbidden`,
    /// `conflict`, `invalid_action`, `power_owned`, `volume_not_found`, `bmc_*` ...
    pub code: String,
    /// What is wrong, where, and what to do about it.
    pub message: String,
    /// The field at fault (`invalid_field`).
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// The node's state (`invalid_action`).
    #[schema(nullable = false)]
    pub state: Option<String>,
    /// The actions the node's state allows (`invalid_action`).
    #[schema(nullable = false)]
    pub allowed_actions: Option<Vec<String>>,
    /// The broken profile file and line (`invalid_profile`).
    pub file: Option<String>,
    pub line: Option<u64>,
}

/// An error as the API returns it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Option<serde_json::Value>,
    /// Seconds the client should wait before asking again (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
            retry_after: None,
        }
    }
    /// Too many requests: ask again in `secs` seconds.
    pub fn too_many(message: impl Into<String>, secs: u64) -> Self {
        ApiError {
            retry_after: Some(secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn forbidden_code(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn unavailable(message: &str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let (Some(extra), Some(obj)) = (self.extra, err.as_object_mut())
            && let Some(e) = extra.as_object()
        {
            obj.extend(e.clone());
        }
        let mut resp = (self.status, axum::Json(json!({ "error": err }))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl From<FieldError> for ApiError {
    fn from(f: FieldError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            message: f.to_string(),
            extra: Some(json!({"field": f.field})),
            retry_after: None,
        }
    }
}

impl From<crate::app::AppError> for ApiError {
    fn from(e: crate::app::AppError) -> Self {
        use crate::app::AppError as E;
        match e {
            E::Invalid { code, message } => ApiError::bad_request(code, message),
            E::Unauthorized(m) => ApiError::unauthorized(m),
            E::Forbidden { code, message } => ApiError::forbidden_code(code, message),
            E::NotFound(m) => ApiError::not_found(m),
            E::Conflict { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            E::TooMany {
                message,
                retry_after,
            } => ApiError::too_many(message, retry_after),
            E::Field(f) => f.into(),
            E::Bmc(b) => b.into(),
            E::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Duplicate { field, message } => {
                let code = if field == "name" {
                    "duplicate_name"
                } else {
                    "duplicate_mac"
                };
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            StoreError::InvalidTransition {
                state,
                action,
                allowed,
            } => {
                let list = if allowed.is_empty() {
                    "none (wait for the step under way)".to_string()
                } else {
                    allowed.join(", ")
                };
                ApiError {
                    status: StatusCode::CONFLICT,
                    code: "invalid_action",
                    message: format!(
                        "'{action}' is not allowed in state '{state}'; allowed: {list}"
                    ),
                    extra: Some(json!({"state": state, "allowed_actions": allowed})),
                    retry_after: None,
                }
            }
            StoreError::Maintenance { reason } => ApiError::new(
                StatusCode::CONFLICT,
                "maintenance",
                format!(
                    "node is in maintenance ({reason}): turn maintenance off first (action maintenance_off)"
                ),
            ),
            StoreError::Invalid(f) => f.into(),
            fault if fault.is_storage_fault() => {
                tracing::error!(error = %fault, "storage fault: the request's writes were not made");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    format!(
                        "the database cannot be used now ({fault}); nothing was changed; \
                         /healthz says when it is back"
                    ),
                )
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has the details",
                )
            }
        }
    }
}

/// A JSON body, refused with a clear message when malformed, carrying unknown
/// fields, of the wrong shape or too large. An empty body reads as `T::default()`
/// when `T` allows it (see [`parse_body`]).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        parse_body(&bytes).map(ApiJson)
    }
}

/// Like [`ApiJson`], but an empty body means "no options".
pub struct OptJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptJson(T::default()));
        }
        parse_body(&bytes).map(OptJson)
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body is larger than the server accepts (http.max_body_bytes)",
            )
        } else {
            ApiError::bad_request("unreadable_body", r.body_text())
        }
    })
}

/// Parses a JSON body; errors name the field path and the position.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "malformed_json",
            "request body is empty; a JSON object is expected",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = format!("line {} column {}", inner.line(), inner.column());
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                let msg = inner.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                ApiError::bad_request("malformed_json", format!("malformed JSON at {at}: {msg}"))
            }
            _ => {
                let msg = inner.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                let where_ = if path == "." {
                    String::new()
                } else {
                    format!("{path}: ")
                };
                ApiError::bad_request("invalid_body", format!("{where_}{msg}"))
            }
        }
    })
}
