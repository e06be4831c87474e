//! `shortline-soak`: a mixed workload against a real control plane and
//! proxy while a chaos loop kills, restarts and upgrades them, with every
//! acknowledged operation and every answer checked (see
//! `shortline_loadtest::soak`). Exits 1 on any violation.
//!
//! ```text
//! cargo build --release --workspace
//! ./target/release/shortline-soak --seconds 180
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use shortline_loadtest::soak::{Settings, soak};

#[derive(Parser, Debug)]
#[command(
    name = "shortline-soak",
    version,
    about = "A soak with chaos and an invariant checker"
)]
struct Args {
    /// How long the workload and the chaos run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Threads writing to control.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Threads reading from the proxy, each on its own keep-alive connection.
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// Longest an acknowledged change may take to reach the proxy, on top
    /// of any fault that begins meanwhile.
    #[arg(long, default_value_t = 2000)]
    visibility_bound_ms: u64,
    /// Faults come at random intervals between these.
    #[arg(long, default_value_t = 2000)]
    chaos_min_ms: u64,
    #[arg(long, default_value_t = 8000)]
    chaos_max_ms: u64,
    /// Seed of every random choice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Where `shortline-control` and `shortline-proxy` are (default: next
    /// to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn run(args: &Args) -> Result<bool> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the binary's folder")?
            .to_path_buf(),
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "soak: {} s, {} writers, {} readers, faults every {}-{} ms, seed {seed}",
        args.seconds, args.writers, args.readers, args.chaos_min_ms, args.chaos_max_ms
    );
    let outcome = soak(&Settings {
        bin_dir,
        duration: Duration::from_secs(args.seconds),
        writers: args.writers,
        readers: args.readers,
        visibility_bound: Duration::from_millis(args.visibility_bound_ms),
        chaos_min: Duration::from_millis(args.chaos_min_ms),
        chaos_max: Duration::from_millis(args.chaos_max_ms.max(args.chaos_min_ms)),
        seed,
    })?;
    println!("{outcome}");
    Ok(outcome.violations.is_empty())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
