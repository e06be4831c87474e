//! `shortline-control import`: links from a CSV file, loaded straight into
//! the store in large transactions.
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
//! The file has a header row naming its columns, in any order: `url`
//! (required), `code` (an alias kept as it is), `title`, `tags` (separated
//! by `|`), `expires_at` (RFC 3339), `max_clicks`, `redirect` (301, 302,
//! 307 or 308) and `created_at` (RFC 3339; default now). A refused row is
//! reported as `row,reason` and the import goes on.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::db::{Space, StoreResult};
use crate::domain::links::{self, NewLink};
use crate::http::links::{CreateLink, plan_create};
use crate::model::now_unix;
use crate::state::AppState;

/// What to import and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    /// The owner of every imported link (a key name).
    pub owner: String,
    /// Rows per transaction; `None` for the backend's default
    /// ([`default_batch`]).
    pub batch: Option<usize>,
    /// Validate every row and report, without writing anything.
    pub dry_run: bool,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Data rows in the file.
    pub rows: u64,
    /// Rows a run before this one had committed, skipped.
    pub skipped: u64,
    pub created: u64,
    /// Rows whose link already existed (the hash strategy's same target).
    pub existing: u64,
    pub refused: u64,
}

/// The columns a file may have.
#[derive(Debug, Default)]
struct Columns {
    url: usize,
    code: Option<usize>,
    title: Option<usize>,
    tags: Option<usize>,
    expires_at: Option<usize>,
    max_clicks: Option<usize>,
    redirect: Option<usize>,
    created_at: Option<usize>,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> Result<Self> {
        let mut columns = Self::default();
        let mut url = None;
        for (i, name) in header.iter().enumerate() {
            let slot = match name.trim() {
                "url" => {
                    url = Some(i);
                    continue;
                }
                "code" => &mut columns.code,
                "title" => &mut columns.title,
                "tags" => &mut columns.tags,
                "expires_at" => &mut columns.expires_at,
                "max_clicks" => &mut columns.max_clicks,
                "redirect" => &mut columns.redirect,
                "created_at" => &mut columns.created_at,
                other => bail!(
                    "unknown column {other:?}; the columns are url, code, title, tags, expires_at, max_clicks, redirect and created_at"
                ),
            };
            if slot.replace(i).is_some() {
                bail!("column {name:?} appears twice");
            }
        }
        columns.url = url.context("the header has no url column")?;
        Ok(columns)
    }

    /// A row as the create request it stands for, with its creation time.
    fn request(&self, row: &csv::StringRecord, now: i64) -> Result<(CreateLink, i64), String> {
        let field = |column: Option<usize>| {
            column
                .and_then(|i| row.get(i))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let created_at = match field(self.created_at) {
            Some(text) => {
                crate::http::wire::parse_rfc3339("created_at", text).map_err(|e| e.to_string())?
            }
            None => now,
        };
        let number = |name: &str, column| -> Result<Option<u64>, String> {
            field(column)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("{name}: {v:?} is not a whole number"))
                })
                .transpose()
        };
        let request = CreateLink {
            url: field(Some(self.url)).unwrap_or_default().to_owned(),
            alias: field(self.code).map(str::to_owned),
            strategy: None,
            expires_at: field(self.expires_at).map(str::to_owned),
            ttl_seconds: None,
            max_clicks: number("max_clicks", self.max_clicks)?,
            redirect: number("redirect", self.redirect)?
                .map(|r| u16::try_from(r).map_err(|_| format!("redirect: {r} is not a status")))
                .transpose()?,
            forward_query: None,
            tags: field(self.tags).map(|t| t.split('|').map(|s| s.trim().to_owned()).collect()),
            title: field(self.title).map(str::to_owned),
        };
        Ok((request, created_at))
    }
}

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

/// The Meta key of an import's progress: the file's contents, hashed.
fn progress_key(file: &Path) -> Result<Vec<u8>> {
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
    Ok(format!("import/{:032x}", hasher.digest128()).into_bytes())
}

