//! `whatsapp`: the WhatsApp Cloud API webhook.
//!
//! - `GET <path>?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` answers the challenge
//!   as plain text when the token matches (403 when not, 400 when parameters are missing).
//! - `POST <path>`: a webhook notification. With `app_secret` set, `X-Hub-Signature-256`
//!   must be the HMAC-SHA256 of the raw body (401 otherwise, nothing published). Unsigned
//!   requests are accepted only on a loopback listener (local development): a listener
//!   others can reach without an `app_secret` is a startup error, since anyone reaching it
//!   could post messages in any user's name. Every text
//!   message in `entry[].changes[].value.messages[]` becomes an [`WhatsAppMessage`] keyed by
//!   the plan's `key` (`from`); other message types and `statuses[]` are acknowledged and
//!   counted but not published. The answer, `{"received", "published", "ignored"}`, comes
//!   only after the transport accepted every record: WhatsApp retries anything but a 2xx,
//!   so a 503 (transport unavailable) gets the notification delivered again.
//!
//! ```yaml
//! ingress:
//!   whatsapp-webhook:
//!     kind: whatsapp
//!     path: /webhooks/whatsapp
//!     to: ingress-requests-buffer
//!     key: from
//!     config: {verify_token: "…", app_secret: "…"}
//! ```

use super::WhatsAppMessage;
use crate::ingress::http::{read_body, traceparent, ApiError};
use crate::ingress::{IngressEnv, IngressKind, Publish, Publisher};
use crate::stages::{BuildError, Registry};
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use dashmap::DashMap;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

/// Registers the `whatsapp` ingress kind, its records declared as payload type `P`.
pub fn register<P: PayloadName>(r: &mut Registry) {
    r.register_ingress::<WhatsApp<P>>();
}

/// Names the registered payload type ([`WhatsAppMessage`]'s JSON shape) the webhook's
/// records have. The app that registers the kind chooses the name, so its topics keep
/// their own `payload_type:` (e.g. `skeji.InboundMessage`).
pub trait PayloadName: 'static {
    const PAYLOAD_TYPE: &'static str;
}

/// The `whatsapp` ingress kind; `P` names its records' payload type.
pub struct WhatsApp<P>(std::marker::PhantomData<fn() -> P>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    /// The token configured in the Meta app for the verification handshake.
    #[serde(default, deserialize_with = "opt_text")]
    pub verify_token: Option<String>,
    /// The app secret; when set, every POST must be signed with it. Required unless the
    /// listener is on a loopback address.
    #[serde(default, deserialize_with = "opt_text")]
    pub app_secret: Option<String>,
}

/// The environment variable `topology.yaml` (and deploy/) maps `app_secret` from.
pub const APP_SECRET_VAR: &str = "WHATSAPP_APP_SECRET";

/// Shows whether the secrets are set, never their values.
impl std::fmt::Debug for WhatsAppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |s: &Option<String>| if s.is_some() { "<redacted>" } else { "<unset>" };
        f.debug_struct("WhatsAppConfig")
            .field("verify_token", &shown(&self.verify_token))
            .field("app_secret", &shown(&self.app_secret))
            .finish()
    }
}

/// Whether `listen` (`host:port`) only accepts connections from this machine. Anything
/// that is not plainly loopback (`0.0.0.0`, a host name other than `localhost`, text that
/// does not parse) counts as reachable by others.
pub fn is_loopback_listen(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    match listen.rsplit_once(':') {
        Some((host, _port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// Refuses an unsigned webhook on a listener others can reach.
fn check_signing(c: &WhatsAppConfig, listen: &str) -> Result<(), String> {
    if c.app_secret.is_some() || is_loopback_listen(listen) {
        return Ok(());
    }
    Err(format!(
        "listens on `{listen}`, which is not a loopback address, and has no `app_secret`: anyone who reaches it \
         could post messages in any user's name. Set `config.app_secret` to the Meta app secret (topology.yaml \
         reads it from `{APP_SECRET_VAR}`: set {APP_SECRET_VAR}), or listen on 127.0.0.1 for local development"
    ))
}

/// A config value written as text or as a number (`${VAR}` substitution happens before
/// YAML parsing, so an all-digit id or token arrives as a number); empty or null → `None`.
pub fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = match Value::deserialize(d)? {
        Value::Null => return Ok(None),
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => return Err(serde::de::Error::custom(format!("expected a string, got {other}"))),
    };
    Ok(Some(text).filter(|t| !t.is_empty()))
}

/// What one webhook ingress has seen since the process started (per ingress name), for
/// logs and tests.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    pub requests: AtomicU64,
    /// Text messages published.
    pub published: AtomicU64,
    /// Messages of other types (images, reactions, …) or unusable text messages.
    pub ignored_messages: AtomicU64,
    /// Delivery/read status updates.
    pub statuses: AtomicU64,
    /// Requests refused for a missing or wrong signature.
    pub unauthorized: AtomicU64,
    /// Requests refused as malformed.
    pub malformed: AtomicU64,
}

/// A copy of [`WebhookCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub requests: u64,
    pub published: u64,
    pub ignored_messages: u64,
    pub statuses: u64,
    pub unauthorized: u64,
    pub malformed: u64,
}

impl WebhookCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            requests: get(&self.requests),
            published: get(&self.published),
            ignored_messages: get(&self.ignored_messages),
            statuses: get(&self.statuses),
            unauthorized: get(&self.unauthorized),
            malformed: get(&self.malformed),
        }
    }
}

