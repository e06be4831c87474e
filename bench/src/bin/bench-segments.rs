//! What changes cost over a large table: a base of `--links` links, then
//! rounds of `--changes` changes each written as a delta segment (control's
//! side) and installed over the base (the proxy's side), lookups through the
//! base and its deltas against the base alone, and the merges.
//!
//! ```text
//! cargo run --release -p shortline-bench --bin bench-segments -- --links 100000000 --short-targets
//! ```
//!
//! The base is written by `bench-table --write-only` in a child process (or
//! given with `--base`, written before with the same `--links` and
//! `--short-targets`), so this process holds no trace of building it.
//! Control's delta step here is the collapse of the changes and the delta
//! file (written, fsynced, renamed); the change-log read it starts with is
//! measured on the real control plane (docs/BENCHMARKS.md names both).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shortline_bench::{code_for, record_for, thread_cpu, time_lookups, workloads};
use shortline_store::files::delta_file_name;
use shortline_store::{
    Change, Code, DeltaOf, LinkId, LinkRecord, LiveTable, Seq, Snapshot, SnapshotWriter, Target,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks delta segments over a large base")]
struct Args {
    /// Links in the base.
    #[arg(long, default_value_t = 10_000_000)]
    links: u64,
    /// Changes per delta: eight in ten new links, one an update, one a delete.
    #[arg(long, default_value_t = 10_000)]
    changes: u64,
    /// Deltas written and installed, one after another.
    #[arg(long, default_value_t = 4)]
    deltas: u64,
    /// Lookups per measured pass.
    #[arg(long, default_value_t = 5_000_000)]
    lookups: usize,
    /// Passes per workload; the best is reported.
    #[arg(long, default_value_t = 3)]
    passes: u32,
    /// Targets of about 25 bytes instead of 75 (as `bench-table`).
    #[arg(long)]
    short_targets: bool,
    /// Use this base file (kept) instead of writing one.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Where to write the files (the base's folder by default, or a
    /// temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also merge the base and the deltas into a new base (reads and
    /// writes the whole table).
    #[arg(long)]
    merge_all: bool,
}

/// The changes of round `round`: new codes past the base, updates and
/// deletes of base codes, at sequences after `after`, each with its link's
/// number.
fn changes(args: &Args, round: u64, after: Seq, rng: &mut StdRng) -> Vec<(u64, Change)> {
    (0..args.changes)
        .map(|j| {
            let seq = Seq(after.0 + 1 + j);
            let (i, record) = match j % 10 {
                8 => {
                    let i = rng.random_range(0..args.links);
                    let target = format!("https://changed.example/{round}/{i}");
                    let record = LinkRecord::new(
                        Code::parse(&code_for(i)).expect("valid code"),
                        Target::parse(&target).expect("valid target"),
                        LinkId(i),
                    );
                    (i, Some(record))
                }
                9 => (rng.random_range(0..args.links), None),
                _ => {
                    let i = args.links + round * args.changes + j;
                    (i, Some(record_for(i, args.short_targets)))
                }
            };
            let change = Change {
                seq,
                code: Code::parse(&code_for(i)).expect("valid code"),
                record,
            };
            (i, change)
        })
        .collect()
}

/// Control's delta step over `changes`: each code's newest state, written
/// as a delta file. Returns the file, the thread's CPU and the wall time.
fn write_delta(
    dir: &Path,
    of: DeltaOf,
    changes: Vec<Change>,
) -> Result<(PathBuf, Duration, Duration)> {
    let (cpu, wall) = (thread_cpu(), Instant::now());
    let seq = changes.last().context("changes")?.seq;
    let mut newest: HashMap<Code, Option<LinkRecord>> = HashMap::new();
    for change in changes {
        newest.insert(change.code, change.record);
    }
    let path = dir.join(delta_file_name(of, seq));
    let mut writer = SnapshotWriter::create_delta(&path, seq, of)?;
    for (code, record) in &newest {
        writer.push_change(code, record.as_ref())?;
    }
    writer.finish()?;
    Ok((path, thread_cpu() - cpu, wall.elapsed()))
}

fn write_base(path: &Path, args: &Args) -> Result<()> {
    let table = std::env::current_exe()?.with_file_name("bench-table");
    let mut command = std::process::Command::new(&table);
    command.arg("--write-only").arg(path).args([
        "--links",
        &args.links.to_string(),
        "--builds",
        "1",
    ]);
    if args.short_targets {
        command.arg("--short-targets");
    }
    let out = command
        .output()
        .with_context(|| format!("cannot run {}", table.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "bench-table --write-only failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seconds: f64 = String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .context("bench-table said nothing")?
        .parse()?;
    println!(
        "base of {} links written in {seconds:.1} s ({:.2} s per million)",
        args.links,
        seconds / (args.links as f64 / 1e6)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = tempfile::tempdir_in(
        args.dir
            .clone()
            .or_else(|| args.base.as_ref()?.parent().map(Path::to_path_buf))
            .unwrap_or_else(std::env::temp_dir),
    )?;
    let dir = scratch.path();
    let base_path = match &args.base {
        Some(path) => path.clone(),
        None => {
            let path = dir.join("base.snap");
            write_base(&path, &args)?;
            path
        }
    };
    let opened = Instant::now();
    let base = Snapshot::open(&base_path)?;
    let open_ms = ms(opened.elapsed());
    let checked = Instant::now();
    base.verify()?;
    println!(
        "base: {} links, opened in {open_ms:.2} ms, every block checked in {:.0} ms",
        base.len(),
        ms(checked.elapsed())
    );
    let of_base = base.base_id();
    let table = LiveTable::new(base);
    let base_only = LiveTable::new(Snapshot::open_verified(&base_path)?);
    let mut rng = StdRng::seed_from_u64(7);
    let mut last = table.load().covered();
    let mut model: HashMap<u64, Option<String>> = HashMap::new();
    println!(
        "| delta | changes | control CPU ms | control wall ms | delta bytes | proxy install ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for round in 0..args.deltas {
        let changes: Vec<Change> = changes(&args, round, last, &mut rng)
            .into_iter()
            .map(|(i, change)| {
                let target = change.record.as_ref().map(|r| r.target.as_str().to_owned());
                model.insert(i, target);
                change
            })
            .collect();
        let of = DeltaOf {
            base: of_base,
            parent: last,
        };
        let (path, cpu, wall) = write_delta(dir, of, changes)?;
        let bytes = std::fs::metadata(&path)?.len();
        let installing = Instant::now();
        let delta = Snapshot::open_verified(&path)?;
        last = delta.sequence();
        table.install(delta)?;
        let install = installing.elapsed();
        println!(
            "| {} | {} | {:.1} | {:.1} | {bytes} | {:.2} |",
            round + 1,
            args.changes,
            ms(cpu),
            ms(wall),
            ms(install)
        );
    }
    let view = table.load_full();
    let wrong = model
        .iter()
        .filter(|(i, want)| {
            view.get(code_for(**i).as_bytes())
                .map(|l| l.target_str().map(str::to_owned))
                != want.as_ref().map(|w| Some(w.clone()))
        })
        .count();
    anyhow::ensure!(wrong == 0, "{wrong} changed codes answer wrongly");

    println!();
    println!(
        "| lookups, one thread | base alone M/s | base + {} deltas M/s | ratio |",
        view.deltas().len()
    );
    println!("|---|---:|---:|---:|");
    let plain = base_only.load_full();
    for workload in workloads(args.links, args.lookups, 1.0)? {
        let best = |view: &shortline_store::View| {
            (0..args.passes)
                .map(|_| {
                    time_lookups(&workload.probes, |code| {
                        view.get(code).map_or(0, |link| link.target().len())
                    })
                })
                .min()
                .unwrap_or_default()
        };
        let (alone, layered) = (best(&plain), best(&view));
        let rate = |d: Duration| args.lookups as f64 / d.as_secs_f64() / 1e6;
        println!(
            "| {} | {:.2} | {:.2} | {:.2}x |",
            workload.name,
            rate(alone),
            rate(layered),
            rate(layered) / rate(alone)
        );
    }

    let merging = (thread_cpu(), Instant::now());
    let (_, merged) = view.write_newer_than_base(dir, view.covered())?;
    let codes = merged.record_count;
    println!();
    println!(
        "{} deltas merged into one of {codes} codes: {:.0} ms CPU, {:.0} ms",
        view.deltas().len(),
        ms(thread_cpu() - merging.0),
        ms(merging.1.elapsed())
    );
    if args.merge_all {
        let merging = (thread_cpu(), Instant::now());
        let path = dir.join("merged-base.snap");
        let mut writer = SnapshotWriter::create(&path, view.covered())?;
        for record in view.records() {
            writer.push(&record?)?;
        }
        let stats = writer.finish()?;
        let wall = merging.1.elapsed().as_secs_f64();
        println!(
            "base and deltas merged into a new base of {} links: {:.1} s CPU, {wall:.1} s ({:.2} s per million)",
            stats.record_count,
            (thread_cpu() - merging.0).as_secs_f64(),
            wall / (stats.record_count as f64 / 1e6)
        );
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
