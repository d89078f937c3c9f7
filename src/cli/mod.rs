//! The `weir` command. Thin: each subcommand loads the topology, calls the library, and
//! maps the outcome to an exit code (0 ok, 1 failed or invalid, 2 usage).

mod export;
mod load;
mod produce;
mod run;
mod status;
mod tail;
mod topics;

use crate::stages::Registry;
use crate::topology::GraphFormat;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Run stream-processing pipelines declared in topology.yaml",
    long_about = "weir runs the stages declared in a topology file as supervised actors fed by \
partition consumers, on an embedded in-process log (default) or on Kafka. Every node runs \
this same binary; `--node` picks which stages this process runs."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct TopologyArg {
    /// The topology file.
    #[arg(short = 't', long = "topology", env = "WEIR_TOPOLOGY", default_value = "topology.yaml")]
    pub file: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the topology's stages (all of them, or one node's) until SIGINT/SIGTERM.
    Run(run::RunArgs),
    /// Check the topology file and print every problem with its line and column.
    Validate {
        #[command(flatten)]
        topology: TopologyArg,
    },
    /// Print the wiring of stages, topics, outputs, DLQs and nodes.
    Graph {
        #[command(flatten)]
        topology: TopologyArg,
        /// mermaid (paste into a Markdown file) or dot (Graphviz).
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Publish JSON records read from stdin (one per line) to a topic.
    Produce(produce::ProduceArgs),
    /// Print a topic's records as JSON lines.
    Tail(tail::TailArgs),
    /// Summarize running nodes from their metrics: stages, records/s, lag, DLQ, restarts.
    Status(status::StatusArgs),
    /// Manage the topology's topics on Kafka (apply, status).
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Generate deployment resources from the topology (Strimzi KafkaTopics).
    #[command(subcommand)]
    Export(export::ExportCommand),
}

/// Runs the CLI with a registry: the `weir` binary passes `Registry::with_apps()` (the
/// generic kinds and every app); your own binary passes `Registry::builtin()` plus your kinds.
pub fn main_with(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    // `run` sets logging up itself, once the topology says where spans go.
    if !matches!(cli.command, Command::Run(_)) {
        let _ = init_logging(None);
    }
    let result = match cli.command {
        Command::Run(args) => run::run(args, registry),
        Command::Validate { topology } => {
            load::load(&topology.file, &registry).map(|t| println!("{}", t.summary()))
        }
        Command::Graph { topology, format } => {
            load::load(&topology.file, &registry).map(|t| print!("{}", t.graph(format)))
        }
        Command::Produce(args) => produce::produce(args, &registry),
        Command::Tail(args) => tail::tail(args, &registry),
        Command::Status(args) => status::status(args, &registry),
        Command::Topics(cmd) => topics::topics(cmd, &registry),
        Command::Export(cmd) => export::export(cmd, &registry),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs to stderr (filter from `WEIR_LOG` or `RUST_LOG`, default `info`) and, with
/// `spans` set, exports spans over OTLP. The guard flushes spans when dropped. Public so
/// that benchmarks measure the subscriber `weir run` installs.
pub fn init_logging(
    spans: Option<&crate::telemetry::trace::TracingSettings>,
) -> Result<Option<crate::telemetry::trace::TracingGuard>, CliError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = std::env::var("WEIR_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(tracing_subscriber::EnvFilter::new(filter));
    let registry = tracing_subscriber::registry().with(fmt);
    match spans {
        None => {
            let _ = registry.try_init();
            Ok(None)
        }
        Some(settings) => {
            let (otel, guard) =
                crate::telemetry::trace::layer(settings).map_err(|e| CliError::Failed(e.to_string()))?;
            // Spans are exported whatever the log level says; weir's own spans are info.
            let otel = otel.with_filter(tracing_subscriber::EnvFilter::new("weir=info,off"));
            let _ = registry.with(otel).try_init();
            Ok(Some(guard))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}\n{n} error(s); nothing was started", n = .0.len())]
    Invalid(crate::topology::Diagnostics),
    #[error("{0}")]
    Plan(#[from] crate::topology::PlanError),
    #[error("{0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}