static COUNTERS: LazyLock<DashMap<String, Arc<WebhookCounters>>> = LazyLock::new(DashMap::new);

/// The counters of the ingress named `ingress` (created on first use).
pub fn counters(ingress: &str) -> Arc<WebhookCounters> {
    COUNTERS.entry(ingress.to_string()).or_default().clone()
}

#[derive(Clone)]
struct AppState {
    name: Arc<str>,
    publisher: Publisher,
    max_body: usize,
    verify_token: Arc<str>,
    /// `None` when signatures are not checked.
    signing_key: Option<ring::hmac::Key>,
    counters: Arc<WebhookCounters>,
}

impl<P: PayloadName> IngressKind for WhatsApp<P> {
    const NAME: &'static str = "whatsapp";
    type Config = WhatsAppConfig;
    const OUTPUT_TYPE: Option<&'static str> = Some(P::PAYLOAD_TYPE);

    fn check(c: &WhatsAppConfig) -> Result<(), String> {
        // Without a token anyone could complete the handshake for this endpoint.
        match &c.verify_token {
            Some(_) => Ok(()),
            None => Err("`verify_token` must not be empty".into()),
        }
    }

    fn router(c: WhatsAppConfig, env: IngressEnv) -> Result<axum::Router, BuildError> {
        let build_error =
            |reason: String| BuildError { stage: env.plan.name.clone(), kind: env.plan.kind.clone(), reason };
        Self::check(&c).map_err(build_error)?;
        check_signing(&c, &env.plan.listen).map_err(build_error)?;
        let path = env.path_or("/webhooks/whatsapp");
        if c.app_secret.is_none() {
            tracing::warn!(ingress = %env.plan.name, listen = %env.plan.listen,
                "no app_secret: webhook signatures are not checked (accepted on a loopback listener only)");
        }
        let state = AppState {
            name: Arc::from(env.plan.name.as_str()),
            counters: counters(&env.plan.name),
            publisher: env.publisher,
            max_body: env.plan.max_body,
            verify_token: Arc::from(c.verify_token.unwrap_or_default().as_str()),
            signing_key: c.app_secret.map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.as_bytes())),
        };
        Ok(axum::Router::new().route(&path, get(verify).post(notify)).with_state(state))
    }
}

/// The subscription handshake: echo `hub.challenge` when the token matches.
async fn verify(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<String, ApiError> {
    let (Some(mode), Some(token), Some(challenge)) =
        (q.get("hub.mode"), q.get("hub.verify_token"), q.get("hub.challenge"))
    else {
        return Err(ApiError::bad_request("hub.mode, hub.verify_token and hub.challenge are required"));
    };
    if mode != "subscribe" {
        return Err(ApiError::bad_request(format!("unsupported hub.mode `{mode}`")));
    }
    if !constant_time_eq(token.as_bytes(), s.verify_token.as_bytes()) {
        tracing::warn!(ingress = %s.name, "webhook verification with a wrong token");
        return Err(ApiError::new(StatusCode::FORBIDDEN, "verify token does not match"));
    }
    tracing::info!(ingress = %s.name, "webhook verified");
    Ok(challenge.clone())
}

/// Compares without stopping at the first difference (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn notify(State(s): State<AppState>, req: Request) -> Result<Json<Value>, ApiError> {
    s.counters.requests.fetch_add(1, Ordering::Relaxed);
    let trace = traceparent(req.headers());
    let signature = req.headers().get("x-hub-signature-256").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = read_body(req.into_body(), s.max_body).await?;
    if let Some(key) = &s.signing_key {
        if let Err(why) = check_signature(key, signature.as_deref(), &body) {
            s.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(ingress = %s.name, why, "webhook refused: bad signature");
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, format!("invalid X-Hub-Signature-256: {why}")));
        }
    }
    let parsed = parse_notification(&body).inspect_err(|_| {
        s.counters.malformed.fetch_add(1, Ordering::Relaxed);
    })?;
    let items: Vec<Publish> = parsed
        .messages
        .iter()
        .map(|m| {
            let payload =
                serde_json::to_value(m).map_err(|e| ApiError::bad_request(format!("cannot encode message: {e}")))?;
            Ok(Publish { payload, traceparent: trace.clone(), ..Publish::default() })
        })
        .collect::<Result<_, ApiError>>()?;
    let published = items.len();
    if !items.is_empty() {
        s.publisher.publish(items).await.inspect_err(|e| {
            tracing::warn!(ingress = %s.name, error = %e, "webhook messages not published; WhatsApp will retry");
        })?;
    }
    let ignored = parsed.ignored + parsed.statuses;
    s.counters.published.fetch_add(published as u64, Ordering::Relaxed);
    s.counters.ignored_messages.fetch_add(parsed.ignored as u64, Ordering::Relaxed);
    s.counters.statuses.fetch_add(parsed.statuses as u64, Ordering::Relaxed);
    tracing::debug!(ingress = %s.name, published, ignored = parsed.ignored, statuses = parsed.statuses, "webhook handled");
    Ok(Json(serde_json::json!({ "received": published + ignored, "published": published, "ignored": ignored })))
}

