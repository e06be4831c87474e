//! `shortline-loadtest`: a verifying load tester for Shortline.
//!
//! ```text
//! shortline-loadtest --target http://127.0.0.1:8080 --control http://127.0.0.1:8081 \
//!     --token "$TOKEN" --seed-links 10000 --scenario redirect-zipf --connections 64 --seconds 10
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand_distr::Zipf;
use shortline_loadtest::conn::{Conn, authority};
use shortline_loadtest::failures::Failures;
use shortline_loadtest::plot::plot_svg;
use shortline_loadtest::report::{Histograms, Report, Totals};
use shortline_loadtest::scenario::{Scenario, parse_weights, schedule};
use shortline_loadtest::seed::{self, Link};
use shortline_loadtest::worker::{Counters, Shared, Worker};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Longest wait for every connection to open before measuring.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser, Debug)]
#[command(
    name = "shortline-loadtest",
    version,
    about = "A verifying load tester for Shortline"
)]
struct Args {
    /// Base URL of the proxy.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Base URL of the control plane (for seeding, creates and stats).
    #[arg(long)]
    control: Option<String>,
    /// Admin or user API token.
    #[arg(long, env = "SHORTLINE_TOKEN")]
    token: Option<String>,
    /// Create this many links through the API before the run; they are
    /// tagged `loadtest` and deleted afterwards unless --keep-links.
    #[arg(long, default_value_t = 0)]
    seed_links: usize,
    /// Keep the links this run created (seeded and created) instead of
    /// deleting them at the end.
    #[arg(long)]
    keep_links: bool,
    /// Read `code<TAB>target` lines instead of (or as well as) seeding.
    #[arg(long)]
    links: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "redirect-uniform")]
    scenario: Scenario,
    /// Weighted transactions instead of a scenario's, e.g.
    /// `redirect-zipf:100,create:1,stats:1`.
    #[arg(long)]
    weights: Option<String>,
    /// Concurrent connections (goose's users).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds over which connections start.
    #[arg(long, default_value_t = 0.0)]
    ramp_seconds: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Open-loop: total requests per second, with coordinated-omission
    /// correction. Without it, each connection sends as fast as answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Zipf exponent of the hot set.
    #[arg(long, default_value_t = 1.0)]
    zipf_exponent: f64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write a latency-by-percentile plot (SVG) here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// A run id: tags this run's links apart from other runs'.
fn run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// The links to ask for: from the file, then seeded (and waited for until
/// the proxy serves them).
async fn links(args: &Args, control: Option<&str>, run_tag: &str) -> Result<Vec<Link>> {
    let mut links = match &args.links {
        Some(path) => seed::read_links(path)?,
        None => Vec::new(),
    };
    if args.seed_links > 0 {
        let (Some(control), Some(token)) = (control, args.token.as_deref()) else {
            bail!("--seed-links needs --control and --token");
        };
        let mut conn = Conn::new(control, Some(token));
        let seeded = seed::create_links(&mut conn, args.seed_links, run_tag).await?;
        if let Some(newest) = seeded.last() {
            eprintln!("seeding: waiting for the proxy to serve the new links");
            seed::wait_until_served(&mut Conn::new(&authority(&args.target)?, None), newest)
                .await?;
        }
        links.extend(seeded);
    }
    if links.is_empty() {
        bail!("no links: give --seed-links or --links");
    }
    Ok(links)
}

/// Waits until every worker has its connections open; a worker that fails
/// to connect fails the run with its error.
async fn wait_connected(
    shared: &Shared,
    tasks: &mut [tokio::task::JoinHandle<Result<Histograms>>],
    connections: usize,
) -> Result<()> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while shared.connected.load(Ordering::Acquire) < connections {
        if let Some(task) = tasks.iter_mut().find(|t| t.is_finished()) {
            task.await??;
            bail!("a connection ended before the run began");
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} of {connections} connections opened within {} s",
                shared.connected.load(Ordering::Acquire),
                CONNECT_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn run() -> Result<bool> {
    let args = Args::parse();
    if args.connections == 0 || args.seconds <= 0.0 {
        bail!("--connections and --seconds must be positive");
    }
    let weights = match &args.weights {
        Some(text) => parse_weights(text)?,
        None => args.scenario.weights(),
    };
    let needs_control = weights.iter().any(|(t, _)| t.needs_control());
    if needs_control && (args.control.is_none() || args.token.is_none()) {
        bail!("creates and stats need --control and --token");
    }
    let target = authority(&args.target)?;
    let control = args.control.as_deref().map(authority).transpose()?;
    let run_tag = seed::run_tag(run_id());
    let links = links(&args, control.as_deref(), &run_tag).await?;
    let zipf = Zipf::new(links.len() as f64, args.zipf_exponent).context("zipf parameters")?;
    let shared = Arc::new(Shared {
        links,
        schedule: schedule(&weights),
        counters: Counters::default(),
        failures: Failures::default(),
        connected: AtomicUsize::new(0),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        run_tag: run_tag.clone(),
    });
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let worker = Worker {
            shared: Arc::clone(&shared),
            proxy: Conn::new(&target, None),
            control: control
                .as_deref()
                .filter(|_| needs_control)
                .map(|authority| Conn::new(authority, args.token.as_deref())),
            zipf,
            interval,
        };
        tasks.push(tokio::spawn(worker.run(c as u64 + 1)));
        if args.ramp_seconds > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(
                args.ramp_seconds / args.connections as f64,
            ))
            .await;
        }
    }
    wait_connected(&shared, &mut tasks, args.connections).await?;
    shared.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    let mut by_transaction = Histograms::new();
    for task in tasks {
        for (transaction, h) in task.await?? {
            match by_transaction.entry(transaction) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().add(&h)?,
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(h);
                }
            }
        }
    }
    let (errors, mismatches) = shared.failures.counts();
    let report = Report::new(
        Totals {
            scenario: match &args.weights {
                Some(w) => w.clone(),
                None => clap::ValueEnum::to_possible_value(&args.scenario).map_or_else(
                    || format!("{:?}", args.scenario),
                    |v| v.get_name().to_owned(),
                ),
            },
            connections: args.connections,
            seconds: elapsed,
            links: shared.links.len(),
            requests: shared.counters.requests.load(Ordering::Relaxed),
            creates: shared.counters.creates.load(Ordering::Relaxed),
            errors,
            mismatches,
        },
        &by_transaction,
    )?;
    print!("{}", report.render());
    print!("{}", shared.failures.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot_svg(&by_transaction))
            .with_context(|| format!("write {}", path.display()))?;
    }
    let created_links = args.seed_links > 0 || shared.counters.creates.load(Ordering::Relaxed) > 0;
    if created_links && let (Some(control), Some(token)) = (&control, &args.token) {
        if args.keep_links {
            println!("kept this run's links: tagged {run_tag}");
        } else {
            let deleted = seed::delete_tagged(control, token, &run_tag)
                .await
                .with_context(|| format!("cannot delete the links tagged {run_tag}"))?;
            println!(
                "deleted this run's {deleted} links (tagged {run_tag}; --keep-links keeps them)"
            );
        }
    }
    Ok(report.passed())
}
