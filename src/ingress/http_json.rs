//! `http-json`: POST JSON to publish it. The body is one JSON object, an array of objects,
//! or newline-delimited JSON (`Content-Type: application/x-ndjson`). Answers
//! `200 {"accepted": n, "message_ids": [...]}` once every record was accepted, `400` with a
//! JSON error (and nothing published) when any record is malformed.
//!
//! ```yaml
//! ingress:
//!   orders-api: {kind: http-json, listen: "127.0.0.1:8081", path: /orders, to: orders, key: order_id}
//! ```

use super::http::{is_ndjson, read_body, traceparent, ApiError};
use super::{IngressEnv, IngressKind, Publish, Publisher};
use crate::stages::BuildError;
use axum::extract::{Request, State};
use axum::routing::post;
use axum::Json;
use serde::Deserialize;

pub struct HttpJson;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpJsonConfig {}

#[derive(Clone)]
struct AppState {
    publisher: Publisher,
    max_body: usize,
}

impl IngressKind for HttpJson {
    const NAME: &'static str = "http-json";
    type Config = HttpJsonConfig;

    fn router(_: HttpJsonConfig, env: IngressEnv) -> Result<axum::Router, BuildError> {
        let path = env.path_or("/ingest");
        let state = AppState { publisher: env.publisher, max_body: env.plan.max_body };
        Ok(axum::Router::new().route(&path, post(ingest)).with_state(state))
    }
}

async fn ingest(State(s): State<AppState>, req: Request) -> Result<Json<serde_json::Value>, ApiError> {
    let ndjson = is_ndjson(req.headers());
    let trace = traceparent(req.headers());
    let body = read_body(req.into_body(), s.max_body).await?;
    let values = parse_records(&body, ndjson)?;
    let items = values
        .into_iter()
        .map(|payload| Publish { payload, traceparent: trace.clone(), ..Publish::default() })
        .collect();
    let ids = s.publisher.publish(items).await?;
    Ok(Json(serde_json::json!({ "accepted": ids.len(), "message_ids": ids })))
}

/// Splits a body into JSON objects, refusing the whole body if any part is malformed.
pub fn parse_records(body: &[u8], ndjson: bool) -> Result<Vec<serde_json::Value>, ApiError> {
    let values = if ndjson {
        body.split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(n, line)| {
                serde_json::from_slice(line)
                    .map_err(|e| ApiError::bad_request(format!("line {}: malformed JSON: {e}", n + 1)))
            })
            .collect::<Result<Vec<serde_json::Value>, _>>()?
    } else {
        match serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))? {
            serde_json::Value::Array(items) => items,
            one => vec![one],
        }
    };
    if values.is_empty() {
        return Err(ApiError::bad_request("no records in the request"));
    }
    if let Some(i) = values.iter().position(|v| !v.is_object()) {
        return Err(ApiError::bad_request(format!("record {i} is not a JSON object")));
    }
    Ok(values)
}
