//! The rows of an import file, each checked as the create API checks it,
//! and the report of refused rows. Shared by the import's two paths,
//! transactions ([`super::import`]) and the bulk load ([`super::bulk`]).
//! The files themselves are read by [`super::formats`].

use std::io::Write;

use anyhow::Result;
use rayon::prelude::*;

use super::formats::{Format, Rows};
use crate::domain::links::NewLink;
use crate::http::links::plan_create;
use crate::model::now_unix;
use crate::state::AppState;

/// What to import and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The file, or an `http://` or `https://` URL to fetch it from.
    pub source: String,
    pub format: Format,
    /// The short domain of every row, in place of what the file says.
    pub domain: Option<String>,
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

/// One batch, validated: the plans to write and the rows refused, with
/// their row numbers.
pub struct Planned {
    /// Row number, link, and the visits it starts with.
    pub plans: Vec<(u64, NewLink, u64)>,
    pub refused: Vec<(u64, String)>,
    pub last_row: u64,
}

/// A row checked: the link and the visits it starts with, or why not.
type Checked = Result<(NewLink, u64), String>;

/// Reads and validates up to a batch of rows; `None` at the end of the
/// file. Rows a run before committed are counted and passed over.
pub fn plan_batch(
    state: &AppState,
    options: &Options,
    batch: usize,
    done: u64,
    rows: &mut Rows,
    summary: &mut Summary,
) -> Result<Option<Planned>> {
    let mut planned = Planned {
        plans: Vec::with_capacity(batch),
        refused: Vec::new(),
        last_row: summary.rows,
    };
    let now = now_unix();
    let mut read = Vec::with_capacity(batch);
    let mut read_any = false;
    while read.len() < batch {
        let Some(row) = rows.next() else {
            break;
        };
        read_any = true;
        summary.rows += 1;
        let number = summary.rows;
        planned.last_row = number;
        let row = row?;
        if number <= done {
            summary.skipped += 1;
            continue;
        }
        read.push((number, row));
    }
    // Checking a row (its target above all) costs more than reading it:
    // the cores share it, rows keeping their order.
    let checked: Vec<(u64, Checked)> = read
        .into_par_iter()
        .map(|(number, row)| {
            let plan = row.and_then(|row| {
                let visits = row.visits;
                plan_create(
                    state,
                    None,
                    &options.owner,
                    row.request,
                    row.created_at.unwrap_or(now),
                    true,
                )
                .map(|plan| (plan, visits))
                .map_err(|e| format!("{}{e}", row.label))
            });
            (number, plan)
        })
        .collect();
    for (number, plan) in checked {
        match plan {
            Ok((plan, visits)) => planned.plans.push((number, plan, visits)),
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

/// Where an import tells how far it is: a bar on a terminal, a line per
/// batch otherwise (a log, a pipe, a test).
pub enum Progress {
    Bar(indicatif::ProgressBar),
    Lines(Box<dyn Write + Send>),
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bar(_) => "Progress::Bar",
            Self::Lines(_) => "Progress::Lines",
        })
    }
}

/// The bar's length: per mille of the file.
const BAR_STEPS: u64 = 1000;

impl Progress {
    /// A bar when stderr is a terminal, lines on it otherwise.
    #[must_use]
    pub fn stderr() -> Self {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Self::Lines(Box::new(std::io::stderr()));
        }
        let bar = indicatif::ProgressBar::new(BAR_STEPS);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {percent:>3}% {wide_msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(250));
        Self::Bar(bar)
    }

    /// Where the import stands; `fraction` of the file is read.
    pub fn status(&mut self, text: &str, fraction: f64) -> Result<()> {
        match self {
            Self::Bar(bar) => {
                bar.set_position((fraction * BAR_STEPS as f64) as u64);
                bar.set_message(text.to_owned());
            }
            Self::Lines(out) => writeln!(out, "{text}")?,
        }
        Ok(())
    }

    /// A line to keep (above the bar on a terminal).
    pub fn note(&mut self, text: &str) {
        match self {
            Self::Bar(bar) => bar.println(text),
            Self::Lines(out) => {
                // Progress is advice: a closed stderr does not stop an import.
                let _ = writeln!(out, "{text}");
            }
        }
    }

    /// Leaves the bar with its last message.
    pub fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.abandon();
            // The bar leaves the cursor at the end of its line; what is
            // printed next starts on a line of its own.
            eprintln!();
        }
    }
}
