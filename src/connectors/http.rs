//! Shared HTTP plumbing for connectors and the `http` kind: a pooled client, the
//! classification of a response status into success / transient / permanent, and
//! `Retry-After` parsing (delta-seconds or an HTTP date).

use super::ServiceError;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use std::time::{Duration, SystemTime};

/// How much of an error body goes into a dead-letter reason.
pub const BODY_EXCERPT: usize = 200;

/// A pooled client (connections are kept per host and reused) with a per-request timeout.
pub fn pooled_client(timeout: Duration) -> Result<reqwest::Client, String> {
    crate::net::client_builder()
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// Whether a status is worth retrying: 408, 429 and every 5xx.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// The service's `Retry-After`, as a wait from now: delta-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_parse(text)?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires
/// senders to use.
fn httpdate_parse(text: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
    let secs = u64::try_from(ts.as_second()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The first [`BODY_EXCERPT`] bytes of a body, as text, cut at a character boundary.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]).into_owned();
    text.trim().to_string()
}

/// Classifies a non-2xx response. `what` names the call (`POST http://…/v1/x`).
pub fn status_error(what: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ServiceError {
    let reason = format!("HTTP {} from {what}: {}", status.as_u16(), excerpt(body));
    if is_transient_status(status) {
        ServiceError::Transient { reason, retry_after: retry_after(headers) }
    } else {
        ServiceError::Permanent(reason)
    }
}

/// Classifies a failure to get a response at all: timeouts and connection errors are
/// transient; a request that cannot even be built is permanent.
pub fn transport_error(what: &str, e: &reqwest::Error) -> ServiceError {
    if e.is_builder() {
        ServiceError::permanent(format!("cannot build request {what}: {e}"))
    } else if e.is_timeout() {
        ServiceError::transient(format!("{what} timed out: {e}"))
    } else if e.is_connect() {
        ServiceError::transient(format!("cannot connect for {what}: {e}"))
    } else {
        ServiceError::transient(format!("{what} failed: {e}"))
    }
}

/// Sends a request and returns the body of a 2xx answer, or the classified failure.
pub async fn send(what: &str, request: reqwest::RequestBuilder) -> Result<(StatusCode, bytes::Bytes), ServiceError> {
    let response = request.send().await.map_err(|e| transport_error(what, &e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| transport_error(what, &e))?;
    if status.is_success() {
        Ok((status, body))
    } else {
        Err(status_error(what, status, &headers, &body))
    }
}

/// Sends a JSON request and decodes a JSON answer.
pub async fn send_json(what: &str, request: reqwest::RequestBuilder) -> Result<serde_json::Value, ServiceError> {
    let (_, body) = send(what, request).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ServiceError::permanent(format!("answer of {what} is not JSON ({e}): {}", excerpt(&body))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past means now");
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn statuses_are_classified() {
        for s in [408u16, 429, 500, 502, 503] {
            assert!(is_transient_status(StatusCode::from_u16(s).unwrap_or(StatusCode::OK)), "{s}");
        }
        for s in [400u16, 401, 404, 422] {
            assert!(!is_transient_status(StatusCode::from_u16(s).unwrap_or(StatusCode::OK)), "{s}");
        }
    }
}
