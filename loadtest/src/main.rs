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

use std::collections::BTreeMap;
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
    /// Creates only (needs --control and --token).
    Create,
    /// Stats reads of seeded links (needs --control and --token).
    Stats,
    /// 100 Zipf redirects for every create (needs --control and --token).
    Mixed,
}

/// One kind of request: goose's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Transaction {
    RedirectUniform,
    RedirectZipf,
    Create,
    Stats,
}

impl Transaction {
    const ALL: [Self; 4] = [
        Self::RedirectUniform,
        Self::RedirectZipf,
        Self::Create,
        Self::Stats,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::RedirectUniform => "redirect-uniform",
            Self::RedirectZipf => "redirect-zipf",
            Self::Create => "create",
            Self::Stats => "stats",
        }
    }

    fn needs_control(self) -> bool {
        matches!(self, Self::Create | Self::Stats)
    }
}

impl Scenario {
    /// The scenario's weighted transactions.
    fn weights(self) -> Vec<(Transaction, u32)> {
        match self {
            Self::RedirectUniform => vec![(Transaction::RedirectUniform, 1)],
            Self::RedirectZipf => vec![(Transaction::RedirectZipf, 1)],
            Self::Create => vec![(Transaction::Create, 1)],
            Self::Stats => vec![(Transaction::Stats, 1)],
            Self::Mixed => vec![(Transaction::RedirectZipf, 100), (Transaction::Create, 1)],
        }
    }
}

/// Parses `name:weight,name:weight`.
fn parse_weights(text: &str) -> Result<Vec<(Transaction, u32)>> {
    let mut weights = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once(':')
            .with_context(|| format!("--weights: {part:?} is not name:weight"))?;
        let transaction = Transaction::ALL
            .into_iter()
            .find(|t| t.name() == name.trim())
            .with_context(|| {
                format!("--weights: unknown transaction {name:?} (redirect-uniform, redirect-zipf, create, stats)")
            })?;
        let weight: u32 = weight
            .trim()
            .parse()
            .with_context(|| format!("--weights: {weight:?} is not a whole number"))?;
        if weight > 0 {
            weights.push((transaction, weight));
        }
    }
    if weights.is_empty() {
        bail!("--weights names no transaction with a positive weight");
    }
    Ok(weights)
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
    /// Transactions in weighted proportion; each worker walks it from its
    /// own offset, as goose's users do.
    schedule: Arc<Vec<Transaction>>,
    zipf: Zipf<f64>,
    interval: Option<Duration>,
    counters: Arc<Counters>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// Latencies per transaction, in microseconds.
type Histograms = BTreeMap<Transaction, Histogram<u64>>;

fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?)
}

impl Worker {
    fn pick(&self, rng: &mut SmallRng, transaction: Transaction) -> usize {
        let n = self.links.len();
        match transaction {
            Transaction::RedirectUniform => rng.random_range(0..n),
            _ => {
                let rank = self.zipf.sample(rng) as u64 - 1;
                (rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n as u64) as usize
            }
        }
    }

    fn request(&self, method: &str, path: &str, host: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
    }

