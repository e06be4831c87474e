//! Clicks per second through the whole click path in one process: redirect
//! threads push events into the proxy's ring, the batcher drains and encodes
//! wire batches, control decodes them, appends each batch to its click log
//! (synced), classifies and folds each click, and flushes the folded counters
//! to a real embedded store.
//! Each stage is also timed alone, so the slowest one is named.
//!
//! ```text
//! ./target/release/bench-clicks --clicks 4000000 --links 100000
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use shortline_control::analytics::Analytics;
use shortline_control::analytics::aggregate::{Accepted, Settings};
use shortline_control::commit::{Committed, Committer};
use shortline_control::db::Backend;
use shortline_control::db::redb::RedbBackend;
use shortline_proxy::clicks::{ClickEvent, ClickRing, encode_batch};
use shortline_proxy::metrics::Metrics;
use shortline_store::clickwire;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    /// Clicks to push through.
    #[arg(long, default_value_t = 4_000_000)]
    clicks: u64,
    /// Links clicked, with Zipf popularity.
    #[arg(long, default_value_t = 100_000)]
    links: u64,
    /// Every link equally popular instead of Zipf (the worst case for
    /// folding: few clicks share a counter).
    #[arg(long)]
    uniform: bool,
    /// Threads pushing into the ring (the proxy's workers).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Clicks per wire batch (the proxy's click_batch_max).
    #[arg(long, default_value_t = 16_384)]
    batch: usize,
    /// Pending counter keys that start a flush (control's analytics_flush_keys_max).
    #[arg(long, default_value_t = 250_000)]
    flush_keys_max: usize,
    /// Flush interval in milliseconds (control's analytics_flush_ms).
    #[arg(long, default_value_t = 1000)]
    flush_ms: u64,
    /// Flush into FoundationDB (the cluster this file names, a fresh key
    /// prefix) instead of the embedded store. Needs the `fdb` feature.
    #[arg(long)]
    fdb_cluster_file: Option<std::path::PathBuf>,
}

/// The store the flushes go to, and what keeps it usable.
fn open_store(
    args: &Args,
    dir: &std::path::Path,
) -> Result<(Arc<dyn Backend>, Box<dyn std::any::Any>)> {
    match &args.fdb_cluster_file {
        None => Ok((Arc::new(RedbBackend::open(dir)?), Box::new(()))),
        #[cfg(feature = "fdb")]
        Some(cluster) => {
            use shortline_control::db::fdb::{FdbBackend, boot};
            let network = boot();
            let prefix = format!("bench-clicks-{}", std::process::id());
            let backend = FdbBackend::open(Some(cluster), &prefix)?;
            Ok((Arc::new(backend), Box::new(network)))
        }
        #[cfg(not(feature = "fdb"))]
        Some(_) => anyhow::bail!("--fdb-cluster-file needs a build with --features fdb"),
    }
}

/// Distinct counter keys in the store, read in pages (a FoundationDB read
/// transaction lasts at most five seconds).
fn counter_keys(backend: &dyn Backend) -> Result<u64> {
    let mut start = Vec::new();
    let mut count = 0u64;
    loop {
        let page = backend.read(|txn| {
            txn.range(
                shortline_control::db::Space::Counters,
                &start,
                &[0xff],
                10_000,
            )
        })?;
        count += page.len() as u64;
        match page.last() {
            Some((key, _)) if page.len() == 10_000 => {
                start.clone_from(key);
                start.push(0);
            }
            _ => return Ok(count),
        }
    }
}

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "curl/8.5.0",
];
const REFERRERS: &[&str] = &[
    "",
    "https://www.google.com/",
    "https://news.ycombinator.com/item?id=1",
    "https://t.co/abc",
    "https://www.reddit.com/r/rust/",
    "https://mail.example.com/inbox",
];

fn events(args: &Args, seed: u64, count: u64) -> Vec<ClickEvent> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let zipf = Zipf::new(args.links as f64, 1.0).expect("valid Zipf");
    let now = 1_790_000_000_000u64;
    (0..count)
        .map(|i| {
            let link = if args.uniform {
                rng.random_range(1..=args.links)
            } else {
                zipf.sample(&mut rng) as u64
            };
            let ua = AGENTS[rng.random_range(0..AGENTS.len())];
            let referrer = REFERRERS[rng.random_range(0..REFERRERS.len())];
            let ip = std::net::IpAddr::from([203, 0, 113, (i % 250) as u8]);
            ClickEvent::new(
                link,
                now + i / 1000,
                i % 50 == 0,
                Some(ip),
                referrer.as_bytes(),
                ua.as_bytes(),
            )
        })
        .collect()
}

