//! `weir topics apply|status`: the topology's topics on Kafka.

use super::{load, CliError, TopologyArg};
use crate::stages::Registry;
use crate::topology::spec::TransportKind;
use crate::transport::kafka::admin;

#[derive(clap::Subcommand)]
pub enum TopicsCommand {
    /// Create missing topics as declared and raise partition counts that are lower than
    /// declared; report any other difference without changing it.
    Apply {
        #[command(flatten)]
        topology: TopologyArg,
    },
    /// Per stage, consumer group and partition: committed offset, end offset, lag.
    Status {
        #[command(flatten)]
        topology: TopologyArg,
    },
}

pub fn topics(cmd: TopicsCommand, registry: &Registry) -> Result<(), CliError> {
    let file = match &cmd {
        TopicsCommand::Apply { topology } | TopicsCommand::Status { topology } => topology.file.clone(),
    };
    let topology = load::load(&file, registry)?;
    if topology.spec().transport != TransportKind::Kafka {
        return Err(CliError::Usage(format!(
            "{}: `weir topics` manages Kafka topics; this topology uses the embedded transport \
             (set `transport: kafka`, e.g. WEIR_TRANSPORT=kafka for the default topology)",
            file.display()
        )));
    }
    let plan = topology.plan(None)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    rt.block_on(async move {
        match cmd {
            TopicsCommand::Apply { .. } => {
                let topics: Vec<_> = plan.topics.values().cloned().collect();
                let report = admin::apply(&plan.kafka, &topics).await.map_err(|e| CliError::Failed(e.to_string()))?;
                println!("{report}");
            }
            TopicsCommand::Status { .. } => {
                println!("{:<24} {:<44} {:<40} {:>9} {:>10} {:>10} {:>8}", "stage", "group", "topic", "partition", "committed", "end", "lag");
                for stage in &plan.stages {
                    let lags = admin::lag(&plan.kafka, &stage.group, &stage.from)
                        .await
                        .map_err(|e| CliError::Failed(e.to_string()))?;
                    for l in lags {
                        let committed = l.committed.map_or_else(|| "-".to_string(), |c| c.to_string());
                        println!(
                            "{:<24} {:<44} {:<40} {:>9} {:>10} {:>10} {:>8}",
                            stage.name, l.group, l.topic, l.partition, committed, l.end, l.lag
                        );
                    }
                }
            }
        }
        Ok(())
    })
}
