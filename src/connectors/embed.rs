//! Text embedders: an OpenAI-compatible `POST {base_url}/embeddings` client, and the
//! offline default, [`HashingEmbedder`].
//!
//! The hashing embedder is NOT a language model: it hashes lower-cased alphanumeric tokens
//! into `dims` buckets (FNV-1a; the hash's top bit picks the sign) and L2-normalises the
//! result. Texts sharing words get a positive cosine similarity; synonyms do not. It is
//! deterministic and offline, meant for tests and default topologies.

use super::{Secret, ServiceError};
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[async_trait]
pub trait Embedder: Send + Sync {
    /// `openai` or `hashing`.
    fn provider(&self) -> &'static str;
    fn model(&self) -> &str;
    /// One vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ServiceError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    Openai,
    #[default]
    Hashing,
}

/// `provider:` of an `embed` stage.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmbedderConfig {
    #[serde(default)]
    pub kind: EmbedderKind,
    /// `openai`: the model (e.g. `text-embedding-3-small`).
    #[serde(default)]
    pub model: Option<String>,
    /// `openai`: base URL, `/embeddings` is appended (default https://api.openai.com/v1).
    #[serde(default)]
    pub base_url: Option<String>,
    /// `openai`: the variable holding the key; none for local servers.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    /// `hashing`: the vector's length (default 256).
    #[serde(default)]
    pub dims: Option<usize>,
}

impl EmbedderConfig {
    pub fn check(&self) -> Result<(), String> {
        match self.kind {
            EmbedderKind::Openai if self.model.is_none() => Err("the openai embedder needs a `model`".into()),
            EmbedderKind::Hashing if self.dims == Some(0) => Err("`dims` must be at least 1".into()),
            _ => Ok(()),
        }
    }
}

pub fn build(c: &EmbedderConfig) -> Result<Arc<dyn Embedder>, String> {
    c.check()?;
    Ok(match c.kind {
        EmbedderKind::Hashing => Arc::new(HashingEmbedder::new(c.dims.unwrap_or(256))),
        EmbedderKind::Openai => {
            let timeout = match &c.timeout {
                Some(t) => crate::topology::units::parse_duration(t)?,
                None => Duration::from_secs(30),
            };
            let base = c.base_url.as_deref().unwrap_or("https://api.openai.com/v1").trim_end_matches('/');
            Arc::new(OpenAiEmbedder {
                client: super::http::pooled_client(timeout)?,
                url: format!("{base}/embeddings"),
                model: c.model.clone().unwrap_or_default(),
                key: c.api_key_env.as_deref().map(Secret::from_env).transpose()?,
            })
        }
    })
}

/// Offline feature-hashing embedder (see the module docs: not semantic).
pub struct HashingEmbedder {
    dims: usize,
    model: String,
}

impl HashingEmbedder {
    pub fn new(dims: usize) -> Self {
        HashingEmbedder { dims: dims.max(1), model: format!("hashing-{}", dims.max(1)) }
    }

    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        for token in text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()) {
            let h = fnv1a(token.to_lowercase().as_bytes());
            let i = (h % self.dims as u64) as usize;
            v[i] += if h >> 63 == 0 { 1.0 } else { -1.0 };
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[async_trait]
impl Embedder for HashingEmbedder {
    fn provider(&self) -> &'static str {
        "hashing"
    }
    fn model(&self) -> &str {
        &self.model
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ServiceError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

pub struct OpenAiEmbedder {
    client: reqwest::Client,
    url: String,
    model: String,
    key: Option<Secret>,
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn provider(&self) -> &'static str {
        "openai"
    }
    fn model(&self) -> &str {
        &self.model
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ServiceError> {
        let mut req = self.client.post(&self.url).json(&serde_json::json!({"model": self.model, "input": texts}));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k.expose());
        }
        let what = format!("POST {}", self.url);
        let answer = super::http::send_json(&what, req).await?;
        let data = answer
            .get("data")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| ServiceError::permanent(format!("answer of {what} has no `data`")))?;
        let mut out = vec![Vec::new(); texts.len()];
        for (n, item) in data.iter().enumerate() {
            let i = item.get("index").and_then(serde_json::Value::as_u64).map_or(n, |i| i as usize);
            let vector = item
                .get("embedding")
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| ServiceError::permanent(format!("answer of {what}: data[{n}] has no `embedding`")))?;
            if let Some(slot) = out.get_mut(i) {
                *slot = vector.iter().filter_map(serde_json::Value::as_f64).map(|x| x as f32).collect();
            }
        }
        if out.iter().any(Vec::is_empty) {
            return Err(ServiceError::permanent(format!("answer of {what} has fewer vectors than inputs")));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn hashing_is_deterministic_normalised_and_overlap_sensitive() {
        let e = HashingEmbedder::new(64);
        let a = e.vector("Book a haircut tomorrow");
        assert_eq!(a, e.vector("book a HAIRCUT tomorrow!"));
        assert_eq!(a.len(), 64);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        let near = e.vector("haircut tomorrow please");
        let far = e.vector("quarterly revenue report");
        assert!(cosine(&a, &near) > cosine(&a, &far), "shared words must score higher");
    }
}