/// Checks `sha256=<hex>` against HMAC-SHA256(app_secret, body); `ring` compares the tags
/// in constant time.
fn check_signature(key: &ring::hmac::Key, header: Option<&str>, body: &[u8]) -> Result<(), &'static str> {
    let hex = header.ok_or("missing")?.strip_prefix("sha256=").ok_or("not sha256=<hex>")?;
    let tag = decode_hex(hex).ok_or("not hex")?;
    ring::hmac::verify(key, body, &tag).map_err(|_| "mismatch")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

/// The messages of one notification that are published, and how many items were not.
#[derive(Debug, Default)]
pub struct Parsed {
    pub messages: Vec<WhatsAppMessage>,
    /// Non-text messages, or text messages missing a sender, id or body.
    pub ignored: usize,
    pub statuses: usize,
}

#[derive(Deserialize)]
struct Notification {
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    value: ChangeValue,
}

/// Messages stay untyped here so that one unusual message cannot make WhatsApp retry the
/// whole notification forever.
#[derive(Default, Deserialize)]
struct ChangeValue {
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    contacts: Vec<Value>,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    statuses: Vec<Value>,
}

/// Reads a webhook body; malformed JSON or a missing `entry` is a 400.
pub fn parse_notification(body: &[u8]) -> Result<Parsed, ApiError> {
    let n: Notification = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("not a WhatsApp webhook notification: {e}")))?;
    let mut out = Parsed::default();
    for value in n.entry.into_iter().flat_map(|e| e.changes).map(|c| c.value) {
        out.statuses += value.statuses.len();
        let phone_number_id = text_of(&value.metadata["phone_number_id"]);
        for m in &value.messages {
            match text_message(m, &value.contacts, phone_number_id.clone()) {
                Some(msg) => out.messages.push(msg),
                None => {
                    tracing::debug!(kind = %m["type"], id = %m["id"], "webhook message not published (not a usable text message)");
                    out.ignored += 1;
                }
            }
        }
    }
    Ok(out)
}

