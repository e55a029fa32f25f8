//! The `kbastion` command line: `serve`, `demo`, `sim`, `check-config`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use kbastion::bastion::Shared;
use kbastion::config::Config;
use kbastion::ssh;

#[derive(Parser)]
#[command(name = "kbastion", version, about = "An SSH bastion for Kubernetes")]
struct Cli {
    /// Log format: human-readable text or JSON lines.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bastion.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a demo: the simulator and a bastion on loopback.
    #[cfg(feature = "sim")]
    Demo(kbastion::demo::DemoArgs),
    /// Run the Kubernetes API simulator.
    #[cfg(feature = "sim")]
    Sim(kbastion::sim::SimArgs),
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the ClusterRole and binding that let the bastion impersonate
    /// exactly the configured people's users and groups.
    Rbac {
        #[arg(long)]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let listen = config.listen;
    let shared = Shared::start(config).await?;
    let listener = ssh::bind(listen).await?;
    kbastion::server::run(shared, listener, Some(path)).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve { config } => serve(config).await,
        #[cfg(feature = "sim")]
        Command::Demo(args) => kbastion::demo::run(args).await,
        #[cfg(feature = "sim")]
        Command::Sim(args) => kbastion::sim::run(args, None).await,
        Command::CheckConfig { config } => Config::load(&config)
            .map(|c| print!("{}", c.to_toml()))
            .map_err(Into::into),
        Command::Rbac { config } => Config::load(&config)
            .map(|c| print!("{}", kbastion::impersonation::manifests(&c)))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kbastion: {}", format!("{error:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}
