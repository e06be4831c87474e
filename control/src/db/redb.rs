//! The embedded backend: one redb database file and its redo log in the
//! data directory.
//!
//! redb is pure Rust, ACID and crash-safe (copy-on-write B-trees with a
//! checksummed commit slot). It allows one write transaction at a time, which
//! suits group commit: the committer runs many requests in one transaction.
//!
//! A durable redb commit writes every B-tree page the transaction touched
//! and syncs them; with random codes that is two or three scattered 4 KiB
//! pages per created link. So a write transaction is made durable another
//! way: its effect (every insert and removal, with final values) is appended
//! to the redo log ([`super::wal`], `data_dir/store-log/`) and synced, one
//! short sequential write, and then committed to redb without a sync
//! ([`Durability::None`]), which readers see at once. A **checkpoint**
//! (every `store_checkpoint_ms`, or when the log's segment passes
//! [`CHECKPOINT_BYTES`]) starts a new log segment and makes one durable redb
//! commit, which persists every commit before it and records the segment it
//! covers ([`keys::STORE_LOG_THROUGH`]); covered segments are then deleted.
//! At start-up, redb comes back at its last durable commit and the log
//! segments after the mark are replayed in order. Replaying a record sets
//! keys to the values it carries, so a suffix of the log replayed over any
//! earlier state ends at the same state.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};
use shortline_store::Seq;

use super::wal::Wal;
use super::{Backend, Pairs, ReadTxn, Space, StoreError, StoreResult, Txn, View, keys};

/// A log segment this large is checkpointed without waiting for the interval.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// The redo log's segment files: `store-<n>.wal`.
const LOG_KIND: &str = "store";

fn definition(space: Space) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(space.name())
}

fn io<E: Into<redb::Error>>(error: E) -> StoreError {
    StoreError::io("redb", error.into())
}

/// The embedded store.
#[derive(Debug)]
pub struct RedbBackend {
    db: Database,
    path: PathBuf,
    log: Mutex<RedoLog>,
    checkpoint_interval: Duration,
}

/// The redo log and what the writers know about it.
#[derive(Debug)]
struct RedoLog {
    wal: Wal,
    checkpointed_at: Instant,
    /// Set when an append or sync failed (the log may end in a partial
    /// record, and the page cache cannot be trusted), or when a record was
    /// logged but its redb commit failed (the log holds a write the store
    /// lacks): nothing more is written until a restart replays the log.
    failed: Option<String>,
}

/// One change a write transaction made, as the redo log keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Insert = 1,
    Remove = 2,
    RemoveRange = 3,
}

/// Appends one change to a redo record: `op space len:u32 a len:u32 b`,
/// where `a` and `b` are key and value, the key alone, or start and end.
fn encode_op(record: &mut Vec<u8>, op: Op, space: Space, a: &[u8], b: &[u8]) {
    record.push(op as u8);
    record.push(space.index());
    for part in [a, b] {
        record.extend_from_slice(
            &u32::try_from(part.len())
                .expect("keys and values under 4 GiB")
                .to_le_bytes(),
        );
        record.extend_from_slice(part);
    }
}

/// One change of a redo record, as [`encode_op`] wrote it.
struct Change<'r> {
    op: u8,
    /// The space's index in [`Space::ALL`].
    space: u8,
    a: &'r [u8],
    b: &'r [u8],
}

/// The first change of a record, and what follows it; `None` when the
/// record is empty or does not decode.
fn next_change(record: &[u8]) -> Option<(Change<'_>, &[u8])> {
    fn part<'r>(record: &mut &'r [u8]) -> Option<&'r [u8]> {
        let len = u32::from_le_bytes(record.get(..4)?.try_into().ok()?) as usize;
        let (part, rest) = record.get(4..)?.split_at_checked(len)?;
        *record = rest;
        Some(part)
    }
    let (&op, rest) = record.split_first()?;
    let (&space, mut rest) = rest.split_first()?;
    let a = part(&mut rest)?;
    let b = part(&mut rest)?;
    Some((Change { op, space, a, b }, rest))
}

