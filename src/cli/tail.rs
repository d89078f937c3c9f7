//! `weir tail`: print a topic's records as JSON lines.

use super::{load, CliError, TopologyArg};
use crate::stages::Registry;
use futures::StreamExt;
use std::io::Write;

#[derive(clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    topology: TopologyArg,
    /// The topic to print.
    topic: String,
    /// Start at the earliest retained record or only print new ones.
    #[arg(long, default_value = "earliest", value_parser = ["earliest", "latest"])]
    from: String,
    /// Keep printing new records until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// Stop after this many records.
    #[arg(short = 'n', long)]
    limit: Option<u64>,
}

pub fn tail(args: TailArgs, registry: &Registry) -> Result<(), CliError> {
    let topology = load::load(&args.topology.file, registry)?;
    let base = load::admin_url(&topology)?;
    let token = load::admin_token(&topology);
    let url = format!("{base}/topics/{}/records", args.topic);
    let mut query = vec![("from", args.from.clone()), ("follow", args.follow.to_string())];
    if let Some(n) = args.limit {
        query.push(("limit", n.to_string()));
    }
    load::with_http(|http| async move {
        let resp = load::authorized(http.get(&url), token.as_ref())
            .query(&query)
            .send()
            .await
            .map_err(|e| load::unreachable(&base, e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(load::refused(status, &resp.text().await.unwrap_or_default()));
        }
        let mut body = resp.bytes_stream();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| CliError::Failed(e.to_string()))?;
            if out.write_all(&chunk).and_then(|_| out.flush()).is_err() {
                break; // stdout closed (e.g. piped into `head`)
            }
        }
        Ok(())
    })
}