    async fn redirect(
        &self,
        sender: &mut http1::SendRequest<Full<Bytes>>,
        link: &Link,
    ) -> Result<bool> {
        let request = self
            .request("GET", &format!("/{}", link.code), &self.authority)
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

    fn control_request(&self, method: &str, path: &str) -> http::request::Builder {
        self.request(
            method,
            path,
            self.control_authority.as_deref().unwrap_or_default(),
        )
        .header(
            "authorization",
            format!("Bearer {}", self.token.as_deref().unwrap_or_default()),
        )
    }

    async fn create(&self, sender: &mut http1::SendRequest<Full<Bytes>>, n: u64) -> Result<bool> {
        let url = format!("https://example.com/loadtest/created/{n}");
        let body = serde_json::to_vec(&json!({ "url": url }))?;
        let request = self
            .control_request("POST", "/api/v1/links")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let created = response.status().as_u16() == 201;
        let body = response.into_body().collect().await?.to_bytes();
        // The answer must be the link asked for.
        let link: Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(created && link["url"] == url.as_str() && link["code"].is_string())
    }

    async fn stats(
        &self,
        sender: &mut http1::SendRequest<Full<Bytes>>,
        link: &Link,
    ) -> Result<bool> {
        let request = self
            .control_request("GET", &format!("/api/v1/links/{}/stats", link.code))
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        let found = response.status().as_u16() == 200;
        let body = response.into_body().collect().await?.to_bytes();
        let stats: Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(found && stats["code"] == link.code.as_str() && stats["total_clicks"].is_u64())
    }

    async fn run(self, seed: u64) -> Result<Histograms> {
        let mut histograms = Histograms::new();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut sender = connect(&self.authority).await?;
        let needs_control = self.schedule.iter().any(|t| t.needs_control());
        let mut control = match &self.control_authority {
            Some(authority) if needs_control => Some(connect(authority).await?),
            _ => None,
        };
        let mut next_send = Instant::now();
        let mut n = rng.random_range(0..self.schedule.len() as u64);
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(interval) = self.interval {
                let now = Instant::now();
                if next_send > now {
                    tokio::time::sleep(next_send - now).await;
                }
                next_send += interval;
            }
            n += 1;
            let transaction = self.schedule[(n % self.schedule.len() as u64) as usize];
            let started = Instant::now();
            let outcome = match (transaction, &mut control) {
                (Transaction::Create, Some(control)) => {
                    self.counters.creates.fetch_add(1, Ordering::Relaxed);
                    self.create(control, seed << 40 | n).await
                }
                (Transaction::Stats, Some(control)) => {
                    let link = &self.links[self.pick(&mut rng, transaction)];
                    self.stats(control, link).await
                }
                (Transaction::Create | Transaction::Stats, None) => {
                    bail!("{} needs --control and --token", transaction.name())
                }
                _ => {
                    let link = &self.links[self.pick(&mut rng, transaction)];
                    self.redirect(&mut sender, link).await
                }
            };
            let micros = started.elapsed().as_micros() as u64;
            if !self.measuring.load(Ordering::Relaxed) {
                if outcome.is_err() {
                    sender = connect(&self.authority).await?;
                }
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
                    if transaction.needs_control() {
                        if let Some(authority) = &self.control_authority {
                            control = Some(connect(authority).await?);
                        }
                    } else {
                        sender = connect(&self.authority).await?;
                    }
                }
            }
            let histogram = match histograms.entry(transaction) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(new_histogram()?),
            };
            match self.interval {
                // Coordinated omission: also record the requests that would
                // have been sent while this one was stuck.
                Some(interval) => {
                    histogram.record_correct(micros.max(1), interval.as_micros() as u64)?
                }
                None => histogram.record(micros.max(1))?,
            }
        }
        Ok(histograms)
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

/// Latency (ms) at each percentile, for the report and the plot.
const PLOT_PERCENTILES: [f64; 9] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 99.999];