/// One batch, validated: the plans to write and the rows refused, with
/// their row numbers.
struct Planned {
    plans: Vec<(u64, NewLink)>,
    refused: Vec<(u64, String)>,
    last_row: u64,
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
    progress: &mut (dyn Write + Send),
) -> Result<Summary> {
    let batch = options.batch.unwrap_or_else(|| default_batch(&config));
    anyhow::ensure!(batch >= 1, "--batch is at least 1");
    let key = progress_key(&options.file)?;
    super::server::prepare_data_dir(&config.data_dir)?;
    let backend = super::server::open_backend(&config).context(
        "cannot open the store (the embedded store is one process's: stop the control plane first)",
    )?;
    let (state, bootstrap) = AppState::start(config, backend)?;
    if let Some(token) = &bootstrap.generated_admin_token {
        writeln!(
            progress,
            "admin token (shown once, only its hash is stored; `shortline-control admin-token` mints a new one): {token}"
        )?;
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
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&options.file)
        .with_context(|| format!("cannot open {}", options.file.display()))?;
    let columns = Columns::from_header(reader.headers().context("cannot read the header row")?)?;
    let mut summary = Summary::default();
    let started = Instant::now();
    let mut rows = reader.records();
    let mut in_flight: Option<InFlight> = None;
    loop {
        let planned = plan_batch(
            &state,
            &columns,
            options,
            batch,
            done,
            &mut rows,
            &mut summary,
        )?;
        if let Some((refused, writing)) = in_flight.take() {
            account(refused, writing.await??, &mut summary, report)?;
            line(progress, &summary, started)?;
        }
        let Some(planned) = planned else {
            break;
        };
        if options.dry_run {
            let planned_ok = planned
                .plans
                .iter()
                .map(|(row, _)| (*row, Ok(true)))
                .collect();
            account(planned.refused, planned_ok, &mut summary, report)?;
            line(progress, &summary, started)?;
            continue;
        }
        if planned.plans.is_empty() && planned.last_row <= done {
            continue;
        }
        let refused = planned.refused;
        let batch = (planned.plans, planned.last_row);
        in_flight = Some((
            refused,
            tokio::spawn(write_batch(Arc::clone(&state), batch, key.clone())),
        ));
    }
    if summary.rows == 0 || summary.skipped == summary.rows {
        line(progress, &summary, started)?;
    }
    Ok(summary)
}

/// Reads and validates up to a batch of rows; `None` at the end of the
/// file. Rows a run before committed are counted and passed over.
fn plan_batch(
    state: &AppState,
    columns: &Columns,
    options: &Options,
    batch: usize,
    done: u64,
    rows: &mut csv::StringRecordsIter<'_, std::fs::File>,
    summary: &mut Summary,
) -> Result<Option<Planned>> {
    let mut planned = Planned {
        plans: Vec::with_capacity(batch),
        refused: Vec::new(),
        last_row: summary.rows,
    };
    let now = now_unix();
    let mut read_any = false;
    while planned.plans.len() < batch {
        let Some(row) = rows.next() else {
            break;
        };
        read_any = true;
        summary.rows += 1;
        let number = summary.rows;
        planned.last_row = number;
        let row = row.with_context(|| format!("row {number} cannot be read"))?;
        if number <= done {
            summary.skipped += 1;
            continue;
        }
        let plan = columns
            .request(&row, now)
            .and_then(|(request, created_at)| {
                plan_create(state, &options.owner, request, created_at).map_err(|e| e.to_string())
            });
        match plan {
            Ok(plan) => planned.plans.push((number, plan)),
            Err(reason) => planned.refused.push((number, reason)),
        }
    }
    Ok(read_any.then_some(planned))
}

/// Writes one batch in one transaction, with the import's progress.
async fn write_batch(
    state: Arc<AppState>,
    (plans, last_row): (Vec<(u64, NewLink)>, u64),
    key: Vec<u8>,
) -> Result<Written> {
    let (rows, plans): (Vec<u64>, Vec<NewLink>) = plans.into_iter().unzip();
    let plans: Vec<(u64, NewLink)> = rows.into_iter().zip(state.number(plans).await?).collect();
    let permutation = state.permutation.clone();
    let written = state
        .committer
        .write(move |txn| {
            let mut written = Vec::with_capacity(plans.len());
            for (row, plan) in &plans {
                let outcome = links::create(txn, plan, &permutation)?;
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

fn refuse(report: &mut (dyn Write + Send), row: u64, reason: &str) -> Result<()> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([row.to_string().as_str(), reason])?;
    report.write_all(&out.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
    Ok(())
}

fn line(progress: &mut (dyn Write + Send), summary: &Summary, started: Instant) -> Result<()> {
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    writeln!(
        progress,
        "rows {}: created {}, existing {}, refused {}, skipped (imported before) {}; {:.0} rows/s",
        summary.rows,
        summary.created,
        summary.existing,
        summary.refused,
        summary.skipped,
        summary.rows as f64 / seconds
    )?;
    Ok(())
}