/// User and system CPU of a thread, from `/proc/self/<task>/stat`.
fn thread_cpu(task: &str) -> Result<Duration> {
    let path = if task == "thread-self" {
        "/proc/thread-self/stat".to_owned()
    } else {
        format!("/proc/self/task/{task}/stat")
    };
    let stat = std::fs::read_to_string(path)?;
    // Fields after the parenthesised name: state is the 3rd, utime the 14th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // Linux reports these in USER_HZ, 100 per second on every mainstream build.
    Ok(Duration::from_millis(ticks * 10))
}

/// CPU of every thread of this process whose name is one of `names`.
fn threads_cpu(names: &[&str]) -> Result<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?.file_name();
        let task = task.to_string_lossy();
        let comm = std::fs::read_to_string(format!("/proc/self/task/{task}/comm"))?;
        if names.contains(&comm.trim()) {
            total += thread_cpu(&task)?;
        }
    }
    Ok(total)
}

fn rate(n: u64, elapsed: Duration) -> String {
    format!("{:.2} M/s", n as f64 / elapsed.as_secs_f64() / 1e6)
}

fn settings(args: &Args) -> Settings {
    Settings {
        flush_interval: Duration::from_millis(args.flush_ms),
        flush_keys_max: args.flush_keys_max,
        top_n: 100,
        hourly_retention_days: 90,
    }
}

