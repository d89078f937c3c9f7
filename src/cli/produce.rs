//! `weir produce`: publish JSON lines from stdin to a topic of a running node.

use super::{load, CliError, TopologyArg};
use crate::stages::Registry;
use std::io::Read;

#[derive(clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    topology: TopologyArg,
    /// The topic to publish to.
    topic: String,
    /// Key every record with this value.
    #[arg(long, conflicts_with = "key_field")]
    key: Option<String>,
    /// Key each record by the value of this payload field.
    #[arg(long)]
    key_field: Option<String>,
}

pub fn produce(args: ProduceArgs, registry: &Registry) -> Result<(), CliError> {
    let topology = load::load(&args.topology.file, registry)?;
    let base = load::admin_url(&topology)?;
    let token = load::admin_token(&topology);
    let mut body = String::new();
    std::io::stdin()
        .read_to_string(&mut body)
        .map_err(|e| CliError::Failed(format!("reading stdin: {e}")))?;
    let mut query = Vec::new();
    if let Some(k) = &args.key {
        query.push(("key", k.clone()));
    }
    if let Some(f) = &args.key_field {
        query.push(("key_field", f.clone()));
    }
    let url = format!("{base}/topics/{}/records", args.topic);
    load::with_http(|http| async move {
        let resp = load::authorized(http.post(&url), token.as_ref())
            .query(&query)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(|e| load::unreachable(&base, e))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            println!("{text}");
            Ok(())
        } else {
            Err(load::refused(status, &text))
        }
    })
}
