//! Control-plane benchmarks against the release binaries, on loopback:
//!
//! * durable creates per second with 1, 16 and 64 concurrent clients (each
//!   201 is acknowledged only after its group commit is fsynced);
//! * create-to-visible latency: from a create's 201 at control to the new
//!   code answering 302 at a proxy on the same host;
//! * with `--webhook`, the same creates while a webhook subscription to
//!   every event is enabled (each create also logs its event), and the
//!   events delivered per second to a receiver on loopback that answers
//!   200 at once.
//!
//! ```text
//! cargo build --release -p shortline-control -p shortline-proxy -p shortline-bench
//! ./target/release/bench-control --clients 1,16,64 --seconds 5 --visibility-samples 500
//! ```

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "bench-admin-token-0123456789";

#[derive(Parser, Debug)]
#[command(about = "Durable create throughput and create-to-visible latency")]
struct Args {
    /// Concurrent clients, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Create-to-visible samples (0 skips the measurement).
    #[arg(long, default_value_t = 500)]
    visibility_samples: usize,
    /// Directory holding the release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Measure FoundationDB instead of the embedded store: the cluster file
    /// of the cluster (the binaries must be built with `fdb`). Each level
    /// gets a fresh key prefix.
    #[arg(long)]
    fdb_cluster_file: Option<PathBuf>,
    /// Run each level twice, interleaved: without and with a webhook
    /// subscription to every event.
    #[arg(long)]
    webhook: bool,
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_control(args: &Args, dir: &Path) -> Result<(Guard, SocketAddr)> {
    let mut command = Command::new(args.bin_dir.join("shortline-control"));
    if let Some(cluster) = &args.fdb_cluster_file {
        let prefix = format!(
            "bench-{}-{}",
            std::process::id(),
            dir.file_name().map_or("x".into(), |n| n.to_string_lossy())
        );
        command
            .env("SHORTLINE_STORE_BACKEND", "fdb")
            .env("SHORTLINE_FDB_CLUSTER_FILE", cluster)
            .env("SHORTLINE_FDB_PREFIX", prefix);
    }
    let mut child = command
        .arg("serve")
        .env("SHORTLINE_DATA_DIR", dir)
        .env("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0")
        .env("SHORTLINE_ADMIN_TOKEN", TOKEN)
        // The benchmark measures the store, not the rate limiter.
        .env("SHORTLINE_RATE_LIMIT_ADMIN_PER_SECOND", "10000000")
        .env("SHORTLINE_RATE_LIMIT_IP_PER_SECOND", "10000000")
        .env("SHORTLINE_RATE_LIMIT_BURST", "10000000")
        .env("RUST_LOG", "warn")
        // The benchmark's webhook receiver is on loopback.
        .env("SHORTLINE_WEBHOOK_ALLOW_PRIVATE", "true")
        .stdout(Stdio::piped())
        .spawn()
        .context("start shortline-control (build it with --release first)")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().context("control exited")??;
        if let Some(addr) = line.strip_prefix("control listening on http://") {
            break addr.parse()?;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((Guard(child), addr))
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

async fn create(client: &HttpClient, addr: SocketAddr, url: &str) -> Result<(u16, Bytes)> {
    let body = format!("{{\"url\":\"{url}\"}}");
    let request = http::Request::post(format!("http://{addr}/api/v1/links"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// A webhook receiver on loopback: answers every request 200 at once (HTTP/1.1
/// keep-alive) and counts them.
async fn receiver(count: Arc<AtomicU64>) -> Result<SocketAddr> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.get_mut().write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Subscribes `receiver` to every event.
async fn subscribe(client: &HttpClient, addr: SocketAddr, receiver: SocketAddr) -> Result<()> {
    let body = format!(
        "{{\"url\":\"http://{receiver}/hook\",\"events\":[\"link.created\",\"link.updated\",\"link.deleted\",\"link.flagged\",\"link.clicks\"]}}"
    );
    let request = http::Request::post(format!("http://{addr}/api/v1/webhooks"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = client.request(request).await?;
    if response.status() != 201 {
        bail!("the subscription was refused: {}", response.status());
    }
    Ok(())
}

/// What a level measured.
struct Level {
    rate: f64,
    histogram: Histogram<u64>,
    errors: u64,
    /// Events delivered per second over the level, with a subscription.
    delivered: Option<f64>,
}

async fn throughput(args: &Args, clients: usize, webhook: bool) -> Result<Level> {
    let dir = tempfile::tempdir()?;
    let (_control, addr) = start_control(args, dir.path())?;
    let client = client();
    let delivered = Arc::new(AtomicU64::new(0));
    if webhook {
        let receiver = receiver(Arc::clone(&delivered)).await?;
        subscribe(&client, addr, receiver).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..clients {
        let client = client.clone();
        let errors = Arc::clone(&errors);
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let sent = Instant::now();
                match create(&client, addr, &format!("https://example.com/{c}/{i}")).await {
                    Ok((201, _)) => histogram
                        .record(sent.elapsed().as_micros() as u64)
                        .expect("record"),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram
        }));
    }
    let mut total = Histogram::<u64>::new(3)?;
    for task in tasks {
        total.add(task.await?)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Level {
        rate: total.len() as f64 / elapsed,
        histogram: total,
        errors: errors.load(Ordering::Relaxed),
        delivered: webhook.then(|| delivered.load(Ordering::Relaxed) as f64 / elapsed),
    })
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn visibility(args: &Args) -> Result<Histogram<u64>> {
    let dir = tempfile::tempdir()?;
    let (_control, addr) = start_control(args, dir.path())?;
    let port = free_port()?;
    let _proxy = Guard(
        Command::new(args.bin_dir.join("shortline-proxy"))
            .env("SHORTLINE_DATA_DIR", dir.path())
            .env("SHORTLINE_CONTROL_LISTEN", addr.to_string())
            .env("SHORTLINE_PROXY_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "SHORTLINE_PROXY_METRICS_LISTEN",
                format!("127.0.0.1:{}", free_port()?),
            )
            .env("RUST_LOG", "warn")
            // The probe asks for each code until it is there: to the
            // enumeration guard that is a client walking unknown codes, and
            // after 100 misses it would answer 429 for a minute.
            .env("SHORTLINE_ENUMERATION_MISSES_MAX", "0")
            .stdout(Stdio::null())
            .spawn()
            .context("start shortline-proxy")?,
    );
    let probe: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let head = |code: &str| {
        http::Request::head(format!("http://127.0.0.1:{port}/{code}"))
            .body(Empty::new())
            .expect("request")
    };
    // Wait for the proxy to listen and follow the stream.
    let ready = Instant::now();
    while probe.request(head("healthz")).await.is_err() {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("proxy did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = client();
    let mut histogram = Histogram::<u64>::new(3)?;
    for i in 0..args.visibility_samples {
        let (status, body) =
            create(&client, addr, &format!("https://example.com/visible/{i}")).await?;
        if status != 201 {
            bail!("create failed: {status}");
        }
        let acknowledged = Instant::now();
        let link: serde_json::Value = serde_json::from_slice(&body)?;
        let code = link["code"].as_str().context("code")?.to_owned();
        loop {
            let response = probe.request(head(&code)).await?;
            if response.status().as_u16() == 302 {
                break;
            }
            if acknowledged.elapsed() > Duration::from_secs(10) {
                bail!("{code} never became visible");
            }
        }
        histogram.record(acknowledged.elapsed().as_micros() as u64)?;
    }
    Ok(histogram)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    match &args.fdb_cluster_file {
        Some(cluster) => println!("store: FoundationDB ({})\n", cluster.display()),
        None => println!("store: embedded (redb)\n"),
    }
    println!(
        "| clients | webhook | durable creates/s | p50 ms | p99 ms | errors | events delivered/s |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let modes: &[bool] = if args.webhook {
        &[false, true]
    } else {
        &[false]
    };
    for &clients in &args.clients {
        for &webhook in modes {
            let level = throughput(&args, clients, webhook).await?;
            println!(
                "| {clients} | {} | {:.0} | {:.2} | {:.2} | {} | {} |",
                if webhook { "on" } else { "off" },
                level.rate,
                ms(level.histogram.value_at_quantile(0.5)),
                ms(level.histogram.value_at_quantile(0.99)),
                level.errors,
                level
                    .delivered
                    .map_or("-".to_owned(), |d| format!("{d:.0}")),
            );
        }
    }
    if args.visibility_samples > 0 {
        let histogram = visibility(&args).await?;
        println!();
        println!("| create-to-visible samples | p50 ms | p99 ms | max ms |");
        println!("|---:|---:|---:|---:|");
        println!(
            "| {} | {:.2} | {:.2} | {:.2} |",
            histogram.len(),
            ms(histogram.value_at_quantile(0.5)),
            ms(histogram.value_at_quantile(0.99)),
            ms(histogram.max())
        );
    }
    Ok(())
}
