//! `shortline-loadtest`: a verifying load tester for Shortline.
//!
//! Goose's scenario model (weighted transactions, users, ramp-up, a run time)
//! on a lean hyper engine: one task per connection with HTTP/1.1 keep-alive.
//! Every redirect's status and `Location` is checked against the link it asked
//! for; any error or mismatch makes the run fail (exit status 1).
//!
//! ```text
//! shortline-loadtest --target http://127.0.0.1:8080 --control http://127.0.0.1:8081 \
//!     --token "$TOKEN" --seed-links 10000 --scenario redirect-zipf --connections 64 --seconds 10
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::{Value, json};
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Links created per seeding request (the API's batch limit).
const SEED_BATCH_LINKS: usize = 1000;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Scenario {
    /// Redirects over every link, uniformly.
    RedirectUniform,
    /// Redirects over a hot set: Zipf-distributed link popularity.
    RedirectZipf,
    /// 100 Zipf redirects for every create (needs --control and --token).
    Mixed,
}

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
    /// Base URL of the control plane (for seeding and the mixed scenario).
    #[arg(long)]
    control: Option<String>,
    /// Admin or user API token.
    #[arg(long, env = "SHORTLINE_TOKEN")]
    token: Option<String>,
    /// Create this many links through the API before the run.
    #[arg(long, default_value_t = 0)]
    seed_links: usize,
    /// Read `code<TAB>target` lines instead of (or as well as) seeding.
    #[arg(long)]
    links: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "redirect-uniform")]
    scenario: Scenario,
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
}

#[derive(Debug, Clone)]
struct Link {
    code: String,
    target: String,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    mismatches: AtomicU64,
    creates: AtomicU64,
}

/// `host:port` of an `http://` base URL.
fn authority(base: &str) -> Result<String> {
    let rest = base
        .strip_prefix("http://")
        .context("only http:// targets are supported")?;
    Ok(rest.split('/').next().unwrap_or(rest).to_owned())
}

async fn connect(authority: &str) -> Result<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect {authority}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn seed(args: &Args) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    if let Some(path) = &args.links {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let (code, target) = line.split_once('\t').with_context(|| {
                format!("{}:{}: expected code<TAB>target", path.display(), n + 1)
            })?;
            links.push(Link {
                code: code.to_owned(),
                target: target.to_owned(),
            });
        }
    }
    if args.seed_links > 0 {
        let control = args
            .control
            .as_deref()
            .context("--seed-links needs --control")?;
        let token = args
            .token
            .as_deref()
            .context("--seed-links needs --token")?;
        let authority = authority(control)?;
        let mut sender = connect(&authority).await?;
        let mut made = 0;
        while made < args.seed_links {
            let count = SEED_BATCH_LINKS.min(args.seed_links - made);
            let items: Vec<Value> = (made..made + count)
                .map(|i| json!({"url": format!("https://example.com/loadtest/{i}")}))
                .collect();
            let body = serde_json::to_vec(&json!({ "links": items }))?;
            let request = http::Request::post("/api/v1/links/batch")
                .header("host", &authority)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!(
                    "seeding failed: {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let answer: Value = serde_json::from_slice(&body)?;
            for result in answer["results"].as_array().context("results")? {
                let link = &result["link"];
                let (Some(code), Some(target)) = (link["code"].as_str(), link["url"].as_str())
                else {
                    bail!("seeding refused a link: {result}");
                };
                links.push(Link {
                    code: code.to_owned(),
                    target: target.to_owned(),
                });
            }
            made += count;
        }
    }
    if links.is_empty() {
        bail!("no links: give --seed-links or --links");
    }
    Ok(links)
}

struct Worker {
    links: Arc<Vec<Link>>,
    authority: String,
    control_authority: Option<String>,
    token: Option<String>,
    scenario: Scenario,
    zipf: Zipf<f64>,
    interval: Option<Duration>,
    counters: Arc<Counters>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn pick(&self, rng: &mut SmallRng) -> usize {
        let n = self.links.len();
        match self.scenario {
            Scenario::RedirectUniform => rng.random_range(0..n),
            Scenario::RedirectZipf | Scenario::Mixed => {
                let rank = self.zipf.sample(rng) as u64 - 1;
                (rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n as u64) as usize
            }
        }
    }

