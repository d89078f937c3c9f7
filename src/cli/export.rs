//! `weir export strimzi`: deployment resources generated from the topology, on stdout.

use super::{load, CliError, TopologyArg};
use crate::stages::Registry;
use crate::topology::strimzi::{self, StrimziError, StrimziOptions};
use std::num::NonZeroU16;

#[derive(clap::Subcommand)]
pub enum ExportCommand {
    /// Strimzi `KafkaTopic` resources for every topic of the topology.
    Strimzi {
        #[command(flatten)]
        topology: TopologyArg,
        /// The Strimzi `Kafka` cluster the topics belong to (label `strimzi.io/cluster`).
        #[arg(long, default_value = "my-cluster")]
        cluster: String,
        /// `metadata.namespace` of the resources; the Topic Operator watches only its
        /// own namespace. Default: none (the namespace `kubectl apply` uses).
        #[arg(long)]
        namespace: Option<String>,
        /// `spec.replicas` for topics without `replication_factor`. Default: none (the
        /// cluster's `default.replication.factor`).
        #[arg(long)]
        replicas: Option<NonZeroU16>,
    },
}

pub fn export(cmd: ExportCommand, registry: &Registry) -> Result<(), CliError> {
    match cmd {
        ExportCommand::Strimzi {
            topology,
            cluster,
            namespace,
            replicas,
        } => {
            let loaded = load::load(&topology.file, registry)?;
            let plan = loaded.plan(None)?;
            let options = StrimziOptions {
                cluster,
                namespace,
                default_replicas: replicas,
            };
            let yaml = strimzi::render(&plan, &options).map_err(|e| match e {
                // Bad arguments are usage errors; anything else is about the file's topics.
                StrimziError::InvalidCluster(_) | StrimziError::InvalidNamespace(_) => {
                    CliError::Usage(e.to_string())
                }
                _ => CliError::Failed(format!("{}: {e}", topology.file.display())),
            })?;
            print!("{yaml}");
            Ok(())
        }
    }
}
