//! The rows of an import file: its columns, each row read and checked as
//! the create API checks it, and the report of refused rows. Shared by the
//! import's two paths, transactions ([`super::import`]) and the bulk load
//! ([`super::bulk`]).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::domain::links::NewLink;
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
    /// ([`super::import::default_batch`]).
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
pub struct Columns {
    url: usize,
    code: Option<usize>,
    domain: Option<usize>,
    title: Option<usize>,
    tags: Option<usize>,
    expires_at: Option<usize>,
    max_clicks: Option<usize>,
    redirect: Option<usize>,
    created_at: Option<usize>,
}

impl Columns {
    /// The columns a header row names.
    pub fn from_header(header: &csv::StringRecord) -> Result<Self> {
        let mut columns = Self::default();
        let mut url = None;
        for (i, name) in header.iter().enumerate() {
            let slot = match name.trim() {
                "url" => {
                    url = Some(i);
                    continue;
                }
                "code" => &mut columns.code,
                "domain" => &mut columns.domain,
                "title" => &mut columns.title,
                "tags" => &mut columns.tags,
                "expires_at" => &mut columns.expires_at,
                "max_clicks" => &mut columns.max_clicks,
                "redirect" => &mut columns.redirect,
                "created_at" => &mut columns.created_at,
                other => bail!(
                    "unknown column {other:?}; the columns are url, code, domain, title, tags, expires_at, max_clicks, redirect and created_at"
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
            domain: field(self.domain).map(str::to_owned),
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

/// One batch, validated: the plans to write and the rows refused, with
/// their row numbers.
pub struct Planned {
    pub plans: Vec<(u64, NewLink)>,
    pub refused: Vec<(u64, String)>,
    pub last_row: u64,
}

/// Reads and validates up to a batch of rows; `None` at the end of the
/// file. Rows a run before committed are counted and passed over.
pub fn plan_batch(
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
                plan_create(state, None, &options.owner, request, created_at)
                    .map_err(|e| e.to_string())
            });
        match plan {
            Ok(plan) => planned.plans.push((number, plan)),
            Err(reason) => planned.refused.push((number, reason)),
        }
    }
    Ok(read_any.then_some(planned))
}

/// Reports a refused row as `row,reason` (CSV).
pub fn refuse(report: &mut (dyn Write + Send), row: u64, reason: &str) -> Result<()> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([row.to_string().as_str(), reason])?;
    report.write_all(&out.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
    Ok(())
}
