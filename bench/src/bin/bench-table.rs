//! Snapshot table benchmark: build time, open time, bytes per link and lookups
//! per second against `std::collections::HashMap<String, String>` built from
//! the same links, all measured in one run and reported as ratios.
//!
//! ```text
//! cargo run --release -p shortline-bench --bin bench-table -- --links 1000000,10000000
//! ```
//!
//! The file is written by a child process (this binary with `--write-only`),
//! streaming generated links through `SnapshotWriter`, so the process that
//! opens and reads the table holds no trace of building it, as a proxy
//! does not; and a hundred million links need no list of them in memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shortline_bench::{code_for, record_for, target_for, time_lookups, workloads};
use shortline_store::{LiveTable, Seq, Snapshot, write_snapshot};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks the snapshot table against HashMap<String, String>")]
struct Args {
    /// Link counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    links: Vec<u64>,
    /// Lookups per measured pass.
    #[arg(long, default_value_t = 5_000_000)]
    lookups: usize,
    /// Passes per workload; the best pass of each side is reported.
    #[arg(long, default_value_t = 3)]
    passes: u32,
    /// Zipf exponent of the hot-set workload.
    #[arg(long, default_value_t = 1.0)]
    zipf_exponent: f64,
    /// Largest link count the `HashMap` baseline is built for (it needs
    /// about 150 bytes per link); above it, only the table is measured.
    #[arg(long, default_value_t = 30_000_000)]
    hashmap_max: u64,
    /// Targets of about 25 bytes instead of 75, for link counts whose file
    /// would not fit on the disk otherwise.
    #[arg(long)]
    short_targets: bool,
    /// Builds per link count (the first pays for faulting in fresh memory;
    /// a second needs room for two files at once).
    #[arg(long, default_value_t = 2)]
    builds: u32,
    /// Child mode: write a snapshot of `--links` (one count) to this path,
    /// print the timings and exit.
    #[arg(long, hide = true)]
    write_only: Option<std::path::PathBuf>,
    /// With `--write-only`: the change sequence the file says it covers.
    #[arg(long, hide = true, default_value_t = 1)]
    sequence: u64,
    /// Only read: open this file (written with `--write-only`, same
    /// `--links`), check every block and time uniform hits, nothing else in
    /// the process.
    #[arg(long)]
    read_only: Option<std::path::PathBuf>,
}

/// Child mode: writes `count` generated links to `path` `builds` times and
/// prints `first_build_s repeated_build_s file_bytes overhead_per_link`.
fn write_only(
    path: &std::path::Path,
    count: u64,
    short: bool,
    builds: u32,
    sequence: Seq,
) -> Result<()> {
    let mut times = Vec::new();
    let mut stats = None;
    for _ in 0..builds.max(1) {
        let start = Instant::now();
        stats = Some(write_snapshot(
            path,
            sequence,
            (0..count).map(|i| record_for(i, short)),
        )?);
        times.push(start.elapsed().as_secs_f64());
    }
    let stats = stats.expect("built at least once");
    println!(
        "{} {} {} {}",
        times[0],
        times.last().expect("built at least once"),
        stats.file_size_bytes,
        stats.overhead_bytes_per_link()
    );
    Ok(())
}

/// Read-only mode: uniform hits on a file written before.
fn read_only(path: &std::path::Path, count: u64, args: &Args) -> Result<()> {
    let snapshot = Snapshot::open(path)?;
    snapshot.verify()?;
    let table = LiveTable::new(snapshot);
    let mut rng = StdRng::seed_from_u64(42);
    let probes: Vec<Vec<u8>> = (0..args.lookups)
        .map(|_| code_for(rng.random_range(0..count)).into_bytes())
        .collect();
    for _ in 0..args.passes {
        let view = table.load();
        let took = time_lookups(&probes, |code| {
            view.get(code).map_or(0, |link| link.target().len())
        });
        println!(
            "{count} links, uniform hits: {:.2} M/s",
            args.lookups as f64 / took.as_secs_f64() / 1e6
        );
    }
    Ok(())
}

