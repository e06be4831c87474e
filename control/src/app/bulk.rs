//! The bulk path of `shortline-control import`, into an embedded store that
//! holds no links yet.
//!
//! Every row is checked as the batch path checks it (the create API's
//! validator, the threat list, alias rules, the blocklist and retired
//! codes). The links are then sorted on disk by code, and their index
//! entries by space and key, and written in that order through
//! [`Backend::load`](crate::db::Backend::load): B-tree pages filled from
//! left to right, not rewritten at random as a transaction per batch
//! does. Sorting by code also finds the rows that share a code: the first
//! row takes it, a later alias is refused as taken, a later row with the
//! hash strategy's same link is counted as existing, and a later generated
//! code is made again by the create transaction, inside the load.
//!
//! A load is all or nothing: an import cut short leaves the store without
//! links, and run again it starts over. The sort files live in
//! `data_dir/import-sort/` while the import runs (about the size of the
//! links themselves) and are removed when it ends.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use extsort::{ExternalSorter, Sortable};
use rayon::prelude::*;

use super::formats::Rows;
use super::rows::{Options, Progress, Summary, plan_batch, refuse};
use crate::db::{Load, Space, StoreError, StoreResult};
use crate::domain::links::{self, CodePlan, Loaded, NewLink};
use crate::model::{LinkDoc, Strategy};
use crate::state::AppState;

/// Rows read and checked at a time.
const BULK_BATCH: usize = 100_000;

/// Rows planned per read view, on each core.
const PLAN_CHUNK: usize = 10_000;

/// Items sorted in memory before a sorted run is written to disk.
const RUN_ITEMS: usize = 1_000_000;

/// How a pending link's code was chosen: an alias, or a strategy's.
const ALIAS: u8 = 0;
const STRATEGIES: [Strategy; 4] = [
    Strategy::Counter,
    Strategy::Random,
    Strategy::Hash,
    Strategy::Uuid,
];

fn plan_byte(plan: &CodePlan) -> (u8, u8) {
    match plan {
        CodePlan::Alias(_) => (ALIAS, 0),
        CodePlan::Generated { strategy, length } => {
            let index = STRATEGIES
                .iter()
                .position(|s| s == strategy)
                .expect("every strategy is listed");
            (
                u8::try_from(index + 1).expect("few strategies"),
                u8::try_from(*length).unwrap_or(u8::MAX),
            )
        }
    }
}

/// A link waiting in the sort by code.
struct Pending {
    code: Vec<u8>,
    row: u64,
    /// Visits the link starts with.
    visits: u64,
    /// [`ALIAS`], or 1 + the strategy's index in [`STRATEGIES`].
    plan: u8,
    length: u8,
    /// The link document as the store keeps it.
    doc: Vec<u8>,
}

impl Pending {
    fn cmp(a: &Self, b: &Self) -> Ordering {
        (&a.code, a.row).cmp(&(&b.code, b.row))
    }

    fn is_hash(&self) -> bool {
        usize::from(self.plan)
            .checked_sub(1)
            .and_then(|i| STRATEGIES.get(i))
            == Some(&Strategy::Hash)
    }

    /// The create to run again for a generated code another row took.
    fn again(&self) -> StoreResult<NewLink> {
        let strategy = STRATEGIES[usize::from(self.plan - 1)];
        let doc = LinkDoc::decode(&self.doc)?;
        Ok(NewLink::from_doc(
            doc,
            CodePlan::Generated {
                strategy,
                length: usize::from(self.length),
            },
        ))
    }
}

/// A row planned for the load.
enum Planned {
    Link(Pending, Vec<Entry>),
    Refused(u64, String),
    Later(u64, Box<NewLink>, u64),
}

impl Planned {
    fn new(row: u64, visits: u64, plan: &NewLink, loaded: Loaded) -> StoreResult<Self> {
        Ok(match loaded {
            Loaded::Link(mut doc) => {
                let counts = links::starting_counts(&mut doc, visits);
                let index = links::index_entries(&doc, true)
                    .into_iter()
                    .chain(counts)
                    .map(|(space, key, value)| Entry {
                        space: space.index(),
                        key,
                        value,
                        row,
                    })
                    .collect();
                let (kind, length) = plan_byte(&plan.code);
                let link = Pending {
                    code: doc.code.as_bytes().to_vec(),
                    row,
                    visits,
                    plan: kind,
                    length,
                    doc: doc.encode(),
                };
                Self::Link(link, index)
            }
            Loaded::Refused(reason) => Self::Refused(row, reason.to_string()),
            Loaded::Later => Self::Later(row, Box::new(plan.clone()), visits),
        })
    }
}

