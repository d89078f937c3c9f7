//! HTTP helpers shared by ingress kinds and the admin port: JSON error bodies and a body
//! reader whose size limit answers with a JSON 413 instead of axum's plain-text one.

use super::listener::BodyError;
use super::PublishError;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An HTTP error with a JSON body: `{"error": "...", "status": 400}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "status": self.status.as_u16() });
        (self.status, Json(body)).into_response()
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(m) => ApiError::bad_request(m),
            PublishError::Unavailable(t) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, t.to_string()),
            e @ PublishError::Stopping => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

/// Reads a whole body of at most `limit` bytes. A body cut by the listener's body
/// timeout answers 408, one cut because the node stops 503 (see `listener`).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| match body_error(&e) {
        Some(cut @ BodyError::TimedOut(_)) => ApiError::new(StatusCode::REQUEST_TIMEOUT, cut.to_string()),
        Some(cut @ BodyError::Stopping) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, cut.to_string()),
        None => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body unreadable or larger than {limit} bytes: {e}"),
        ),
    })
}

/// The listener's reason for cutting a body, if that is what `e` comes from.
fn body_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(b) = c.downcast_ref::<BodyError>() {
            return Some(b);
        }
        cause = c.source();
    }
    None
}

/// Whether the body is newline-delimited JSON (`Content-Type: application/x-ndjson`).
pub fn is_ndjson(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"))
}

/// The caller's `traceparent` header, if any.
pub fn traceparent(headers: &axum::http::HeaderMap) -> Option<String> {
    headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string)
}
