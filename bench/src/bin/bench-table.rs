//! Snapshot table benchmark: build time, open time, bytes per link and lookups
//! per second against `std::collections::HashMap<String, String>` built from
//! the same links, all measured in one run and reported as ratios.
//!
//! ```text
//! cargo run --release -p shortline-bench --bin bench-table -- --links 1000000,10000000
//! ```

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use shortline_store::{Code, LinkId, LinkRecord, LiveTable, Seq, Snapshot, Target, write_snapshot};

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
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SPACE_7: u64 = 3_521_614_606_208; // 62^7

/// A 7-character base62 code, distinct for distinct `i` below 62^7, scattered
/// by multiplying with a constant coprime to 62^7.
fn code_for(i: u64) -> String {
    let mut n = (u128::from(i) * 2_654_435_761 % u128::from(SPACE_7)) as u64;
    let mut out = [0u8; 7];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

fn target_for(i: u64) -> String {
    format!("https://www.example.com/articles/2026/{i}/a-readable-slug?utm_source=bench")
}

struct Workload {
    name: &'static str,
    probes: Vec<Vec<u8>>,
}

fn workloads(codes: &[String], lookups: usize, zipf_exponent: f64) -> Result<Vec<Workload>> {
    let mut rng = StdRng::seed_from_u64(42);
    let n = codes.len();
    let uniform = (0..lookups)
        .map(|_| codes[rng.random_range(0..n)].clone().into_bytes())
        .collect();
    let zipf = Zipf::new(n as f64, zipf_exponent).context("zipf parameters")?;
    // Zipf ranks are shuffled onto codes so the hot set is not one region of the file.
    let hot = (0..lookups)
        .map(|_| {
            let rank = zipf.sample(&mut rng) as u64 - 1;
            codes[(rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n as u64) as usize]
                .clone()
                .into_bytes()
        })
        .collect();
    let misses = (0..lookups)
        .map(|_| {
            let mut code = codes[rng.random_range(0..n)].clone().into_bytes();
            code.push(b'x');
            code
        })
        .collect();
    Ok(vec![
        Workload {
            name: "uniform hits",
            probes: uniform,
        },
        Workload {
            name: "zipf hits",
            probes: hot,
        },
        Workload {
            name: "misses",
            probes: misses,
        },
    ])
}

fn time_lookups(probes: &[Vec<u8>], mut lookup: impl FnMut(&[u8]) -> usize) -> Duration {
    let start = Instant::now();
    let mut sum = 0usize;
    for probe in probes {
        sum = sum.wrapping_add(lookup(black_box(probe)));
    }
    black_box(sum);
    start.elapsed()
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("| links | workload | table Mlookups/s | HashMap Mlookups/s | ratio |");
    println!("|---:|---|---:|---:|---:|");
    let mut facts = Vec::new();
    for &count in &args.links {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bench.snap");
        let codes: Vec<String> = (0..count).map(code_for).collect();
        let records: Vec<LinkRecord> = codes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let target = Target::parse(&target_for(i as u64)).expect("valid target");
                LinkRecord::new(
                    Code::parse(c).expect("valid code"),
                    target,
                    LinkId(i as u64),
                )
            })
            .collect();
        // The first build in a process pays for faulting in fresh memory; a
        // control plane rebuilding snapshots runs warm, like the second.
        let start = Instant::now();
        write_snapshot(&path, Seq(1), &records)?;
        let first_build = start.elapsed();
        let start = Instant::now();
        let stats = write_snapshot(&path, Seq(1), &records)?;
        let build = start.elapsed();
        drop(records);
        let start = Instant::now();
        let snapshot = Snapshot::open(&path)?;
        let open = start.elapsed();
        let table = LiveTable::new(snapshot);
        let map: HashMap<String, String> = codes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), target_for(i as u64)))
            .collect();
        for workload in workloads(&codes, args.lookups, args.zipf_exponent)? {
            let (mut best_table, mut best_map) = (Duration::MAX, Duration::MAX);
            for _ in 0..args.passes {
                let view = table.load();
                best_table = best_table.min(time_lookups(&workload.probes, |code| {
                    view.get(code).map_or(0, |link| link.target().len())
                }));
                best_map = best_map.min(time_lookups(&workload.probes, |code| {
                    // Probes are ASCII, so the conversion never fails.
                    let key = std::str::from_utf8(code).unwrap_or_default();
                    map.get(key).map_or(0, String::len)
                }));
            }
            let rate = |d: Duration| args.lookups as f64 / d.as_secs_f64() / 1e6;
            println!(
                "| {count} | {} | {:.1} | {:.1} | {:.2}x |",
                workload.name,
                rate(best_table),
                rate(best_map),
                best_map.as_secs_f64() / best_table.as_secs_f64()
            );
        }
        facts.push((count, first_build, build, open, stats));
    }
    println!();
    println!(
        "| links | first build + write + fsync | repeated build + write + fsync | open (map + checksum) | file bytes | overhead bytes/link |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (count, first_build, build, open, stats) in facts {
        println!(
            "| {count} | {:.2} s | {:.2} s | {:.1} ms | {} | {:.1} |",
            first_build.as_secs_f64(),
            build.as_secs_f64(),
            open.as_secs_f64() * 1e3,
            stats.file_size_bytes,
            stats.overhead_bytes_per_link()
        );
    }
    Ok(())
}