/// An index entry waiting in the sort by space and key.
struct Entry {
    /// The space's index in [`Space::ALL`].
    space: u8,
    key: Vec<u8>,
    value: Vec<u8>,
    row: u64,
}

impl Entry {
    fn cmp(a: &Self, b: &Self) -> Ordering {
        (a.space, &a.key, a.row).cmp(&(b.space, &b.key, b.row))
    }
}

fn write_part<W: Write>(out: &mut W, part: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(part.len()).map_err(std::io::Error::other)?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(part)
}

fn read_part<R: Read>(input: &mut R) -> std::io::Result<Vec<u8>> {
    let mut len = [0; 4];
    input.read_exact(&mut len)?;
    let mut part = vec![0; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut part)?;
    Ok(part)
}

fn read_u64<R: Read>(input: &mut R) -> std::io::Result<u64> {
    let mut bytes = [0; 8];
    input.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

impl Sortable for Pending {
    fn encode<W: Write>(&self, out: &mut W) -> std::io::Result<()> {
        out.write_all(&self.row.to_le_bytes())?;
        out.write_all(&self.visits.to_le_bytes())?;
        out.write_all(&[self.plan, self.length])?;
        write_part(out, &self.code)?;
        write_part(out, &self.doc)
    }

    fn decode<R: Read>(input: &mut R) -> std::io::Result<Self> {
        let row = read_u64(input)?;
        let visits = read_u64(input)?;
        let mut plan = [0; 2];
        input.read_exact(&mut plan)?;
        Ok(Self {
            row,
            visits,
            plan: plan[0],
            length: plan[1],
            code: read_part(input)?,
            doc: read_part(input)?,
        })
    }
}

impl Sortable for Entry {
    fn encode<W: Write>(&self, out: &mut W) -> std::io::Result<()> {
        out.write_all(&self.row.to_le_bytes())?;
        out.write_all(&[self.space])?;
        write_part(out, &self.key)?;
        write_part(out, &self.value)
    }

    fn decode<R: Read>(input: &mut R) -> std::io::Result<Self> {
        let row = read_u64(input)?;
        let mut space = [0; 1];
        input.read_exact(&mut space)?;
        Ok(Self {
            row,
            space: space[0],
            key: read_part(input)?,
            value: read_part(input)?,
        })
    }
}

fn sort_failed(error: std::io::Error) -> StoreError {
    StoreError::io("cannot read the import's sort files", error)
}

/// Whether an import takes the bulk path: a real import, of a file not
/// begun before, into an embedded store without links.
pub fn applies(state: &AppState, options: &Options, done: u64) -> Result<bool> {
    if options.dry_run
        || done > 0
        || state.config.store_backend != crate::config::StoreBackend::Redb
    {
        return Ok(false);
    }
    let empty = state
        .backend
        .read(|view| Ok(view.range(Space::Links, b"", &[0xff; 65], 1)?.is_empty()))?;
    Ok(empty)
}

/// What the load decided per row, besides the links it wrote.
#[derive(Default)]
struct Outcomes {
    /// Rows refused, with why.
    refused: Vec<(u64, String)>,
    /// Rows whose link was another row's (the hash strategy's same link).
    existing: u64,
    /// Rows written by the load.
    created: u64,
}

/// Runs a bulk import. `rows` is the file's records after its header.
pub async fn run(
    state: &Arc<AppState>,
    options: &Options,
    key: &[u8],
    rows: &mut Rows,
    report: &mut (dyn Write + Send),
    progress: &mut Progress,
) -> Result<Summary> {
    let started = Instant::now();
    let dir = shortline_common::layout::DataDir::new(&state.config.data_dir).import_sort();
    // What an import killed before left here is of no use: its load was
    // undone, and this one starts over.
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let sorter = |dir: PathBuf| {
        ExternalSorter::new()
            .with_segment_size(RUN_ITEMS)
            .with_sort_dir(dir)
            .with_parallel_sort()
    };
    let mut links = sorter(dir.clone()).pushed_by(Pending::cmp);
    let mut entries = sorter(dir.clone()).pushed_by(Entry::cmp);
    let mut summary = Summary::default();
    // Rows refused while being checked; the load adds its own.
    let mut checked: Vec<(u64, String)> = Vec::new();
    let mut later: Vec<(u64, NewLink, u64)> = Vec::new();
    let sort_error = |e| anyhow::anyhow!("cannot write the import's sort files: {e}");
    while let Some(planned) = plan_batch(state, options, BULK_BATCH, 0, rows, &mut summary)? {
        checked.extend(planned.refused);
        let (numbers, plans): (Vec<(u64, u64)>, Vec<NewLink>) = planned
            .plans
            .into_iter()
            .map(|(row, plan, visits)| ((row, visits), plan))
            .unzip();
        let plans: Vec<((u64, u64), NewLink)> = numbers
            .into_iter()
            .zip(state.number(plans).await?)
            .collect();
        // Planning, encoding and indexing take most of a row's time: the
        // cores share them, a read view per chunk.
        let planned: Vec<Planned> = plans
            .into_par_iter()
            .chunks(PLAN_CHUNK)
            .map(|chunk| {
                state.backend.read(|view| {
                    chunk
                        .iter()
                        .map(|((row, visits), plan)| {
                            Planned::new(
                                *row,
                                *visits,
                                plan,
                                links::plan_load(view, plan, &state.permutation)?,
                            )
                        })
                        .collect::<StoreResult<Vec<_>>>()
                })
            })
            .collect::<StoreResult<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        for planned in planned {
            match planned {
                Planned::Link(link, index) => {
                    for entry in index {
                        entries.push(entry).map_err(sort_error)?;
                    }
                    links.push(link).map_err(sort_error)?;
                }
                Planned::Refused(row, reason) => checked.push((row, reason)),
                Planned::Later(row, plan, visits) => later.push((row, *plan, visits)),
            }
        }
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        progress.status(
            &format!(
                "rows {}: read and checked; {:.0} rows/s; {:.0}% of the file read",
                summary.rows,
                summary.rows as f64 / seconds,
                rows.fraction() * 100.0
            ),
            rows.fraction(),
        )?;
    }
    progress.status(
        &format!(
            "rows {}: checked; sorting by code and writing to the store in order",
            summary.rows
        ),
        1.0,
    )?;
    let mut links = links.done().map_err(sort_error)?;
    let mut entries = Some(entries);
    let rows_total = summary.rows;
    let mut outcomes = Outcomes::default();
    let mut load = |load: &mut dyn Load| -> StoreResult<()> {
        // Rows whose index entries are not written: another row has their code.
        let mut lost: HashSet<u64> = HashSet::new();
        let mut again = Vec::new();
        let mut holder: Option<Pending> = None;
        for link in links.by_ref() {
            let link = link.map_err(sort_failed)?;
            match &holder {
                Some(first) if first.code == link.code => {
                    lost.insert(link.row);
                    if link.plan == ALIAS {
                        let alias = LinkDoc::decode(&link.doc)?.code;
                        outcomes
                            .refused
                            .push((link.row, links::alias_taken(&alias).to_string()));
                    } else if link.is_hash() && first.is_hash() && same_link(&first.doc, &link.doc)?
                    {
                        outcomes.existing += 1;
                    } else {
                        again.push((link.row, link.again()?, link.visits));
                    }
                }
                _ => {
                    load.put(Space::Links, &link.code, &link.doc)?;
                    outcomes.created += 1;
                    holder = Some(link);
                }
            }
        }
        let entries = entries
            .take()
            .expect("a load runs once")
            .done()
            .map_err(sort_failed)?;
        for entry in entries {
            let entry = entry.map_err(sort_failed)?;
            if !lost.contains(&entry.row) {
                load.put(
                    Space::ALL[usize::from(entry.space)],
                    &entry.key,
                    &entry.value,
                )?;
            }
        }
        // The rows that need a code made in a transaction, as the API
        // makes it, with the import's progress.
        again.extend(later.iter().cloned());
        load.write(&mut |txn| {
            for (row, plan, visits) in &again {
                match links::create(txn, plan, &state.permutation)? {
                    Ok(created) if created.created => {
                        links::start_counts(txn, &created.link, *visits, plan.now)?;
                        outcomes.created += 1;
                    }
                    Ok(_) => outcomes.existing += 1,
                    Err(refusal) => outcomes.refused.push((*row, refusal.to_string())),
                }
            }
            txn.set(Space::Meta, key, &rows_total.to_le_bytes())
        })
    };
    let loaded = tokio::task::block_in_place(|| state.backend.load(&mut load));
    let removed = std::fs::remove_dir_all(&dir);
    loaded?;
    if let Err(e) = removed {
        tracing::warn!(error = %e, path = %dir.display(), "cannot remove the import's sort files");
    }
    outcomes.refused.extend(checked);
    outcomes.refused.sort_by_key(|(row, _)| *row);
    for (row, reason) in &outcomes.refused {
        refuse(report, *row, reason)?;
    }
    summary.created = outcomes.created;
    summary.existing = outcomes.existing;
    summary.refused = outcomes.refused.len() as u64;
    Ok(summary)
}

/// Whether two planned links are the same owner's same target.
fn same_link(a: &[u8], b: &[u8]) -> StoreResult<bool> {
    let (a, b) = (LinkDoc::decode(a)?, LinkDoc::decode(b)?);
    Ok(a.owner == b.owner && a.url == b.url)
}