fn text_message(m: &Value, contacts: &[Value], phone_number_id: Option<String>) -> Option<WhatsAppMessage> {
    if m["type"].as_str() != Some("text") {
        return None;
    }
    let from = text_of(&m["from"])?;
    let wa_message_id = text_of(&m["id"])?;
    let text = m["text"]["body"].as_str()?.to_string();
    // Cloud API timestamps are strings of epoch seconds.
    let timestamp = match &m["timestamp"] {
        Value::String(s) => s.trim().parse().ok()?,
        v => v.as_i64()?,
    };
    let profile_name = contacts
        .iter()
        .find(|c| text_of(&c["wa_id"]).as_deref() == Some(from.as_str()))
        .or(contacts.first())
        .and_then(|c| c["profile"]["name"].as_str())
        .map(str::to_string);
    Some(WhatsAppMessage { wa_message_id, from, profile_name, text, timestamp, phone_number_id })
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_messages_and_counts_the_rest() {
        let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Dana"}, "wa_id": "972501234567"}],
            "messages": [
                {"from": "972501234567", "id": "wamid.A", "timestamp": "1700000000", "type": "text", "text": {"body": "hi"}},
                {"from": "972501234567", "id": "wamid.B", "timestamp": "1700000001", "type": "image", "image": {"id": "x"}}
            ],
            "statuses": [{"id": "wamid.C", "status": "read"}]
        }}]}]});
        let p = parse_notification(body.to_string().as_bytes()).expect("parses");
        assert_eq!((p.messages.len(), p.ignored, p.statuses), (1, 1, 1));
        let m = &p.messages[0];
        assert_eq!(
            (m.from.as_str(), m.wa_message_id.as_str(), m.timestamp),
            ("972501234567", "wamid.A", 1_700_000_000)
        );
        assert_eq!(m.profile_name.as_deref(), Some("Dana"));
        assert_eq!(m.phone_number_id.as_deref(), Some("106540352242922"));
    }

    #[test]
    fn refuses_bodies_without_entry() {
        assert_eq!(parse_notification(b"{}").map(|_| ()).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(parse_notification(b"{not json").map(|_| ()).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn signature_is_checked() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
        let tag = ring::hmac::sign(&key, b"body");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(check_signature(&key, Some(&format!("sha256={hex}")), b"body"), Ok(()));
        assert_eq!(check_signature(&key, Some(&format!("sha256={hex}")), b"other"), Err("mismatch"));
        assert_eq!(check_signature(&key, None, b"body"), Err("missing"));
        assert_eq!(check_signature(&key, Some("sha256=zz"), b"body"), Err("not hex"));
    }

    #[test]
    fn only_loopback_listeners_count_as_local() {
        for local in ["127.0.0.1:8080", "127.1.2.3:0", "[::1]:8080", "localhost:8080", "LOCALHOST:1"] {
            assert!(is_loopback_listen(local), "{local}");
        }
        for reachable in ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:8080", "edge.internal:8080", "8080", ""] {
            assert!(!is_loopback_listen(reachable), "{reachable}");
        }
    }

    #[test]
    fn an_unsigned_webhook_is_refused_on_a_reachable_listener() {
        let unsigned = WhatsAppConfig { verify_token: Some("t".into()), app_secret: None };
        let why = check_signing(&unsigned, "0.0.0.0:8080").unwrap_err();
        assert!(why.contains("`app_secret`") && why.contains("WHATSAPP_APP_SECRET") && why.contains("0.0.0.0:8080"), "{why}");
        assert_eq!(check_signing(&unsigned, "127.0.0.1:8080"), Ok(()));
        let signed = WhatsAppConfig { verify_token: Some("t".into()), app_secret: Some("s".into()) };
        assert_eq!(check_signing(&signed, "0.0.0.0:8080"), Ok(()));
    }

    #[test]
    fn debug_does_not_show_the_secrets() {
        let c = WhatsAppConfig { verify_token: Some("tok-visible?".into()), app_secret: Some("hunter2".into()) };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("tok-visible?"), "{shown}");
        assert!(shown.contains("app_secret: \"<redacted>\""), "{shown}");
    }
}

/// Hostile input (issue 9): any webhook body is a 400 or a parse, never a panic, and what
/// is parsed always encodes as the `WhatsAppMessage` the ingress topic declares (so a
/// crafted body cannot make the publisher fail either).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// JSON values of any shape, a few levels deep.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            any::<String>().prop_map(Value::String),
            Just(Value::String("text".into())),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("type".to_string()),
                        Just("from".to_string()),
                        Just("id".to_string()),
                        Just("text".to_string()),
                        Just("body".to_string()),
                        Just("timestamp".to_string()),
                        any::<String>(),
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A notification whose messages, contacts and metadata are anything at all.
    fn notification() -> impl Strategy<Value = Value> {
        (json(), json(), proptest::collection::vec(json(), 0..4), json(), any::<bool>()).prop_map(
            |(metadata, contacts, messages, statuses, text_message)| {
                let mut messages = messages;
                if text_message {
                    messages.push(serde_json::json!({"type": "text", "from": metadata.clone(), "id": contacts.clone(),
                        "timestamp": statuses.clone(), "text": {"body": "hi"}}));
                }
                serde_json::json!({"entry": [{"changes": [{"value": {
                    "metadata": metadata, "contacts": contacts, "messages": messages, "statuses": statuses}}]}]})
            },
        )
    }

    fn assert_handled(body: &[u8]) -> Result<(), TestCaseError> {
        match parse_notification(body) {
            Ok(parsed) => {
                for m in &parsed.messages {
                    let bytes = serde_json::to_vec(m).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(serde_json::from_slice::<WhatsAppMessage>(&bytes).is_ok());
                }
            }
            Err(e) => prop_assert!(e.status.is_client_error(), "{}", e.status),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_are_a_4xx_or_a_parse(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            assert_handled(&body)?;
        }

        #[test]
        fn arbitrary_notifications_never_panic(n in notification()) {
            assert_handled(n.to_string().as_bytes())?;
        }

        #[test]
        fn arbitrary_signature_headers_are_refused_not_panicked(header in any::<String>(), body in any::<Vec<u8>>()) {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s");
            prop_assert!(check_signature(&key, Some(&header), &body).is_err());
            let with_prefix = format!("sha256={header}");
            prop_assert!(check_signature(&key, Some(&with_prefix), &body).is_err());
        }
    }
}