/// Applies a redo record to a write transaction.
fn apply_record(txn: &WriteTransaction, mut record: &[u8]) -> StoreResult<()> {
    let corrupt = || StoreError::Corrupt("a store log record does not decode".into());
    while !record.is_empty() {
        let (Change { op, space, a, b }, rest) = next_change(record).ok_or_else(corrupt)?;
        record = rest;
        let space = *Space::ALL.get(usize::from(space)).ok_or_else(corrupt)?;
        let mut table = txn.open_table(definition(space)).map_err(io)?;
        match op {
            x if x == Op::Insert as u8 => {
                table.insert(a, b).map_err(io)?;
            }
            x if x == Op::Remove as u8 => {
                table.remove(a).map_err(io)?;
            }
            x if x == Op::RemoveRange as u8 => {
                table
                    .retain_in::<&[u8], _>(a..b, |_, _| false)
                    .map_err(io)?;
            }
            _ => return Err(corrupt()),
        }
    }
    Ok(())
}

impl RedbBackend {
    /// Opens (or creates) `shortline.redb` in `data_dir`, replays its redo
    /// log, and checkpoints every second.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, Duration::from_secs(1))
    }

    /// Opens the store as [`RedbBackend::open`] does, checkpointing every
    /// `checkpoint_interval`.
    pub fn open_with(data_dir: &Path, checkpoint_interval: Duration) -> Result<Self, StoreError> {
        let layout = shortline_common::layout::DataDir::new(data_dir);
        let path = layout.store_file();
        let db = Database::create(&path).map_err(|e| {
            StoreError::io(format!("cannot open the store at {}", path.display()), e)
        })?;
        let txn = db.begin_write().map_err(io)?;
        for space in Space::ALL {
            txn.open_table(definition(space)).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        let through = {
            let read = RedbRead {
                txn: db.begin_read().map_err(io)?,
            };
            match read.get(Space::Meta, keys::STORE_LOG_THROUGH)? {
                Some(bytes) => decode_u64(&bytes)?,
                None => 0,
            }
        };
        let log_dir = layout.store_log();
        let (wal, replay) = Wal::open(&log_dir, LOG_KIND, through).map_err(|e| {
            StoreError::io(
                format!("cannot open the store's redo log in {}", log_dir.display()),
                e,
            )
        })?;
        let backend = Self {
            db,
            path,
            log: Mutex::new(RedoLog {
                wal,
                checkpointed_at: Instant::now(),
                failed: None,
            }),
            checkpoint_interval,
        };
        if !replay.is_empty() {
            let mut txn = backend.db.begin_write().map_err(io)?;
            txn.set_durability(Durability::None).map_err(io)?;
            for (segment, record) in &replay {
                apply_record(&txn, record).map_err(|e| match e {
                    StoreError::Corrupt(what) => StoreError::Corrupt(format!(
                        "{what}: segment {segment} of {}",
                        log_dir.display()
                    )),
                    other => other,
                })?;
            }
            txn.commit().map_err(io)?;
            metrics::counter!("control_store_log_replayed_total").increment(replay.len() as u64);
            tracing::info!(transactions = replay.len(), "replayed the store's redo log");
        }
        // Every start begins from a checkpoint: what was replayed is then in
        // the store file, and the log holds only what this process writes.
        backend.checkpoint(&mut backend.lock_log())?;
        Ok(backend)
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_log(&self) -> MutexGuard<'_, RedoLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every commit so far durable in the store file and deletes the
    /// log segments that held them.
    fn checkpoint(&self, log: &mut RedoLog) -> StoreResult<()> {
        let started = Instant::now();
        let finished = log
            .wal
            .rotate()
            .map_err(|e| StoreError::io("cannot start a store log segment", e))?;
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut meta = txn.open_table(definition(Space::Meta)).map_err(io)?;
            meta.insert(keys::STORE_LOG_THROUGH, &finished.to_le_bytes()[..])
                .map_err(io)?;
        }
        // Immediate durability: this commit persists every one before it.
        txn.commit().map_err(io)?;
        log.checkpointed_at = Instant::now();
        if let Err(e) = log.wal.prune(finished) {
            tracing::warn!(error = %e, "cannot delete checkpointed store log segments");
        }
        metrics::counter!("control_store_checkpoints_total").increment(1);
        metrics::histogram!("control_store_checkpoint_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Checkpoints when the interval has passed or the segment is large.
    fn checkpoint_if_due(&self, log: &mut RedoLog) {
        if log.checkpointed_at.elapsed() < self.checkpoint_interval
            && log.wal.segment_bytes() < CHECKPOINT_BYTES
        {
            return;
        }
        if let Err(e) = self.checkpoint(log) {
            // The log still holds everything; the next write tries again.
            metrics::counter!("control_store_checkpoint_errors_total").increment(1);
            tracing::warn!(error = %e, "store checkpoint failed");
        }
    }

    /// Logs `record` (synced), then commits `txn` without a sync.
    fn commit_logged(
        &self,
        log: &mut RedoLog,
        txn: WriteTransaction,
        record: &[u8],
    ) -> StoreResult<()> {
        if !record.is_empty()
            && let Err(e) = log.wal.append(record)
        {
            // A failed append or sync may leave part of a record behind,
            // and after a failed sync the page cache cannot be trusted:
            // stop writing until a restart reads the log back.
            let message = format!("the store's redo log failed: {e}");
            log.failed = Some(message.clone());
            metrics::counter!("control_store_log_errors_total").increment(1);
            return Err(StoreError::io(message, e));
        }
        if let Err(e) = txn.commit() {
            if !record.is_empty() {
                log.failed = Some(format!("a logged write failed to commit: {e}"));
            }
            return Err(io(e));
        }
        self.checkpoint_if_due(log);
        Ok(())
    }
}

impl Drop for RedbBackend {
    fn drop(&mut self) {
        // A clean stop leaves nothing to replay.
        let mut log = self.lock_log();
        if log.failed.is_none()
            && log.wal.segment_bytes() > 0
            && let Err(e) = self.checkpoint(&mut log)
        {
            tracing::warn!(error = %e, "store checkpoint at close failed; the log is replayed at the next start");
        }
    }
}

type BytesTable<'t> = Table<'t, &'static [u8], &'static [u8]>;

struct RedbTxn<'t> {
    txn: &'t WriteTransaction,
    /// Tables opened so far: redb opens a table once per transaction.
    tables: RefCell<Vec<(Space, BytesTable<'t>)>>,
    seq: Option<u64>,
    logged: bool,
    /// The redo record: every change so far, in order.
    record: Vec<u8>,
}

impl<'t> RedbTxn<'t> {
    fn with_table<R>(
        &self,
        space: Space,
        body: impl FnOnce(&mut BytesTable<'t>) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let mut tables = self.tables.borrow_mut();
        let at = match tables.iter().position(|(s, _)| *s == space) {
            Some(at) => at,
            None => {
                let table = self.txn.open_table(definition(space)).map_err(io)?;
                tables.push((space, table));
                tables.len() - 1
            }
        };
        body(&mut tables[at].1)
    }

    fn current_seq(&mut self) -> StoreResult<u64> {
        if let Some(seq) = self.seq {
            return Ok(seq);
        }
        let seq = match self.get(Space::Meta, keys::SEQ)? {
            Some(bytes) => decode_u64(&bytes)?,
            None => 0,
        };
        self.seq = Some(seq);
        Ok(seq)
    }
}

fn decode_u64(bytes: &[u8]) -> StoreResult<u64> {
    Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| {
        StoreError::Corrupt("sequence is not 8 bytes".into())
    })?))
}

