//! Reads a topology file and validates it against the registry's kinds.

use super::CliError;
use crate::stages::Registry;
use crate::topology::spec::AdminToken;
use crate::topology::Topology;
use std::path::Path;

pub fn load(path: &Path, registry: &Registry) -> Result<Topology, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.to_path_buf(), source })?;
    let env = |name: &str| std::env::var(name).ok();
    Topology::parse(&path.display().to_string(), &text, &env, registry).map_err(CliError::Invalid)
}

/// The admin base URL of a running node (how `produce`/`tail` reach the embedded log).
pub fn admin_url(topology: &Topology) -> Result<String, CliError> {
    let listen = topology.spec().admin.listen.clone().ok_or_else(|| {
        CliError::Usage(
            "the embedded transport lives inside a running `weir run`; set `admin.listen` in the topology \
             so that `weir produce`/`weir tail` can reach it"
                .into(),
        )
    })?;
    Ok(format!("http://{listen}"))
}

/// The metrics base URL of a running node (`/metrics`, `/readyz`: what `weir status` reads).
pub fn metrics_url(topology: &Topology) -> Result<String, CliError> {
    let listen = topology.spec().metrics.listen.clone().ok_or_else(|| {
        CliError::Usage("set `metrics.listen` in the topology, or pass `--metrics host:port`".into())
    })?;
    Ok(format!("http://{listen}"))
}

/// The admin token to send: `WEIR_ADMIN_TOKEN`, else the topology's `admin.token`.
pub fn admin_token(topology: &Topology) -> Option<AdminToken> {
    std::env::var("WEIR_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| AdminToken::new(t.trim()))
        .or_else(|| topology.spec().admin.token.clone())
}

/// `req` with the admin token, if there is one.
pub fn authorized(req: reqwest::RequestBuilder, token: Option<&AdminToken>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t.expose()),
        None => req,
    }
}

/// Runs `f` with an HTTP client on a small runtime (for commands that talk to a node).
pub fn with_http<F, Fut>(f: F) -> Result<(), CliError>
where
    F: FnOnce(reqwest::Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start: {e}")))?;
    let http = crate::net::client().map_err(|e| CliError::Failed(e.to_string()))?;
    rt.block_on(f(http))
}

/// The error for a node that cannot be reached.
pub fn unreachable(base: &str, e: reqwest::Error) -> CliError {
    CliError::Failed(format!("cannot reach the node at {base} (is `weir run` running?): {e}"))
}

/// The error for an answer other than 2xx; a 401 says where the token comes from.
pub fn refused(status: reqwest::StatusCode, body: &str) -> CliError {
    if status == reqwest::StatusCode::UNAUTHORIZED {
        CliError::Failed(format!(
            "{status}: {body}\nthe node's admin port needs its token: export WEIR_ADMIN_TOKEN (the node's admin.token)"
        ))
    } else {
        CliError::Failed(format!("{status}: {body}"))
    }
}
