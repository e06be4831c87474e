//! `shortline-control`: the control plane binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use shortline_control::config::{Config, LogFormat, Overrides};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "shortline-control",
    version,
    about = "Shortline's control plane: admin API, store and publishing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane.
    Serve(Common),
    /// Run the control plane and a proxy beside it: the whole system on one host.
    Up(Common),
    /// Print the threat list line that lists a URL exactly (the SHA-256 of
    /// its canonical host and path), ready to append to the file.
    ThreatHash {
        /// The URL (any form; it is canonicalised first).
        url: String,
        /// Print every lookup expression of the URL with its hash; listing
        /// `host/` lists the whole host, `host/dir/` everything under dir.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args, Debug)]
struct Common {
    /// TOML configuration file; every key is optional (see docs/configuration.md).
    #[arg(long, env = "SHORTLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides control_listen.
    #[arg(long)]
    control_listen: Option<SocketAddr>,
    /// Overrides proxy_listen.
    #[arg(long)]
    proxy_listen: Option<SocketAddr>,
    /// Overrides public_url.
    #[arg(long)]
    public_url: Option<String>,
}

impl Common {
    fn load(&self) -> Result<Config> {
        Config::load(
            self.config.as_deref(),
            &Overrides {
                data_dir: self.data_dir.clone(),
                control_listen: self.control_listen,
                proxy_listen: self.proxy_listen,
                public_url: self.public_url.clone(),
            },
        )
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, with_proxy) = match &cli.command {
        Command::Serve(c) => (c, false),
        Command::Up(c) => (c, true),
        Command::ThreatHash { url, all } => {
            let canonical = shortline_control::abuse::canonical::canonicalize(url);
            println!("# canonical: {canonical}");
            let hashes = shortline_control::abuse::threats::expression_hashes(url);
            for (expression, hash) in hashes.iter().take(if *all { usize::MAX } else { 1 }) {
                println!("{hash}  # {expression}");
            }
            return ExitCode::SUCCESS;
        }
    };
    let config = match common.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match run(config, with_proxy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, with_proxy: bool) -> Result<()> {
    // The FoundationDB network thread starts once and stops after everything
    // else (this guard is the last thing `run` drops).
    #[cfg(feature = "fdb")]
    let _network = (config.store_backend == shortline_control::config::StoreBackend::Fdb)
        .then(shortline_control::store::fdb::boot);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("control")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        if !with_proxy {
            return shortline_control::server::serve(config).await;
        }
        shortline_control::up::run(config).await
    });
    // Stop the runtime's threads (and the committer's store handle with
    // them) before the network guard goes.
    drop(runtime);
    result
}
