//! `shortline-control import`: links from a CSV file or another
//! shortener's export (`app/formats.rs` reads each format), loaded straight
//! into the store in large transactions or one bulk load.
//!
//! Every row goes through what `POST /api/v1/links` applies (the target
//! validator, the threat list, alias rules, tags and title limits, and inside
//! the transaction the blocklist and a taken code), so an imported link is
//! one the API would have created. Rows are written a batch per transaction
//! (`--batch`; [`default_batch`]) while the next batch is validated, and each
//! transaction also records the last row it covers under a key made from the
//! file's contents: an import cut short (a crash, Ctrl-C) run again with the
//! same file goes on after the last committed row, and never creates a row
//! twice. With the embedded store, stop the control plane first (the store
//! refuses a second process); with FoundationDB it may run beside the
//! sidecars.
//!
//! An embedded store that holds no links takes the whole file as one bulk
//! load instead (`app/bulk.rs`): sorted by key and written in order, all
//! or nothing, several times faster.
//!
//! A file fetched from a URL is kept in the data directory until an import
//! of it ends, so a run cut short and started again reads the same rows.
//! A refused row is reported as `row,reason` and the import goes on.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::formats::{Format, Rows};
pub use super::rows::{Options, Progress, Summary};
use super::rows::{plan_batch, refuse};
use crate::config::Config;
use crate::db::{Space, StoreResult};
use crate::domain::links::{self, NewLink};
use crate::state::AppState;

/// Rows per transaction unless told: large for the embedded store (a B-tree
/// page rewritten once per transaction serves more rows), and under
/// FoundationDB's 10 MB transaction limit at about 1 KB per link with its
/// index entries.
#[must_use]
pub fn default_batch(config: &Config) -> usize {
    match config.store_backend {
        crate::config::StoreBackend::Redb => 50_000,
        crate::config::StoreBackend::Fdb => 2_000,
    }
}

/// The Meta key of an import's progress: the file's contents, hashed with
/// how it is read (its format and the domain given for its rows).
fn progress_key(file: &Path, options: &Options) -> Result<Vec<u8>> {
    let mut reader =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = reader
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", file.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let how = match (options.format, &options.domain) {
        // What imports made before formats and --domain keep their key.
        (Format::Csv, None) => String::new(),
        (format, domain) => format!("{format:?}/{}", domain.as_deref().unwrap_or("")),
    };
    hasher.update(how.as_bytes());
    Ok(format!("import/{:032x}", hasher.digest128()).into_bytes())
}

/// Whether an import's source is a URL to fetch.
fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Where the file fetched from a URL is kept until its import ends.
fn fetched_path(source: &str, data_dir: &Path) -> PathBuf {
    data_dir.join("import-download").join(format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(source.as_bytes())
    ))
}

