//! The WhatsApp Cloud API client that sends messages: `POST {api_base}/{phone_number_id}/messages`
//! with a bearer token (never logged), rate limited, retrying 429 and 5xx a few times.

use crate::connectors::ServiceError;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use std::num::NonZeroU32;
use std::time::Duration;

/// Total attempts per message inside the client (429 and 5xx are retried).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest `Retry-After` honoured; longer waits are left to the stage's retry.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// POSTs to the Cloud API, rate limited, retrying 429 and 5xx a few times.
pub struct CloudApi {
    client: reqwest::Client,
    url: String,
    /// Never logged.
    token: String,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// A send rate limit: messages per second, with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl CloudApi {
    pub fn new(api_base: &str, phone_number_id: &str, token: String, rate: Option<Rate>) -> Result<Self, String> {
        let client = crate::net::client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let limiter = match rate {
            Some(r) => {
                let per_second = NonZeroU32::new(r.per_second).ok_or("rate_limit.per_second must be at least 1")?;
                let burst = NonZeroU32::new(r.burst.max(1)).ok_or("rate_limit.burst must be at least 1")?;
                Some(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)))
            }
            None => None,
        };
        let url = format!("{}/{}/messages", api_base.trim_end_matches('/'), phone_number_id);
        Ok(CloudApi { client, url, token, limiter })
    }

    async fn attempt(&self, body: &Value) -> Result<(), ServiceError> {
        // The outbound call is its own client span in the record's trace (when exported).
        let span = if crate::telemetry::trace::enabled() {
            tracing::info_span!(target: "weir::http", "POST messages", otel.kind = "client", otel.name = "POST whatsapp messages",
                http.request.method = "POST", url.full = %self.url, http.response.status_code = tracing::field::Empty)
        } else {
            tracing::Span::none()
        };
        let resp = tracing::Instrument::instrument(self.client.post(&self.url).bearer_auth(&self.token).json(body).send(), span.clone())
            .await
            .map_err(|e| ServiceError::transient(format!("POST {}: {e}", self.url)))?;
        let status = resp.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The error body names the problem (Graph API `error.message`), never the token.
        let detail: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
        let reason = format!("POST {} answered {status}: {detail}", self.url);
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(ServiceError::Transient { reason, retry_after })
        } else {
            Err(ServiceError::Permanent(reason))
        }
    }
}

impl CloudApi {
    /// Sends one Cloud API `POST /{phone_number_id}/messages` body; returns once it was
    /// accepted. 429 and 5xx are retried up to `ATTEMPTS` times, honouring `Retry-After`
    /// up to `MAX_BACKOFF`; the last error says whether trying later may help.
    pub async fn send(&self, body: &Value) -> Result<(), ServiceError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            if let Some(limiter) = &self.limiter {
                limiter.until_ready().await;
            }
            match self.attempt(body).await {
                Ok(()) => return Ok(()),
                Err(e @ ServiceError::Permanent(_)) => return Err(e),
                Err(e) if attempt >= ATTEMPTS => {
                    let retry_after = retry_after_of(&e);
                    tracing::warn!(error = %e, attempt, retry_after = ?retry_after, "whatsapp send failed; giving up for now");
                    return Err(e);
                }
                Err(e) => {
                    let retry_after = retry_after_of(&e);
                    let wait = retry_after.unwrap_or(backoff).min(MAX_BACKOFF);
                    tracing::info!(error = %e, attempt, ?wait, "whatsapp send failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
            }
        }
    }
}

fn retry_after_of(e: &ServiceError) -> Option<Duration> {
    match e {
        ServiceError::Transient { retry_after, .. } => *retry_after,
        ServiceError::Permanent(_) => None,
    }
}
