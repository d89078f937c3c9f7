//! `weir export`: (placeholder: being written by the deployment work)

use super::{CliError, TopologyArg};
use crate::stages::Registry;

#[derive(clap::Subcommand)]
pub enum ExportCommand {
    /// Strimzi `KafkaTopic` resources for every topic of the topology.
    Strimzi {
        #[command(flatten)]
        topology: TopologyArg,
    },
}

pub fn export(_cmd: ExportCommand, _registry: &Registry) -> Result<(), CliError> {
    Err(CliError::Usage("not available yet".into()))
}