fn main() -> Result<()> {
    // Warnings (a failed flush, say) on stderr; RUST_LOG sets the level.
    shortline_common::settings::init_logging(shortline_common::settings::LogFormat::Text);
    let args = Args::parse();
    let total = args.clicks;
    let per_producer = total / args.producers as u64;
    let prepared: Vec<Vec<ClickEvent>> = (0..args.producers)
        .map(|p| events(&args, p as u64, per_producer))
        .collect();
    let sample: Vec<ClickEvent> = prepared[0].iter().take(args.batch).cloned().collect();

    // Stages alone.
    let metrics = Arc::new(Metrics::default());
    let ring = ClickRing::new(1 << 16, Arc::clone(&metrics));
    let started = Instant::now();
    let mut drained = Vec::with_capacity(args.batch);
    for event in prepared[0].iter().take(1_000_000) {
        ring.push(event.clone());
        if ring.len() >= args.batch {
            drained.clear();
            ring.drain_into(&mut drained, args.batch);
        }
    }
    let ring_alone = rate(1_000_000.min(per_producer), started.elapsed());
    let started = Instant::now();
    let rounds = 20;
    let mut wire = Vec::new();
    for seq in 0..rounds {
        wire = encode_batch("bench", seq, &sample);
    }
    let encode_alone = rate(rounds * sample.len() as u64, started.elapsed());
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(clickwire::decode(&wire)?);
    }
    let decode_alone = rate(rounds * sample.len() as u64, started.elapsed());
    let batch = clickwire::decode(&wire)?;
    let log_dir = tempfile::tempdir()?;
    let fold_only = Analytics::open(settings(&args), None, None, log_dir.path(), 0)?;
    let started = Instant::now();
    let mut folded = 0u64;
    for seq in 1..=rounds {
        let round = batch.clone().with_batch_seq(seq);
        // Never flushed: the log and the fold alone.
        if let Accepted::Taken = fold_only.accept(&round, &wire, 0) {
            folded += batch.clicks().len() as u64;
        }
    }
    let fold_alone = rate(folded, started.elapsed());

    // The whole path, with the store.
    let dir = tempfile::tempdir()?;
    let (backend, _store_guard) = open_store(&args, dir.path())?;
    let (committed, _) = tokio::sync::watch::channel(Committed {
        seq: shortline_store::Seq(0),
        at: Instant::now(),
    });
    let committer = Committer::start(Arc::clone(&backend), 65_536, 1024, Arc::new(committed))?;
    let analytics = Arc::new(Analytics::open(
        settings(&args),
        None,
        None,
        &dir.path().join("clicks-wal"),
        0,
    )?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("flusher")
        .enable_all()
        .build()?;
    // The committer has done the store's set-up writes by now.
    let flusher_before = threads_cpu(&["committer", "flusher"])?;
    runtime.spawn(Arc::clone(&analytics).run(committer.clone()));
    let ring = Arc::new(ClickRing::new(1 << 16, Arc::clone(&metrics)));
    let done = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let producers: Vec<_> = prepared
        .into_iter()
        .map(|events| {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                for event in events {
                    // A full ring drops at the proxy; here the producer waits
                    // so every click goes through and the rate is the pipeline's.
                    while ring.len() >= (1 << 16) - 1 {
                        std::thread::yield_now();
                    }
                    ring.push(event);
                }
            })
        })
        .collect();
    // The proxy's batcher: drains the ring and encodes wire batches.
    let (wires, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let shipper = {
        let ring = Arc::clone(&ring);
        let done = Arc::clone(&done);
        let batch_max = args.batch;
        std::thread::spawn(move || {
            let mut batch = Vec::with_capacity(batch_max);
            let mut seq = 0;
            loop {
                batch.clear();
                ring.drain_into(&mut batch, batch_max);
                if batch.is_empty() {
                    if done.load(Ordering::Acquire) && ring.is_empty() {
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                seq += 1;
                if wires
                    .send(encode_batch("bench-proxy", seq, &batch))
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    // Control's ingest: decodes and takes each batch, resending it (same
    // sequence) while the store is behind, as the proxy does. Its own CPU
    // time is returned, for the control plane's cost per click.
    let ingest = {
        let analytics = Arc::clone(&analytics);
        let counted = Arc::clone(&counted);
        std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || -> Result<Duration> {
                let before = thread_cpu("thread-self")?;
                for wire in received {
                    loop {
                        let decoded = clickwire::decode(&wire)?;
                        match analytics.accept(&decoded, &wire, 0) {
                            Accepted::Taken => {
                                counted.fetch_add(decoded.clicks().len() as u64, Ordering::Relaxed);
                                break;
                            }
                            Accepted::Busy => std::thread::sleep(Duration::from_millis(5)),
                            other => anyhow::bail!("batch not taken: {other:?}"),
                        }
                    }
                }
                Ok(thread_cpu("thread-self")? - before)
            })?
    };
    for p in producers {
        p.join().expect("producer");
    }
    done.store(true, Ordering::Release);
    shipper.join().expect("shipper");
    let ingest_cpu = ingest.join().expect("ingest")?;
    // Everything acknowledged, then counted.
    runtime.block_on(analytics.flush(&committer));
    let elapsed = started.elapsed();
    let n = counted.load(Ordering::Relaxed);
    let control_cpu = ingest_cpu + threads_cpu(&["committer", "flusher"])? - flusher_before;
    println!("| stage | clicks/s |");
    println!("|---|---:|");
    println!("| ring push + drain | {ring_alone} |");
    println!("| encode wire batch | {encode_alone} |");
    println!("| decode wire batch | {decode_alone} |");
    println!("| log (synced) + classify + fold | {fold_alone} |");
    println!(
        "| **whole path, durable** ({} clicks, {} links, {} producer(s)) | **{}** |",
        n,
        args.links,
        args.producers,
        rate(n, elapsed)
    );
    let clicks: i64 = backend.read(|txn| {
        Ok(txn
            .range(
                shortline_control::db::Space::Counters,
                b"clicks/",
                b"clicks0",
                usize::MAX,
            )?
            .iter()
            .map(|(_, value)| shortline_control::db::keys::counter_value(value))
            .sum())
    })?;
    let heads = n / 50;
    let keys = counter_keys(&*backend)?;
    println!(
        "\ncontrol CPU per click (ingest, fold, flush, commit): {:.2} us",
        control_cpu.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "\nstore: {}; {keys} distinct counters written, {:.0} per second of the whole path",
        backend.name(),
        keys as f64 / elapsed.as_secs_f64()
    );
    println!(
        "counted GET clicks in the store: {clicks} (expected {})",
        n - heads
    );
    anyhow::ensure!(clicks as u64 == n - heads, "clicks lost or double-counted");
    Ok(())
}
