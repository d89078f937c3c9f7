//! Where messages go outside weir: the WhatsApp Cloud API. (The `outbox` file is written
//! inside the notifier's own transaction instead: [`super::outbox`].) Both take the same
//! Cloud API "send text" body.

use crate::stages::StageError;
use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{json, Value};
use std::num::NonZeroU32;
use std::time::Duration;

/// One text to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub to: String,
    pub body: String,
    pub correlation_id: String,
}

impl Text {
    /// The Cloud API `POST /{phone_number_id}/messages` body.
    pub fn cloud_api_body(&self) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": self.to,
            "type": "text",
            "text": {"preview_url": false, "body": self.body},
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again later (rate limited, the API or the disk is unavailable).
    #[error("{sink}: {reason}")]
    Transient { sink: &'static str, reason: String },
    /// Will not work however often it is tried (a refused request).
    #[error("{sink}: {reason}")]
    Permanent { sink: &'static str, reason: String },
}

impl From<SinkError> for StageError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Transient { .. } => StageError::Transient(e.to_string()),
            SinkError::Permanent { .. } => StageError::Permanent(e.to_string()),
        }
    }
}

#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// As recorded in `SentNotification.sink` (`whatsapp`).
    fn name(&self) -> &'static str;
    /// Returns once the message was accepted.
    async fn send(&self, text: &Text) -> Result<(), SinkError>;
}

/// Total attempts per message inside the sink (429 and 5xx are retried).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest `Retry-After` honoured; longer waits are left to the stage's retry.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// POSTs to the Cloud API, rate limited, retrying 429 and 5xx a few times.
pub struct WhatsApp {
    client: reqwest::Client,
    url: String,
    /// Never logged.
    token: String,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// `rate_limit` of the sink: messages per second, with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl WhatsApp {
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
        Ok(WhatsApp { client, url, token, limiter })
    }

    async fn attempt(&self, body: &Value) -> Result<(), (SinkError, Option<Duration>)> {
        // The outbound call is its own client span in the record's trace (when exported).
        let span = if crate::telemetry::trace::enabled() {
            tracing::info_span!(target: "weir::http", "POST messages", otel.kind = "client", otel.name = "POST whatsapp messages",
                http.request.method = "POST", url.full = %self.url, http.response.status_code = tracing::field::Empty)
        } else {
            tracing::Span::none()
        };
        let transient = |reason: String| SinkError::Transient { sink: "whatsapp", reason };
        let resp = tracing::Instrument::instrument(self.client.post(&self.url).bearer_auth(&self.token).json(body).send(), span.clone())
            .await
            .map_err(|e| (transient(format!("POST {}: {e}", self.url)), None))?;
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
            Err((transient(reason), retry_after))
        } else {
            Err((SinkError::Permanent { sink: "whatsapp", reason }, None))
        }
    }
}

#[async_trait]
impl Sink for WhatsApp {
    fn name(&self) -> &'static str {
        "whatsapp"
    }

    async fn send(&self, text: &Text) -> Result<(), SinkError> {
        let body = text.cloud_api_body();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            if let Some(limiter) = &self.limiter {
                limiter.until_ready().await;
            }
            match self.attempt(&body).await {
                Ok(()) => return Ok(()),
                Err((e @ SinkError::Permanent { .. }, _)) => return Err(e),
                Err((e, retry_after)) if attempt >= ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, retry_after = ?retry_after, "whatsapp send failed; giving up for now");
                    return Err(e);
                }
                Err((e, retry_after)) => {
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