/// What the writer child reported.
struct Written {
    first_build: f64,
    build: f64,
    file_bytes: u64,
    overhead: f64,
}

fn write_in_child(path: &std::path::Path, count: u64, args: &Args) -> Result<Written> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg("--write-only").arg(path).args([
        "--links",
        &count.to_string(),
        "--builds",
        &args.builds.to_string(),
    ]);
    if args.short_targets {
        command.arg("--short-targets");
    }
    let out = command.output()?;
    anyhow::ensure!(
        out.status.success(),
        "writer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    anyhow::ensure!(fields.len() == 4, "writer said {text:?}");
    Ok(Written {
        first_build: fields[0].parse()?,
        build: fields[1].parse()?,
        file_bytes: fields[2].parse()?,
        overhead: fields[3].parse()?,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.write_only {
        let count = *args.links.first().context("--links")?;
        return write_only(
            path,
            count,
            args.short_targets,
            args.builds,
            Seq(args.sequence),
        );
    }
    if let Some(path) = &args.read_only {
        let count = *args.links.first().context("--links")?;
        return read_only(path, count, &args);
    }
    println!("| links | workload | table Mlookups/s | HashMap Mlookups/s | ratio |");
    println!("|---:|---|---:|---:|---:|");
    let mut facts = Vec::new();
    for &count in &args.links {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bench.snap");
        let written = write_in_child(&path, count, &args)?;
        // Opening reads the header and the block checksum table; the first
        // lookup checks the blocks it reads; the rest are checked in the
        // background by a proxy, here on this thread.
        let start = Instant::now();
        let snapshot = Snapshot::open(&path)?;
        let open = start.elapsed();
        let probe = code_for(count / 2);
        anyhow::ensure!(
            snapshot.get(probe.as_bytes()).is_some(),
            "the probe code is missing"
        );
        let first_answer = start.elapsed();
        let start = Instant::now();
        snapshot.verify()?;
        let verify = start.elapsed();
        let table = LiveTable::new(snapshot);
        let map: Option<HashMap<String, String>> = (count <= args.hashmap_max).then(|| {
            (0..count)
                .map(|i| (code_for(i), target_for(i, args.short_targets)))
                .collect()
        });
        for workload in workloads(count, args.lookups, args.zipf_exponent)? {
            let (mut best_table, mut best_map) = (Duration::MAX, Duration::MAX);
            for _ in 0..args.passes {
                let view = table.load();
                best_table = best_table.min(time_lookups(&workload.probes, |code| {
                    view.get(code).map_or(0, |link| link.target().len())
                }));
                if let Some(map) = &map {
                    best_map = best_map.min(time_lookups(&workload.probes, |code| {
                        // Probes are ASCII, so the conversion never fails.
                        let key = std::str::from_utf8(code).unwrap_or_default();
                        map.get(key).map_or(0, String::len)
                    }));
                }
            }
            let rate = |d: Duration| args.lookups as f64 / d.as_secs_f64() / 1e6;
            if map.is_some() {
                println!(
                    "| {count} | {} | {:.1} | {:.1} | {:.2}x |",
                    workload.name,
                    rate(best_table),
                    rate(best_map),
                    best_map.as_secs_f64() / best_table.as_secs_f64()
                );
            } else {
                println!(
                    "| {count} | {} | {:.1} | not built (over --hashmap-max) | - |",
                    workload.name,
                    rate(best_table),
                );
            }
        }
        facts.push((count, written, [open, first_answer, verify]));
    }
    println!();
    println!(
        "| links | first build + write + fsync | repeated build + write + fsync | open | open to first answer | check every block | file bytes | overhead bytes/link |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (count, written, [open, first_answer, verify]) in facts {
        println!(
            "| {count} | {:.2} s | {:.2} s | {:.3} ms | {:.3} ms | {:.1} ms | {} | {:.1} |",
            written.first_build,
            written.build,
            open.as_secs_f64() * 1e3,
            first_answer.as_secs_f64() * 1e3,
            verify.as_secs_f64() * 1e3,
            written.file_bytes,
            written.overhead
        );
    }
    Ok(())
}