/// The file of `source`: itself, or for a URL, what it answers, saved in
/// the data directory. A copy an earlier run left (it did not end) is read
/// again instead, so the rerun resumes on the same rows.
fn fetch(source: &str, data_dir: &Path, progress: &mut Progress) -> Result<PathBuf> {
    if !is_url(source) {
        return Ok(PathBuf::from(source));
    }
    let file = fetched_path(source, data_dir);
    if file.exists() {
        progress.note(&format!(
            "reading {}, fetched from {source} by an import that did not end (delete it to fetch again)",
            file.display()
        ));
        return Ok(file);
    }
    let dir = file.parent().expect("a folder in the data directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    progress.note(&format!("fetching {source}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let response = agent
        .get(source)
        .call()
        .with_context(|| format!("cannot fetch {source}"))?;
    let partial = file.with_extension("part");
    let mut out = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let bytes = std::io::copy(&mut response.into_body().into_reader(), &mut out)
        .with_context(|| format!("cannot read {source}"))?;
    out.sync_all()?;
    std::fs::rename(&partial, &file)
        .with_context(|| format!("cannot rename {}", partial.display()))?;
    progress.note(&format!("fetched {bytes} bytes into {}", file.display()));
    Ok(file)
}

/// What a batch's transaction did, per planned row.
type Written = Vec<(u64, Result<bool, String>)>;

/// A batch being written: the rows refused before it, and its transaction.
type InFlight = (Vec<(u64, String)>, tokio::task::JoinHandle<Result<Written>>);

/// Runs an import, writing refused rows to `report` (in row order) and a
/// progress line per batch to `progress`.
pub async fn run(
    config: Config,
    options: &Options,
    report: &mut (dyn Write + Send),
    progress: &mut Progress,
) -> Result<Summary> {
    let batch = options.batch.unwrap_or_else(|| default_batch(&config));
    anyhow::ensure!(batch >= 1, "--batch is at least 1");
    super::server::prepare_data_dir(&config.data_dir)?;
    let file = fetch(&options.source, &config.data_dir, progress)?;
    let key = progress_key(&file, options)?;
    let backend = super::server::open_backend(&config).context(
        "cannot open the store (the embedded store is one process's: stop the control plane first)",
    )?;
    let (state, bootstrap) = AppState::start(config, backend)?;
    if let Some(token) = &bootstrap.generated_admin_token {
        progress.note(&format!(
            "admin token (shown once, only its hash is stored; `shortline-control admin-token` mints a new one): {token}"
        ));
    }
    let done = {
        let key = key.clone();
        state.backend.read(|txn| {
            Ok(txn
                .get(Space::Meta, &key)?
                .and_then(|v| v.try_into().ok())
                .map_or(0, u64::from_le_bytes))
        })?
    };
    let mut rows = Rows::open(&file, options.format, options.domain.as_deref())?;
    let summary = if super::bulk::applies(&state, options, done)? {
        let started = Instant::now();
        let summary = super::bulk::run(&state, options, &key, &mut rows, report, progress).await?;
        line(progress, &summary, &rows, started)?;
        summary
    } else {
        let resume = Resume { key, done };
        in_batches(&state, options, batch, resume, &mut rows, report, progress).await?
    };
    if is_url(&options.source) && !options.dry_run {
        // The import ended: a rerun fetches the URL again.
        if let Err(e) = std::fs::remove_file(&file) {
            progress.note(&format!("cannot remove {}: {e}", file.display()));
        }
    }
    Ok(summary)
}

/// Where a file's import stands: the Meta key of its progress, and the
/// rows committed by the runs before.
struct Resume {
    key: Vec<u8>,
    done: u64,
}

/// The import in transactions, a batch each, the next batch checked while
/// one is written.
async fn in_batches(
    state: &Arc<AppState>,
    options: &Options,
    batch: usize,
    Resume { key, done }: Resume,
    rows: &mut Rows,
    report: &mut (dyn Write + Send),
    progress: &mut Progress,
) -> Result<Summary> {
    let mut summary = Summary::default();
    let started = Instant::now();
    let mut in_flight: Option<InFlight> = None;
    loop {
        let planned = plan_batch(state, options, batch, done, rows, &mut summary)?;
        if let Some((refused, writing)) = in_flight.take() {
            account(refused, writing.await??, &mut summary, report)?;
            line(progress, &summary, rows, started)?;
        }
        let Some(planned) = planned else {
            break;
        };
        if options.dry_run {
            let planned_ok = planned
                .plans
                .iter()
                .map(|(row, _, _)| (*row, Ok(true)))
                .collect();
            account(planned.refused, planned_ok, &mut summary, report)?;
            line(progress, &summary, rows, started)?;
            continue;
        }
        if planned.plans.is_empty() && planned.last_row <= done {
            continue;
        }
        let refused = planned.refused;
        let batch = (planned.plans, planned.last_row);
        in_flight = Some((
            refused,
            tokio::spawn(write_batch(Arc::clone(state), batch, key.clone())),
        ));
    }
    if summary.rows == 0 || summary.skipped == summary.rows {
        line(progress, &summary, rows, started)?;
    }
    Ok(summary)
}

/// Writes one batch in one transaction, with the import's progress.
async fn write_batch(
    state: Arc<AppState>,
    (plans, last_row): (Vec<(u64, NewLink, u64)>, u64),
    key: Vec<u8>,
) -> Result<Written> {
    let (rows, plans): (Vec<(u64, u64)>, Vec<NewLink>) = plans
        .into_iter()
        .map(|(row, plan, visits)| ((row, visits), plan))
        .unzip();
    let mut plans: Vec<((u64, u64), NewLink)> =
        rows.into_iter().zip(state.number(plans).await?).collect();
    plans.sort_unstable_by(|a, b| match (&a.1.code, &b.1.code) {
        (links::CodePlan::Alias(x), links::CodePlan::Alias(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    });
    let permutation = state.permutation.clone();
    let written = state
        .committer
        .write(move |txn| {
            let mut written = Vec::with_capacity(plans.len());
            for ((row, visits), plan) in &plans {
                let outcome = links::create(txn, plan, &permutation)?;
                if let Ok(created) = &outcome
                    && created.created
                {
                    links::start_counts(txn, &created.link, *visits, plan.now)?;
                }
                written.push((*row, outcome.map(|c| c.created).map_err(|e| e.to_string())));
            }
            txn.set(Space::Meta, &key, &last_row.to_le_bytes())?;
            StoreResult::Ok(written)
        })
        .await?;
    Ok(written)
}

/// Counts a batch's rows and reports its refused ones, in row order.
fn account(
    refused: Vec<(u64, String)>,
    written: Written,
    summary: &mut Summary,
    report: &mut (dyn Write + Send),
) -> Result<()> {
    let mut all: Written = written;
    all.extend(refused.into_iter().map(|(row, reason)| (row, Err(reason))));
    all.sort_by_key(|(row, _)| *row);
    for (row, outcome) in all {
        match outcome {
            Ok(true) => summary.created += 1,
            Ok(false) => summary.existing += 1,
            Err(reason) => {
                summary.refused += 1;
                refuse(report, row, &reason)?;
            }
        }
    }
    Ok(())
}

fn line(progress: &mut Progress, summary: &Summary, rows: &Rows, started: Instant) -> Result<()> {
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    progress.status(
        &format!(
            "rows {}: created {}, existing {}, refused {}, skipped (imported before) {}; {:.0} rows/s; {:.0}% of the file read",
            summary.rows,
            summary.created,
            summary.existing,
            summary.refused,
            summary.skipped,
            summary.rows as f64 / seconds,
            rows.fraction() * 100.0
        ),
        rows.fraction(),
    )
}
