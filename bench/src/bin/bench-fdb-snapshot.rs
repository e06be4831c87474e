//! How long the control plane takes to build a snapshot from a large table
//! in FoundationDB: loads `--links` link documents straight into a fresh
//! key prefix (as control stores them, several writer threads, a few
//! thousand per transaction), starts the release `shortline-control` on
//! that prefix, and reads the time of the first snapshot it builds from its
//! log. The prefix is cleared afterwards unless `--keep`.
//!
//! ```text
//! cargo build --release --features shortline-bench/fdb -p shortline-control -p shortline-bench
//! ./target/release/bench-fdb-snapshot --cluster-file FILE --links 10000000
//! ```
//!
//! A one-process memory-engine cluster holds about a gigabyte: start it with
//! `FDB_ENGINE=ssd` for ten million links.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use shortline_control::db::fdb::{FdbBackend, boot};
use shortline_control::db::{Backend, Space};
use shortline_control::model::LinkDoc;
use shortline_store::{Code, LinkId, LinkStatus, RedirectStatus, Target};

#[derive(Debug, Parser)]
#[command(about = "Snapshot build time over a large FoundationDB table")]
struct Args {
    /// The cluster file.
    #[arg(long)]
    cluster_file: PathBuf,
    /// Links to load.
    #[arg(long, default_value_t = 1_000_000)]
    links: u64,
    /// Writer threads.
    #[arg(long, default_value_t = 4)]
    threads: u64,
    /// Links per transaction (FoundationDB takes at most 10 MB in one).
    #[arg(long, default_value_t = 2_000)]
    per_transaction: u64,
    /// Directory holding the release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Leave the loaded links in the cluster.
    #[arg(long)]
    keep: bool,
}

fn link(id: u64) -> LinkDoc {
    LinkDoc {
        id: LinkId(id),
        code: Code::parse(&format!("b{id:010}")).expect("a code"),
        url: Target::parse(&format!(
            "https://example.com/articles/{id}?utm_source=bench"
        ))
        .expect("a target"),
        owner: "bench".into(),
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
        expires_at: None,
        max_clicks: None,
        redirect: RedirectStatus::Found,
        status: LinkStatus::Active,
        forward_query: false,
        tags: Vec::new(),
        title: None,
        flag_reason: None,
        target_locked: false,
        target_changes: 0,
        target_changed_at: None,
        previous_targets: Vec::new(),
        routing: None,
    }
}

fn load(backend: &FdbBackend, args: &Args) -> Result<f64> {
    let next = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..args.threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let first = next.fetch_add(args.per_transaction, Ordering::SeqCst);
                        if first >= args.links {
                            return Ok(());
                        }
                        let last = (first + args.per_transaction).min(args.links);
                        let docs: Vec<(Vec<u8>, Vec<u8>)> = (first..last)
                            .map(|id| {
                                let doc = link(id);
                                (doc.code.as_bytes().to_vec(), doc.encode())
                            })
                            .collect();
                        backend.write(&mut |txn| {
                            for (code, doc) in &docs {
                                txn.set(Space::Links, code, doc)?;
                            }
                            // The last transaction logs a change, so the
                            // table has a sequence to snapshot at.
                            if last == args.links {
                                txn.log_change(b"{}")?;
                            }
                            Ok(())
                        })?;
                    }
                })
            })
            .collect();
        writers
            .into_iter()
            .try_for_each(|w| w.join().expect("writer thread"))
    })?;
    Ok(started.elapsed().as_secs_f64())
}

/// Starts control on the prefix and waits for its first snapshot's log line.
fn first_snapshot(args: &Args, prefix: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let mut control = Command::new(args.bin_dir.join("shortline-control"))
        .arg("serve")
        .env("SHORTLINE_DATA_DIR", dir.path())
        .env("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0")
        .env("SHORTLINE_STORE_BACKEND", "fdb")
        .env("SHORTLINE_FDB_CLUSTER_FILE", &args.cluster_file)
        .env("SHORTLINE_FDB_PREFIX", prefix)
        .env("SHORTLINE_ADMIN_TOKEN", "bench-admin-token-0123456789")
        .env("SHORTLINE_LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start shortline-control")?;
    let stderr = control.stderr.take().context("stderr")?;
    let mut found = None;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if line.contains("built snapshot") {
            found = Some(line);
            break;
        }
        if line.contains("ERROR") || line.starts_with("error") {
            eprintln!("{line}");
        }
    }
    let _ = control.kill();
    let _ = control.wait();
    found.context("control ended before it built a snapshot")
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    line[at..].split_whitespace().next()
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.per_transaction == 0 || args.threads == 0 {
        bail!("--per-transaction and --threads must be at least 1");
    }
    let _network = boot();
    let prefix = format!("bench-snapshot-{}", std::process::id());
    let backend = FdbBackend::open(Some(&args.cluster_file), &prefix)?;
    let loaded = load(&backend, &args)?;
    println!(
        "loaded {} links in {loaded:.1} s ({:.0} links/s, {} writer threads, {} per transaction)",
        args.links,
        args.links as f64 / loaded,
        args.threads,
        args.per_transaction
    );
    let line = first_snapshot(&args, &prefix);
    if !args.keep {
        backend.clear_prefix()?;
    }
    let line = line?;
    let seconds: f64 = field(&line, "seconds")
        .context("seconds in the log line")?
        .parse()?;
    let links: u64 = field(&line, "links")
        .context("links in the log line")?
        .parse()?;
    let bytes: u64 = field(&line, "bytes")
        .context("bytes in the log line")?
        .parse()?;
    println!(
        "| links | snapshot build s | per million links s | snapshot MB |\n|---:|---:|---:|---:|\n| {links} | {seconds:.1} | {:.2} | {:.0} |",
        seconds / (links as f64 / 1e6),
        bytes as f64 / 1e6
    );
    if links != args.links {
        bail!(
            "the snapshot holds {links} links, {} were loaded",
            args.links
        );
    }
    Ok(())
}
