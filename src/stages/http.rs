//! `http`: one request per record to an outside service.
//!
//! ```yaml
//! kind: http
//! from: leads
//! to: enriched
//! retry: {attempts: 5, initial: 100ms, max: 10s}
//! config:
//!   url: "http://intent.internal/v1/intent/{lead_id}"   # `{field}`: dotted payload paths, URL-encoded
//!   method: POST                     # default POST
//!   headers:
//!     x-team: growth
//!     authorization: {value_env: INTENT_TOKEN}   # read at build time, never logged
//!   body: payload                    # default; or {template: {text: "{message}", n: "{count}"}}; or none
//!   into: intent                     # response JSON under this field; without it, it replaces the payload
//!   timeout: 5s                      # per request, default 30s
//! ```
//!
//! Classification: 2xx success; 408, 429, 5xx, connect errors and timeouts transient
//! (retried, honouring `Retry-After` capped at `retry.max`); any other status permanent,
//! dead-lettered with the status and the start of the body.

use super::template::{self, Template};
use super::{BuildEnv, BuildError, Output, Payload, Stage, StageContext, StageError, StageKind};
use crate::connectors::{http as wire, Secret};
use crate::envelope::Record;
use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A header value: literal text, or the name of an environment variable holding a secret.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HeaderConfig {
    Value(String),
    Env { value_env: String },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BodyConfig {
    /// `payload` (the record's payload as it is) or `none`.
    Mode(String),
    /// A JSON template over the payload.
    Template { template: serde_json::Value },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub url: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderConfig>,
    #[serde(default)]
    pub body: Option<BodyConfig>,
    #[serde(default)]
    pub into: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

enum Body {
    Payload,
    None,
    Template(serde_json::Value),
}

pub struct Http {
    client: reqwest::Client,
    method: reqwest::Method,
    url: Template,
    /// Values from `value_env` are marked sensitive (hidden from reqwest's Debug).
    headers: HeaderMap,
    body: Body,
    into: Option<String>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpConfig {
    fn method(&self) -> Result<reqwest::Method, String> {
        let m = self.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
        reqwest::Method::from_bytes(m.as_bytes()).map_err(|_| format!("`{m}` is not an HTTP method"))
    }

    fn body(&self) -> Result<Body, String> {
        match &self.body {
            None => Ok(Body::Payload),
            Some(BodyConfig::Mode(m)) if m == "payload" => Ok(Body::Payload),
            Some(BodyConfig::Mode(m)) if m == "none" => Ok(Body::None),
            Some(BodyConfig::Mode(m)) => Err(format!("body `{m}` is not `payload`, `none` or `{{template: …}}`")),
            Some(BodyConfig::Template { template }) => {
                template::check_json(template)?;
                Ok(Body::Template(template.clone()))
            }
        }
    }

    fn timeout(&self) -> Result<Duration, String> {
        self.timeout.as_deref().map_or(Ok(DEFAULT_TIMEOUT), crate::topology::units::parse_duration)
    }
}

impl StageKind for Http {
    const NAME: &'static str = "http";
    type Config = HttpConfig;

    fn required_outputs() -> Vec<&'static str> {
        vec!["default"]
    }

    fn check(c: &HttpConfig) -> Result<(), String> {
        Template::parse(&c.url)?;
        c.method()?;
        c.body()?;
        c.timeout()?;
        for name in c.headers.keys() {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not a header name"))?;
        }
        Ok(())
    }

    fn build(c: HttpConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let err = |e: String| BuildError::new(env, e);
        Self::check(&c).map_err(err)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &c.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| err(format!("`{name}` is not a header name")))?;
            let value = match value {
                HeaderConfig::Value(v) => {
                    HeaderValue::from_str(v).map_err(|_| err(format!("header `{name}` has an invalid value")))?
                }
                HeaderConfig::Env { value_env } => {
                    let secret = Secret::from_env(value_env).map_err(|e| err(format!("header `{name}`: {e}")))?;
                    let mut v = HeaderValue::from_str(secret.expose())
                        .map_err(|_| err(format!("header `{name}`: `{value_env}` is not a valid header value")))?;
                    v.set_sensitive(true);
                    v
                }
            };
            headers.insert(name, value);
        }
        Ok(Arc::new(Http {
            client: wire::pooled_client(c.timeout().map_err(err)?).map_err(err)?,
            method: c.method().map_err(err)?,
            url: Template::parse(&c.url).map_err(err)?,
            headers,
            body: c.body().map_err(err)?,
            into: c.into,
        }))
    }
}

#[async_trait]
impl Stage for Http {
    async fn handle(&self, record: &Record, cx: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let payload: serde_json::Value = super::decode(record)?;
        let url = self.url.render_with(&payload, template::percent_encode).map_err(StageError::Permanent)?;
        let mut request = self.client.request(self.method.clone(), &url).headers(self.headers.clone());
        request = match &self.body {
            Body::None => request,
            Body::Payload => request.header(CONTENT_TYPE, "application/json").body(record.payload.clone()),
            Body::Template(t) => request.json(&template::render_json(t, &payload).map_err(StageError::Permanent)?),
        };
        let what = format!("{} {url}", self.method);
        let (_, body) = wire::send(&what, request).await.map_err(StageError::from)?;
        tracing::debug!(stage = cx.stage, %what, bytes = body.len(), "http call answered");
        let answer: Option<serde_json::Value> =
            if body.is_empty() { Some(serde_json::Value::Null) } else { serde_json::from_slice(&body).ok() };
        let out = match (&self.into, answer) {
            (Some(field), answer) => {
                let answer = answer.unwrap_or_else(|| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
                let mut payload = payload;
                template::set_at(&mut payload, field, answer).map_err(StageError::Permanent)?;
                Payload::Json(payload)
            }
            (None, Some(answer)) => Payload::Json(answer),
            (None, None) => Payload::Raw(body),
        };
        Ok(vec![Output::new("default", out)])
    }
}