impl ReadTxn for RedbTxn<'_> {
    fn get(&self, space: Space, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.with_table(space, |table| {
            Ok(table.get(key).map_err(io)?.map(|v| v.value().to_vec()))
        })
    }

    fn range(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> StoreResult<Pairs> {
        self.with_table(space, |table| collect_range(table, start, end, limit))
    }
}

impl Txn for RedbTxn<'_> {
    fn set(&mut self, space: Space, key: &[u8], value: &[u8]) -> StoreResult<()> {
        encode_op(&mut self.record, Op::Insert, space, key, value);
        self.with_table(space, |table| {
            table.insert(key, value).map_err(io)?;
            Ok(())
        })
    }

    fn clear(&mut self, space: Space, key: &[u8]) -> StoreResult<()> {
        encode_op(&mut self.record, Op::Remove, space, key, &[]);
        self.with_table(space, |table| {
            table.remove(key).map_err(io)?;
            Ok(())
        })
    }

    fn add(&mut self, space: Space, key: &[u8], delta: i64) -> StoreResult<()> {
        let value = self.with_table(space, |table| {
            // One descent for a new counter (most of them, when clicks are
            // spread thin): write the delta, and only if a value was there
            // write the sum over it, in a leaf this transaction already owns.
            let delta_bytes = delta.to_le_bytes();
            let previous = table
                .insert(key, &delta_bytes[..])
                .map_err(io)?
                .map(|v| v.value().to_vec());
            let Some(previous) = previous else {
                return Ok(delta_bytes);
            };
            let current = i64::from_le_bytes(
                previous
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("counter is not 8 bytes".into()))?,
            );
            let value = current.wrapping_add(delta).to_le_bytes();
            table.insert(key, &value[..]).map_err(io)?;
            Ok(value)
        })?;
        // The log keeps the sum, not the delta: replaying it twice is harmless.
        encode_op(&mut self.record, Op::Insert, space, key, &value);
        Ok(())
    }

    fn log_change(&mut self, change: &[u8]) -> StoreResult<()> {
        let seq = self.current_seq()? + 1;
        self.seq = Some(seq);
        self.logged = true;
        self.set(Space::Changes, &keys::change(seq), change)
    }
}