    async fn redirect(
        &self,
        sender: &mut http1::SendRequest<Full<Bytes>>,
        link: &Link,
    ) -> Result<bool> {
        let request = http::Request::get(format!("/{}", link.code))
            .header("host", &self.authority)
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        let ok = response.status().is_redirection()
            && response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                == Some(link.target.as_str());
        let _ = response.into_body().collect().await?;
        Ok(ok)
    }

    async fn create(&self, sender: &mut http1::SendRequest<Full<Bytes>>, n: u64) -> Result<bool> {
        let body = serde_json::to_vec(&json!({"url": format!("https://example.com/mixed/{n}")}))?;
        let request = http::Request::post("/api/v1/links")
            .header(
                "host",
                self.control_authority.as_deref().unwrap_or_default(),
            )
            .header(
                "authorization",
                format!("Bearer {}", self.token.as_deref().unwrap_or_default()),
            )
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let ok = response.status().as_u16() == 201;
        let _ = response.into_body().collect().await?;
        Ok(ok)
    }

    async fn run(self, seed: u64) -> Result<Histogram<u64>> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut sender = connect(&self.authority).await?;
        let mut control = match (&self.control_authority, self.scenario) {
            (Some(authority), Scenario::Mixed) => Some(connect(authority).await?),
            _ => None,
        };
        let mut next_send = Instant::now();
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(interval) = self.interval {
                let now = Instant::now();
                if next_send > now {
                    tokio::time::sleep(next_send - now).await;
                }
                next_send += interval;
            }
            n += 1;
            let started = Instant::now();
            let outcome = match (&mut control, n.is_multiple_of(101)) {
                (Some(control), true) => {
                    let ok = self.create(control, seed << 32 | n).await;
                    self.counters.creates.fetch_add(1, Ordering::Relaxed);
                    ok
                }
                _ => {
                    let link = &self.links[self.pick(&mut rng)];
                    self.redirect(&mut sender, link).await
                }
            };
            let micros = started.elapsed().as_micros() as u64;
            if !self.measuring.load(Ordering::Relaxed) {
                continue;
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok(true) => {}
                Ok(false) => {
                    self.counters.mismatches.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    sender = connect(&self.authority).await?;
                }
            }
            match self.interval {
                // Coordinated omission: also record the requests that would
                // have been sent while this one was stuck.
                Some(interval) => {
                    histogram.record_correct(micros.max(1), interval.as_micros() as u64)?
                }
                None => histogram.record(micros.max(1))?,
            }
        }
        Ok(histogram)
    }
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

async fn run() -> Result<bool> {
    let args = Args::parse();
    if args.connections == 0 || args.seconds <= 0.0 {
        bail!("--connections and --seconds must be positive");
    }
    if args.scenario == Scenario::Mixed && (args.control.is_none() || args.token.is_none()) {
        bail!("the mixed scenario needs --control and --token");
    }
    let links = Arc::new(seed(&args).await?);
    let target_authority = authority(&args.target)?;
    let control_authority = args.control.as_deref().map(authority).transpose()?;
    let counters = Arc::new(Counters::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    let zipf = Zipf::new(links.len() as f64, args.zipf_exponent).context("zipf parameters")?;
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let worker = Worker {
            links: Arc::clone(&links),
            authority: target_authority.clone(),
            control_authority: control_authority.clone(),
            token: args.token.clone(),
            scenario: args.scenario,
            zipf,
            interval,
            counters: Arc::clone(&counters),
            measuring: Arc::clone(&measuring),
            stop: Arc::clone(&stop),
        };
        tasks.push(tokio::spawn(worker.run(c as u64 + 1)));
        if args.ramp_seconds > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(
                args.ramp_seconds / args.connections as f64,
            ))
            .await;
        }
    }
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        histogram.add(task.await??)?;
    }
    let requests = counters.requests.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let mismatches = counters.mismatches.load(Ordering::Relaxed);
    let q = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let report = json!({
        "scenario": format!("{:?}", args.scenario),
        "connections": args.connections,
        "seconds": elapsed,
        "links": links.len(),
        "requests": requests,
        "creates": counters.creates.load(Ordering::Relaxed),
        "rps": requests as f64 / elapsed,
        "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": histogram.max() as f64 / 1000.0},
        "errors": errors,
        "mismatches": mismatches,
    });
    println!(
        "{:?}: {requests} requests in {elapsed:.1} s = {:.0} req/s over {} connections",
        args.scenario,
        requests as f64 / elapsed,
        args.connections
    );
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        histogram.max() as f64 / 1000.0
    );
    println!("errors: {errors}  mismatches: {mismatches}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(errors == 0 && mismatches == 0)
}