/// A latency-by-percentile plot: one line per transaction, the x axis spaced
/// by log10(1 / (1 - p)) as HDR histogram plots are.
fn plot_svg(histograms: &Histograms) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 30.0, 150.0);
    let x_of = |p: f64| (1.0 / (1.0 - p / 100.0)).log10() / 5.0;
    let max_ms = histograms
        .values()
        .map(|h| h.value_at_quantile(0.99999) as f64 / 1000.0)
        .fold(0.001f64, f64::max)
        * 1.1;
    let px = |p: f64| left + x_of(p) * (w - left - right);
    let py = |ms: f64| h - bottom - ms / max_ms * (h - bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">latency by percentile (ms)</text>\n\
         <line x1=\"{left}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{y0}\" stroke=\"black\"/>\n",
        y0 = h - bottom,
        x1 = w - right
    );
    for p in PLOT_PERCENTILES {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{p}</text>\n",
            px(p),
            h - bottom + 16.0
        ));
    }
    for i in 0..=4 {
        let ms = max_ms * f64::from(i) / 4.0;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{ms:.2}</text>\n",
            left - 6.0,
            py(ms) + 4.0
        ));
    }
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    for (i, (transaction, histogram)) in histograms.iter().enumerate() {
        let points: Vec<String> = PLOT_PERCENTILES
            .iter()
            .map(|&p| {
                let ms = histogram.value_at_quantile(p / 100.0) as f64 / 1000.0;
                format!("{:.1},{:.1}", px(p), py(ms))
            })
            .collect();
        let colour = colours[i % colours.len()];
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>\n",
            points.join(" "),
            w - right + 10.0,
            top + 16.0 * (i as f64 + 1.0),
            transaction.name()
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>\n</svg>\n",
        (left + w - right) / 2.0,
        h - 10.0
    ));
    svg
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
    if weights.iter().any(|(t, _)| t.needs_control())
        && (args.control.is_none() || args.token.is_none())
    {
        bail!("creates and stats need --control and --token");
    }
    let schedule: Arc<Vec<Transaction>> = Arc::new(
        weights
            .iter()
            .flat_map(|&(t, w)| std::iter::repeat_n(t, w as usize))
            .collect(),
    );
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
            schedule: Arc::clone(&schedule),
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
    let mut histogram = new_histogram()?;
    let mut by_transaction = Histograms::new();
    for task in tasks {
        for (transaction, h) in task.await?? {
            histogram.add(&h)?;
            match by_transaction.entry(transaction) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().add(&h)?,
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(h);
                }
            }
        }
    }
    let requests = counters.requests.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let mismatches = counters.mismatches.load(Ordering::Relaxed);
    let ms = |h: &Histogram<u64>, quantile: f64| h.value_at_quantile(quantile) as f64 / 1000.0;
    let q = |quantile: f64| ms(&histogram, quantile);
    let transactions: serde_json::Map<String, Value> = by_transaction
        .iter()
        .map(|(t, h)| {
            (
                t.name().to_owned(),
                json!({
                    "requests": h.len(),
                    "latency_ms": {"p50": ms(h, 0.5), "p99": ms(h, 0.99), "p999": ms(h, 0.999)},
                }),
            )
        })
        .collect();
    let report = json!({
        "scenario": match &args.weights {
            Some(w) => w.clone(),
            None => format!("{:?}", args.scenario),
        },
        "connections": args.connections,
        "seconds": elapsed,
        "links": links.len(),
        "requests": requests,
        "creates": counters.creates.load(Ordering::Relaxed),
        "rps": requests as f64 / elapsed,
        "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": histogram.max() as f64 / 1000.0},
        "transactions": transactions,
        "errors": errors,
        "mismatches": mismatches,
    });
    println!(
        "{}: {requests} requests in {elapsed:.1} s = {:.0} req/s over {} connections",
        report["scenario"].as_str().unwrap_or_default(),
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
    if by_transaction.len() > 1 {
        for (t, h) in &by_transaction {
            println!(
                "  {:<17} {:>10} requests  p50 {:.3}  p99 {:.3} ms",
                t.name(),
                h.len(),
                ms(h, 0.5),
                ms(h, 0.99)
            );
        }
    }
    println!("errors: {errors}  mismatches: {mismatches}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot_svg(&by_transaction))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(errors == 0 && mismatches == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_and_refuse_clearly() {
        assert_eq!(
            parse_weights("redirect-zipf:100, create:1,stats:0").unwrap(),
            [(Transaction::RedirectZipf, 100), (Transaction::Create, 1)]
        );
        let e = parse_weights("redirect:1").unwrap_err().to_string();
        assert!(e.contains("unknown transaction"), "{e}");
        assert!(parse_weights("create:x").is_err());
        assert!(parse_weights("create:0").is_err());
        assert!(parse_weights("create").is_err());
    }

    #[test]
    fn the_plot_has_a_line_per_transaction() {
        let mut histograms = Histograms::new();
        for (t, v) in [
            (Transaction::RedirectZipf, 300),
            (Transaction::Create, 5000),
        ] {
            let mut h = new_histogram().unwrap();
            h.record(v).unwrap();
            histograms.insert(t, h);
        }
        let svg = plot_svg(&histograms);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">create<") && svg.contains(">redirect-zipf<"));
    }
}