fn collect_range<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> StoreResult<Pairs> {
    if start >= end {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in table.range::<&[u8]>(start..end).map_err(io)? {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item.map_err(io)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

struct RedbRead {
    txn: ReadTransaction,
}

impl RedbRead {
    fn table(&self, space: Space) -> StoreResult<ReadOnlyTable<&'static [u8], &'static [u8]>> {
        self.txn.open_table(definition(space)).map_err(io)
    }
}

impl ReadTxn for RedbRead {
    fn get(&self, space: Space, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .table(space)?
            .get(key)
            .map_err(io)?
            .map(|v| v.value().to_vec()))
    }

    fn range(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> StoreResult<Pairs> {
        collect_range(&self.table(space)?, start, end, limit)
    }
}

impl View for RedbRead {
    fn last_seq(&self) -> StoreResult<Seq> {
        match self.get(Space::Meta, keys::SEQ)? {
            Some(bytes) => Ok(Seq(decode_u64(&bytes)?)),
            None => Ok(Seq(0)),
        }
    }

    fn changes_after(&self, after: Seq, limit: usize) -> StoreResult<Vec<(Seq, Vec<u8>)>> {
        let start = keys::change(after.0.saturating_add(1));
        let pairs = collect_range(&self.table(Space::Changes)?, &start, &[0xff; 9], limit)?;
        pairs
            .into_iter()
            .map(|(k, v)| Ok((Seq(decode_seq_key(&k)?), v)))
            .collect()
    }

    fn pruned_through(&self) -> StoreResult<Seq> {
        match self.get(Space::Meta, keys::PRUNED)? {
            Some(bytes) => Ok(Seq(decode_u64(&bytes)?)),
            None => Ok(Seq(0)),
        }
    }

    fn change_behind(&self, seq: Seq, back: u64) -> StoreResult<Option<Seq>> {
        let table = self.table(Space::Changes)?;
        let through = keys::change(seq.0);
        let Some(found) = table
            .range::<&[u8]>(..=&through[..])
            .map_err(io)?
            .rev()
            .nth(usize::try_from(back).unwrap_or(usize::MAX))
        else {
            return Ok(None);
        };
        let (key, _) = found.map_err(io)?;
        Ok(Some(Seq(decode_seq_key(key.value())?)))
    }

    fn first_change(&self) -> StoreResult<Option<Seq>> {
        let table = self.table(Space::Changes)?;
        match table.first().map_err(io)? {
            Some((k, _)) => Ok(Some(Seq(decode_seq_key(k.value())?))),
            None => Ok(None),
        }
    }
}

fn decode_seq_key(key: &[u8]) -> StoreResult<u64> {
    Ok(u64::from_be_bytes(key.try_into().map_err(|_| {
        StoreError::Corrupt("change key is not 8 bytes".into())
    })?))
}

impl RedbBackend {
    /// Begins a write transaction committed without a sync, unless the log
    /// has failed. The caller holds the log, so records are appended in
    /// commit order.
    fn begin(&self, log: &RedoLog) -> StoreResult<WriteTransaction> {
        if let Some(failed) = &log.failed {
            return Err(StoreError::unavailable(
                "the embedded store stopped writing; restart control to replay its log",
                failed.clone(),
            ));
        }
        let mut txn = self.db.begin_write().map_err(io)?;
        txn.set_durability(Durability::None).map_err(io)?;
        Ok(txn)
    }
}

/// Runs `body` in `txn` and stores the change sequence it reached; returns
/// that sequence and the transaction's redo record.
fn run_body(
    txn: &WriteTransaction,
    body: &mut dyn FnMut(&mut dyn Txn) -> StoreResult<()>,
) -> StoreResult<(u64, Vec<u8>)> {
    let mut handle = RedbTxn {
        txn,
        tables: RefCell::new(Vec::new()),
        seq: None,
        logged: false,
        record: Vec::new(),
    };
    body(&mut handle)?;
    let seq = handle.current_seq()?;
    if handle.logged {
        handle.set(Space::Meta, keys::SEQ, &seq.to_le_bytes())?;
    }
    Ok((seq, std::mem::take(&mut handle.record)))
}

/// Bytes of puts a bulk load gathers before writing them in one transaction.
const LOAD_PAGE_BYTES: usize = 4 << 20;

/// A bulk load into the embedded store. Puts are gathered and written a
/// page at a time, each page one transaction committed without a sync:
/// in key order, each one fills B-tree pages from left to right, several
/// times faster than the same keys at random. A thread of its own writes
/// each page while the next is gathered (the caller's sort merge and the
/// B-tree inserts take a core each). Only the load's last commit is
/// durable, and redb comes back at its last durable commit after a crash,
/// so a load cut short is undone whole; a load that fails is rolled back
/// to a savepoint taken before it.
struct RedbLoad<'b> {
    db: &'b Database,
    /// Puts not yet handed to the writer, encoded as redo log inserts.
    page: Vec<u8>,
    /// The last key put in each space (by its index in [`Space::ALL`]).
    last: Vec<Option<Vec<u8>>>,
    /// Keys put so far.
    count: u64,
    /// To the writer thread, and its answers (an error ends it).
    pages: std::sync::mpsc::SyncSender<LoadPage>,
    written: std::sync::mpsc::Receiver<StoreResult<()>>,
}

/// What the writer thread of a load is handed.
enum LoadPage {
    Puts(Vec<u8>),
    /// Answer once every page before this one is written.
    Sync,
}

/// Begins a transaction of a bulk load: committed without a sync.
fn begin_load(db: &Database) -> StoreResult<WriteTransaction> {
    let mut txn = db.begin_write().map_err(io)?;
    txn.set_durability(Durability::None).map_err(io)?;
    Ok(txn)
}

/// Writes one page of puts in one transaction.
fn write_load_page(db: &Database, page: &[u8]) -> StoreResult<()> {
    let txn = begin_load(db)?;
    let mut record = page;
    let mut table: Option<(u8, BytesTable<'_>)> = None;
    while let Some((
        Change {
            space,
            a: key,
            b: value,
            ..
        },
        rest,
    )) = next_change(record)
    {
        record = rest;
        if table.as_ref().is_none_or(|(open, _)| *open != space) {
            let opened = txn
                .open_table(definition(Space::ALL[usize::from(space)]))
                .map_err(io)?;
            table = Some((space, opened));
        }
        let (_, open) = table.as_mut().expect("opened above");
        if open.insert(key, value).map_err(io)?.is_some() {
            return Err(StoreError::Refused(format!(
                "a bulk load put a key the store holds already, in {}",
                Space::ALL[usize::from(space)].name()
            )));
        }
    }
    drop(table);
    txn.commit().map_err(io)
}

/// The writer thread of a load: writes pages in order until the load
/// drops its sender, or a page fails (its error is the last answer).
fn write_load_pages(
    db: &Database,
    pages: &std::sync::mpsc::Receiver<LoadPage>,
    written: &std::sync::mpsc::Sender<StoreResult<()>>,
) {
    for page in pages {
        let answer = match page {
            LoadPage::Puts(puts) => match write_load_page(db, &puts) {
                Ok(()) => continue,
                Err(e) => Err(e),
            },
            LoadPage::Sync => Ok(()),
        };
        let failed = answer.is_err();
        if written.send(answer).is_err() || failed {
            return;
        }
    }
}

impl RedbLoad<'_> {
    /// The writer's error, once it has stopped.
    fn writer_error(&self) -> StoreError {
        match self.written.recv() {
            Ok(Err(e)) => e,
            _ => StoreError::unavailable(
                "the bulk load's writer stopped",
                "it ended without an answer".to_owned(),
            ),
        }
    }

    /// Hands the gathered puts to the writer.
    fn flush(&mut self) -> StoreResult<()> {
        if self.page.is_empty() {
            return Ok(());
        }
        let page = std::mem::replace(&mut self.page, Vec::with_capacity(LOAD_PAGE_BYTES));
        self.pages
            .send(LoadPage::Puts(page))
            .map_err(|_| self.writer_error())
    }

    /// Waits until every page handed over is written.
    fn sync(&mut self) -> StoreResult<()> {
        self.flush()?;
        self.pages
            .send(LoadPage::Sync)
            .map_err(|_| self.writer_error())?;
        match self.written.recv() {
            Ok(answer) => answer,
            Err(_) => Err(self.writer_error()),
        }
    }
}

impl super::Load for RedbLoad<'_> {
    fn put(&mut self, space: Space, key: &[u8], value: &[u8]) -> StoreResult<()> {
        let last = &mut self.last[usize::from(space.index())];
        if last.as_deref().is_some_and(|last| key <= last) {
            return Err(StoreError::Refused(format!(
                "a bulk load put keys of {} out of order",
                space.name()
            )));
        }
        match last {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => *last = Some(key.to_vec()),
        }
        encode_op(&mut self.page, Op::Insert, space, key, value);
        self.count += 1;
        if self.page.len() >= LOAD_PAGE_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn write(&mut self, body: &mut dyn FnMut(&mut dyn Txn) -> StoreResult<()>) -> StoreResult<()> {
        self.sync()?;
        let txn = begin_load(self.db)?;
        run_body(&txn, body)?;
        txn.commit().map_err(io)
    }
}

impl Backend for RedbBackend {
    fn load(
        &self,
        body: &mut dyn FnMut(&mut dyn super::Load) -> StoreResult<()>,
    ) -> StoreResult<Seq> {
        // Holding the log keeps every other writer out until the load is
        // durable; the checkpoint that ends it makes it so.
        let mut log = self.lock_log();
        if let Some(failed) = &log.failed {
            return Err(StoreError::unavailable(
                "the embedded store stopped writing; restart control to replay its log",
                failed.clone(),
            ));
        }
        let started = Instant::now();
        let savepoint = {
            let txn = self.db.begin_write().map_err(io)?;
            let savepoint = txn.ephemeral_savepoint().map_err(io)?;
            txn.commit().map_err(io)?;
            savepoint
        };
        let mut seq = 0;
        let mut count = 0;
        let loaded = std::thread::scope(|scope| {
            let (pages, handed) = std::sync::mpsc::sync_channel(1);
            let (answers, written) = std::sync::mpsc::channel();
            let db = &self.db;
            scope.spawn(move || write_load_pages(db, &handed, &answers));
            let mut load = RedbLoad {
                db,
                page: Vec::with_capacity(LOAD_PAGE_BYTES),
                last: vec![None; Space::ALL.len()],
                count: 0,
                pages,
                written,
            };
            let loaded = body(&mut load).and_then(|()| {
                super::Load::write(&mut load, &mut |txn| {
                    seq = match txn.get(Space::Meta, keys::SEQ)? {
                        Some(bytes) => decode_u64(&bytes)?,
                        None => 0,
                    } + 1;
                    txn.set(Space::Meta, keys::SEQ, &seq.to_le_bytes())?;
                    txn.set(Space::Meta, keys::PRUNED, &seq.to_le_bytes())
                })
            });
            count = load.count;
            // Dropping the load closes its pages: the writer ends, and
            // the scope waits for it before the undo below.
            loaded
        });
        if let Err(error) = loaded {
            let undone = self.db.begin_write().map_err(io).and_then(|mut txn| {
                txn.restore_savepoint(&savepoint).map_err(io)?;
                txn.commit().map_err(io)
            });
            if let Err(undo) = undone {
                // A restart comes back at the last durable commit, before
                // the load: write nothing until then.
                log.failed = Some(format!("a failed bulk load could not be undone: {undo}"));
            }
            return Err(error);
        }
        drop(savepoint);
        self.checkpoint(&mut log)?;
        tracing::info!(
            keys = count,
            seconds = started.elapsed().as_secs_f64(),
            seq,
            "bulk load written"
        );
        Ok(Seq(seq))
    }

    fn write(&self, body: &mut dyn FnMut(&mut dyn Txn) -> StoreResult<()>) -> StoreResult<Seq> {
        let mut log = self.lock_log();
        let txn = self.begin(&log)?;
        let (seq, record) = run_body(&txn, body)?;
        // Durable once the log is synced; redb's own commit does not sync.
        self.commit_logged(&mut log, txn, &record)?;
        Ok(Seq(seq))
    }

    fn view(&self, body: &mut dyn FnMut(&dyn View) -> StoreResult<()>) -> StoreResult<()> {
        let txn = self.db.begin_read().map_err(io)?;
        body(&RedbRead { txn })
    }

    fn prune_changes(&self, through: Seq) -> StoreResult<u64> {
        let mut log = self.lock_log();
        let txn = self.begin(&log)?;
        let mut record = Vec::new();
        let removed = {
            let mut table = txn.open_table(definition(Space::Changes)).map_err(io)?;
            let (start, end) = ([0u8; 8], keys::change(through.0.saturating_add(1)));
            let mut removed = 0u64;
            table
                .retain_in::<&[u8], _>(&start[..]..&end[..], |_, _| {
                    removed += 1;
                    false
                })
                .map_err(io)?;
            encode_op(&mut record, Op::RemoveRange, Space::Changes, &start, &end);
            let mut meta = txn.open_table(definition(Space::Meta)).map_err(io)?;
            let previous = match meta.get(keys::PRUNED).map_err(io)? {
                Some(v) => decode_u64(v.value())?,
                None => 0,
            };
            let pruned = previous.max(through.0).to_le_bytes();
            meta.insert(keys::PRUNED, &pruned[..]).map_err(io)?;
            encode_op(&mut record, Op::Insert, Space::Meta, keys::PRUNED, &pruned);
            removed
        };
        self.commit_logged(&mut log, txn, &record)?;
        Ok(removed)
    }

    fn name(&self) -> &'static str {
        "redb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(dir.path()).unwrap();
        super::super::conformance::run_all(&backend);
        super::super::conformance::run_concurrent(std::sync::Arc::new(backend));
    }

    #[test]
    fn a_bulk_load_writes_in_order_and_is_undone_whole_when_it_fails() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(dir.path()).unwrap();
        let backend: &dyn Backend = &backend;
        backend
            .write(&mut |txn| {
                txn.set(Space::Links, b"held", b"0")?;
                txn.log_change(b"c")
            })
            .unwrap();
        // Enough keys for several pages, so the undone load had committed.
        let keys: Vec<[u8; 8]> = (0..200_000u64).map(u64::to_be_bytes).collect();
        let value = [7u8; 32];
        let put_all = |load: &mut dyn super::super::Load| -> StoreResult<()> {
            for key in &keys {
                load.put(Space::ById, key, &value)?;
            }
            Ok(())
        };
        let count = |backend: &dyn Backend| {
            backend
                .read(|txn| Ok(txn.range(Space::ById, b"", &[0xff; 9], usize::MAX)?.len()))
                .unwrap()
        };

        // Out of order, or a key the store holds: refused, and undone.
        let mut backwards = |load: &mut dyn super::super::Load| -> StoreResult<()> {
            put_all(load)?;
            load.put(Space::ById, &keys[0], &value)
        };
        let refused = backend.load(&mut backwards).unwrap_err();
        assert!(refused.to_string().contains("out of order"), "{refused}");
        assert_eq!(count(backend), 0);
        let mut held = |load: &mut dyn super::super::Load| -> StoreResult<()> {
            put_all(load)?;
            load.put(Space::Links, b"held", b"1")
        };
        let refused = backend.load(&mut held).unwrap_err();
        assert!(refused.to_string().contains("holds already"), "{refused}");
        assert_eq!(count(backend), 0);

        // A load that ends is all there, with the log marked pruned.
        let mut good = |load: &mut dyn super::super::Load| -> StoreResult<()> {
            put_all(load)?;
            load.write(&mut |txn| txn.set(Space::Meta, b"loaded", b"yes"))
        };
        let seq = backend.load(&mut good).unwrap();
        assert_eq!(seq, Seq(2));
        assert_eq!(count(backend), keys.len());
        let (pruned, meta) = backend
            .read(|txn| Ok((txn.pruned_through()?, txn.get(Space::Meta, b"loaded")?)))
            .unwrap();
        assert_eq!((pruned, meta), (Seq(2), Some(b"yes".to_vec())));
    }

    #[test]
    fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = RedbBackend::open(dir.path()).unwrap();
            backend
                .write(&mut |txn| {
                    txn.set(Space::Links, b"a", b"1")?;
                    txn.log_change(b"c")
                })
                .unwrap();
        }
        let backend = RedbBackend::open(dir.path()).unwrap();
        let backend: &dyn Backend = &backend;
        let seen = backend
            .read(|txn| Ok((txn.get(Space::Links, b"a")?, txn.last_seq()?)))
            .unwrap();
        assert_eq!(seen, (Some(b"1".to_vec()), Seq(1)));
    }

    /// Appends `record` to the redo log as a write that was synced but never
    /// checkpointed (the process died before its checkpoint).
    fn log_uncheckpointed(dir: &Path, record: &[u8]) {
        let through = {
            let backend = RedbBackend::open(dir).unwrap();
            let backend: &dyn Backend = &backend;
            backend
                .read(|txn| txn.get(Space::Meta, keys::STORE_LOG_THROUGH))
                .unwrap()
                .map(|v| decode_u64(&v).unwrap())
                .unwrap()
        };
        let (mut wal, replay) = Wal::open(
            &dir.join(shortline_common::layout::STORE_LOG_DIR),
            LOG_KIND,
            through,
        )
        .unwrap();
        assert!(replay.is_empty(), "a clean close leaves nothing to replay");
        wal.append(record).unwrap();
    }

    #[test]
    fn logged_writes_are_replayed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = RedbBackend::open(dir.path()).unwrap();
            backend
                .write(&mut |txn| {
                    txn.set(Space::Links, b"kept", b"1")?;
                    txn.set(Space::Links, b"gone", b"1")?;
                    txn.add(Space::Counters, b"n", 5)
                })
                .unwrap();
        }
        let mut record = Vec::new();
        encode_op(&mut record, Op::Insert, Space::Links, b"new", b"2");
        encode_op(&mut record, Op::Remove, Space::Links, b"gone", b"");
        encode_op(
            &mut record,
            Op::Insert,
            Space::Counters,
            b"n",
            &7i64.to_le_bytes(),
        );
        encode_op(&mut record, Op::RemoveRange, Space::Links, b"a", b"b");
        log_uncheckpointed(dir.path(), &record);
        let backend = RedbBackend::open(dir.path()).unwrap();
        let backend: &dyn Backend = &backend;
        let seen = backend
            .read(|txn| {
                Ok((
                    txn.range(Space::Links, b"", &[0xff], 10)?,
                    txn.get(Space::Counters, b"n")?,
                ))
            })
            .unwrap();
        assert_eq!(
            seen,
            (
                vec![
                    (b"kept".to_vec(), b"1".to_vec()),
                    (b"new".to_vec(), b"2".to_vec())
                ],
                Some(7i64.to_le_bytes().to_vec())
            )
        );
        // The replay was checkpointed: a second start replays nothing.
        let log = dir.path().join(shortline_common::layout::STORE_LOG_DIR);
        let logged: u64 = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(logged, 0, "the replayed segments are pruned");
    }

    #[test]
    fn every_write_goes_through_the_log_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // A long interval: nothing is checkpointed while the backend is open.
        let backend = RedbBackend::open_with(dir.path(), Duration::from_secs(3600)).unwrap();
        backend
            .write(&mut |txn| {
                txn.set(Space::Links, b"a", b"1")?;
                txn.log_change(b"c1")?;
                txn.add(Space::Counters, b"n", 2)
            })
            .unwrap();
        backend
            .write(&mut |txn| {
                txn.clear(Space::Links, b"a")?;
                txn.log_change(b"c2")?;
                txn.add(Space::Counters, b"n", 3)
            })
            .unwrap();
        backend.prune_changes(Seq(1)).unwrap();
        let records: Vec<Vec<u8>> = {
            let log = backend.lock_log();
            let dir = dir.path().join(shortline_common::layout::STORE_LOG_DIR);
            let path = dir.join(format!("{LOG_KIND}-{:020}.wal", log.wal.segment()));
            let bytes = std::fs::read(path).unwrap();
            let mut records = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
                records.push(bytes[at + 12..at + 12 + len].to_vec());
                at += 12 + len;
            }
            records
        };
        assert_eq!(records.len(), 3, "one record per write transaction");
        // Replayed over an empty store, the records give the same state.
        let other = tempfile::tempdir().unwrap();
        let replica = RedbBackend::open(other.path()).unwrap();
        let txn = replica.db.begin_write().unwrap();
        for record in &records {
            apply_record(&txn, record).unwrap();
        }
        txn.commit().unwrap();
        for space in [Space::Links, Space::Changes, Space::Counters, Space::Meta] {
            let dump = |b: &dyn Backend| {
                b.read(|txn| txn.range(space, b"", &[0xff; 32], 100))
                    .unwrap()
            };
            let mut theirs = dump(&replica);
            let mut ours = dump(&backend);
            for pairs in [&mut theirs, &mut ours] {
                pairs.retain(|(k, _)| k != keys::STORE_LOG_THROUGH);
            }
            assert_eq!(theirs, ours, "{space:?}");
        }
    }

    #[test]
    fn a_damaged_log_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        log_uncheckpointed(dir.path(), &[Op::Insert as u8, 200, 0]);
        let err = RedbBackend::open(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("store log record"), "{message}");
        assert!(message.contains("store-log"), "{message}");
    }

    #[test]
    fn a_garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shortline.redb"), vec![0x42; 4096]).unwrap();
        let err = RedbBackend::open(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("cannot open the store"), "{message}");
        assert!(message.contains("shortline.redb"), "{message}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "the redb error is kept as the source"
        );
    }
}
