//! The FoundationDB backend (cargo feature `fdb`).
//!
//! # Key layout
//!
//! Everything lives under one root subspace, the tuple `("shortline", prefix)`
//! (`fdb_prefix`, so several deployments can share a cluster). Each [`Space`]
//! is the subspace `root + (space name,)`, and a key `k` of a space is stored
//! as `space.pack(&k)`: the tuple layer's byte-string encoding preserves the
//! order of raw keys, so range scans mean the same as on the embedded store.
//! docs/FOUNDATIONDB.md lists the subspaces.
//!
//! # Transactions
//!
//! A write body runs in one FDB transaction with a timeout and a retry limit;
//! on a retryable error (a conflict, a lost proxy) the body runs again, as the
//! [`Backend`] contract allows. Reads inside write bodies are ordinary reads,
//! so two transactions claiming the same code conflict and the loser, on
//! retry, sees the code taken. Counters use the atomic `ADD` mutation and never
//! conflict.
//!
//! Every write attempt also writes a unique marker key. When a commit ends in
//! `commit_unknown_result` the retry first reads that marker, inside the retry
//! transaction: if it is there, the attempt committed and the body is not run
//! again, so no write (not even an atomic add) is applied twice; if that
//! attempt commits while the retry runs, the read makes the retry conflict.
//! Markers are cleared after an hour.
//!
//! # The change log
//!
//! A change is written under a versionstamped key (`changes` subspace, tuple
//! versionstamp with the change's index in the transaction as user version)
//! by `SET_VERSIONSTAMPED_KEY`, so appends from several sidecars never
//! conflict; the same transaction adds one to a notify key that sidecars
//! watch. A change's sequence ([`Seq`]) is its commit version: the changes of
//! one transaction share it, and [`ReadTxn::changes_after`] never splits a
//! commit across pages. The range scan, not the watch, is the source of truth.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foundationdb::options::{MutationType, StreamingMode, TransactionOption};
use foundationdb::tuple::{Subspace, Versionstamp};
use foundationdb::{Database, FdbError, KeySelector, RangeOption, Transaction};
use futures::executor::block_on;
use shortline_store::Seq;

use std::cell::Cell;

use super::{Backend, Pairs, ReadTxn, Space, StoreError, StoreResult, Txn, View, keys};

/// Longest a transaction may run, in milliseconds (FDB's own limit is 5 s).
const TRANSACTION_TIMEOUT_MS: i32 = 4_000;
/// Retries of one transaction before the write fails with 503.
const RETRY_LIMIT: i32 = 20;
/// Keys read per range request.
const RANGE_PAGE: usize = 1_000;
/// How long a commit marker is kept.
const MARKER_TTL_SECONDS: u64 = 3_600;

fn fdb(error: FdbError) -> StoreError {
    if error.is_retryable() {
        StoreError::Conflict
    } else {
        StoreError::unavailable("FoundationDB", error)
    }
}

/// The subspaces of one deployment.
#[derive(Debug, Clone)]
struct Layout {
    root: Subspace,
    spaces: Vec<(Space, Subspace)>,
    markers: Subspace,
}

impl Layout {
    fn new(prefix: &str) -> Self {
        let root = Subspace::all().subspace(&("shortline", prefix));
        Self {
            spaces: Space::ALL
                .iter()
                .map(|&space| (space, root.subspace(&space.name())))
                .collect(),
            markers: root.subspace(&"commit_markers"),
            root,
        }
    }

    fn space(&self, space: Space) -> &Subspace {
        &self
            .spaces
            .iter()
            .find(|(s, _)| *s == space)
            .expect("every space has a subspace")
            .1
    }

    fn key(&self, space: Space, key: &[u8]) -> Vec<u8> {
        self.space(space).pack(&key)
    }

    /// The first change key of commits after `after`.
    fn changes_from(&self, after: Seq) -> Vec<u8> {
        let mut version = [0u8; 10];
        version[..8].copy_from_slice(&after.0.saturating_add(1).to_be_bytes());
        self.space(Space::Changes)
            .pack(&Versionstamp::complete(version, 0))
    }
}

/// The FoundationDB store.
pub struct FdbBackend {
    db: Database,
    layout: Layout,
}

impl std::fmt::Debug for FdbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdbBackend").finish_non_exhaustive()
    }
}

/// Keeps the FDB network thread running; drop it last, before exit.
pub struct Network(#[allow(dead_code)] foundationdb::api::NetworkAutoStop);

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Network")
    }
}

/// Starts the FDB client's network thread. Call once per process and keep
/// the guard until the process ends.
pub fn boot() -> Network {
    // SAFETY: called once, from main, before any database is opened; the
    // guard is dropped at the end of main, after every database handle.
    Network(unsafe { foundationdb::boot() })
}

/// Starts the network thread with the client's own fault injection on
/// (FoundationDB's client buggify): fired sections throw
/// `commit_unknown_result`, `not_committed`, `transaction_too_old` and
/// other retryable errors at random, the way to prove that every
/// transaction body is safe to run again. `percent` is the chance that a
/// section, once active, fires. For tests; call once per process.
pub fn boot_with_client_faults(percent: i32) -> Network {
    use foundationdb::options::NetworkOption;
    let network = foundationdb::api::FdbApiBuilder::default()
        .build()
        .and_then(|n| n.set_option(NetworkOption::ClientBuggifyEnable))
        .and_then(|n| n.set_option(NetworkOption::ClientBuggifySectionActivatedProbability(100)))
        .and_then(|n| n.set_option(NetworkOption::ClientBuggifySectionFiredProbability(percent)))
        .expect("the FoundationDB client takes its fault options");
    // SAFETY: as in `boot`: once per process, before any database.
    Network(unsafe { network.boot() }.expect("the FoundationDB network starts"))
}

impl FdbBackend {
    /// Connects to the cluster named by `cluster_file` (or the default one).
    pub fn open(cluster_file: Option<&Path>, prefix: &str) -> StoreResult<Self> {
        let path = cluster_file.map(|p| p.to_string_lossy().into_owned());
        let db = Database::new(path.as_deref()).map_err(fdb)?;
        let backend = Self {
            db,
            layout: Layout::new(prefix),
        };
        // Fail at start-up, with a clear message, when the cluster is unreachable.
        (&backend as &dyn Backend).read(|txn| txn.last_seq())?;
        Ok(backend)
    }

    /// Removes everything this deployment stored: every space, the change
    /// log and the commit markers under its prefix. For tests and
    /// benchmarks on a fresh prefix.
    pub fn clear_prefix(&self) -> StoreResult<()> {
        let (begin, end) = self.layout.root.range();
        block_on(self.db.run(|trx, _| {
            let (begin, end) = (begin.clone(), end.clone());
            async move {
                trx.clear_range(&begin, &end);
                Ok(())
            }
        }))
        .map_err(|e| StoreError::unavailable("clearing the prefix", e))
    }

    fn transaction(&self) -> StoreResult<Transaction> {
        let trx = self.db.create_trx().map_err(fdb)?;
        trx.set_option(TransactionOption::Timeout(TRANSACTION_TIMEOUT_MS))
            .map_err(fdb)?;
        trx.set_option(TransactionOption::RetryLimit(RETRY_LIMIT))
            .map_err(fdb)?;
        Ok(trx)
    }

    fn marker_key(&self, id: &[u8; 16]) -> Vec<u8> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.layout.markers.pack(&(now, &id[..]))
    }

    /// The newest change's sequence, by a snapshot read (no conflicts).
    fn newest(&self, trx: &Transaction) -> Result<StoreResult<Option<Seq>>, FdbError> {
        let (begin, end) = self.layout.space(Space::Changes).range();
        let opt = RangeOption {
            limit: Some(1),
            reverse: true,
            mode: StreamingMode::Exact,
            ..RangeOption::from((begin.as_slice(), end.as_slice()))
        };
        let values = block_on(trx.get_range(&opt, 1, true))?;
        Ok(values
            .first()
            .map(|kv| self.change_seq(kv.key()))
            .transpose())
    }

    fn change_seq(&self, key: &[u8]) -> StoreResult<Seq> {
        let stamp: Versionstamp = self
            .layout
            .space(Space::Changes)
            .unpack(key)
            .map_err(|e| StoreError::Corrupt(format!("change key: {e:?}")))?;
        let version: [u8; 8] = stamp.transaction_version()[..8]
            .try_into()
            .expect("versionstamps are 10 bytes");
        Ok(Seq(u64::from_be_bytes(version)))
    }
}

/// A write transaction's handle.
struct FdbTxn<'a> {
    trx: &'a Transaction,
    layout: &'a Layout,
    changes: Vec<Vec<u8>>,
    /// The FDB error behind the body's failure, for the retry decision.
    error: Cell<Option<FdbError>>,
}

impl FdbTxn<'_> {
    fn check<T>(&self, result: Result<T, FdbError>) -> StoreResult<T> {
        result.map_err(|e| {
            let mapped = fdb(e);
            self.error.set(Some(e));
            mapped
        })
    }
}

/// Keys read at once by `get_many`: enough to hide the round trips, few
/// enough to bound what is in flight.
const GET_MANY_CHUNK: usize = 4_096;

/// Reads many keys with every read of a chunk in flight at once.
fn get_all(
    trx: &Transaction,
    layout: &Layout,
    space: Space,
    keys: &[Vec<u8>],
    snapshot: bool,
) -> Result<Vec<Option<Vec<u8>>>, FdbError> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(GET_MANY_CHUNK) {
        let reads = chunk
            .iter()
            .map(|key| trx.get(&layout.key(space, key), snapshot));
        for value in block_on(futures::future::try_join_all(reads))? {
            out.push(value.map(|v| v.to_vec()));
        }
    }
    Ok(out)
}

fn range_pairs(
    trx: &Transaction,
    subspace: &Subspace,
    begin: Vec<u8>,
    end: Vec<u8>,
    limit: usize,
    snapshot: bool,
) -> Result<Pairs, FdbError> {
    let mut pairs = Vec::new();
    if limit == 0 || begin >= end {
        return Ok(pairs);
    }
    let mut opt = Some(RangeOption {
        limit: Some(limit),
        mode: StreamingMode::WantAll,
        ..RangeOption::from((begin.as_slice(), end.as_slice()))
    });
    let mut iteration = 1;
    while let Some(current) = opt {
        let values = block_on(trx.get_range(&current, iteration, snapshot))?;
        for kv in values.iter() {
            let key: Vec<u8> = subspace
                .unpack(kv.key())
                .expect("keys of a space's subspace decode");
            pairs.push((key, kv.value().to_vec()));
        }
        opt = current.next_range(&values);
        iteration += 1;
    }
    Ok(pairs)
}

impl ReadTxn for FdbTxn<'_> {
    fn get(&self, space: Space, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let key = self.layout.key(space, key);
        let found = block_on(self.trx.get(&key, false));
        Ok(self.check(found)?.map(|v| v.to_vec()))
    }

    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let found = get_all(self.trx, self.layout, space, keys, true);
        self.check(found)
    }

    fn range(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> StoreResult<Pairs> {
        let subspace = self.layout.space(space);
        let pairs = range_pairs(
            self.trx,
            subspace,
            subspace.pack(&start),
            subspace.pack(&end),
            limit,
            false,
        );
        self.check(pairs)
    }
}

impl Txn for FdbTxn<'_> {
    fn set(&mut self, space: Space, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.trx.set(&self.layout.key(space, key), value);
        Ok(())
    }

    fn clear(&mut self, space: Space, key: &[u8]) -> StoreResult<()> {
        self.trx.clear(&self.layout.key(space, key));
        Ok(())
    }

    fn add_statistic(&mut self, space: Space, key: &[u8], delta: i64) -> StoreResult<()> {
        let skipped = self
            .trx
            .set_option(TransactionOption::NextWriteNoWriteConflictRange);
        self.check(skipped)?;
        self.add(space, key, delta)
    }

    fn add(&mut self, space: Space, key: &[u8], delta: i64) -> StoreResult<()> {
        self.trx.atomic_op(
            &self.layout.key(space, key),
            &delta.to_le_bytes(),
            MutationType::Add,
        );
        Ok(())
    }

    fn log_change(&mut self, change: &[u8]) -> StoreResult<()> {
        if self.changes.len() >= usize::from(u16::MAX) {
            return Err(StoreError::TooLarge(
                "more than 65535 changes in one transaction".into(),
            ));
        }
        self.changes.push(change.to_vec());
        Ok(())
    }
}

/// A read view: one transaction at one read version, snapshot reads only.
struct FdbRead<'a> {
    backend: &'a FdbBackend,
    trx: Transaction,
    /// The FDB error behind a failed read, for the retry decision.
    error: Cell<Option<FdbError>>,
}

impl FdbRead<'_> {
    fn fail(&self, error: FdbError) -> StoreError {
        self.error.set(Some(error));
        fdb(error)
    }
}

impl ReadTxn for FdbRead<'_> {
    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        get_all(&self.trx, &self.backend.layout, space, keys, true).map_err(|e| self.fail(e))
    }

    fn get(&self, space: Space, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let key = self.backend.layout.key(space, key);
        Ok(block_on(self.trx.get(&key, true))
            .map_err(|e| self.fail(e))?
            .map(|v| v.to_vec()))
    }

    fn range(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> StoreResult<Pairs> {
        let subspace = self.backend.layout.space(space);
        range_pairs(
            &self.trx,
            subspace,
            subspace.pack(&start),
            subspace.pack(&end),
            limit,
            true,
        )
        .map_err(|e| self.fail(e))
    }
}

impl View for FdbRead<'_> {
    fn last_seq(&self) -> StoreResult<Seq> {
        match self.backend.newest(&self.trx).map_err(|e| self.fail(e))?? {
            Some(seq) => Ok(seq),
            None => self.pruned_through(),
        }
    }

    fn changes_after(&self, after: Seq, limit: usize) -> StoreResult<Vec<(Seq, Vec<u8>)>> {
        let layout = &self.backend.layout;
        let (_, end) = layout.space(Space::Changes).range();
        let mut begin = layout.changes_from(after);
        let mut out: Vec<(Seq, Vec<u8>)> = Vec::new();
        loop {
            let opt = RangeOption {
                limit: Some(RANGE_PAGE.min(limit.max(1).saturating_add(1))),
                mode: StreamingMode::WantAll,
                ..RangeOption::from((begin.as_slice(), end.as_slice()))
            };
            let values = block_on(self.trx.get_range(&opt, 1, true)).map_err(|e| self.fail(e))?;
            let mut last_key = None;
            for kv in values.iter() {
                let seq = self.backend.change_seq(kv.key())?;
                // A page ends only between commits: a reader resuming after
                // a sequence must not miss the rest of its commit.
                if out.len() >= limit && out.last().is_some_and(|(s, _)| *s != seq) {
                    return Ok(out);
                }
                out.push((seq, kv.value().to_vec()));
                last_key = Some(kv.key().to_vec());
            }
            match last_key {
                Some(mut key) if values.more() || values.len() == opt.limit.unwrap_or(0) => {
                    key.push(0);
                    begin = key;
                }
                _ => return Ok(out),
            }
        }
    }

    fn change_behind(&self, seq: Seq, back: u64) -> StoreResult<Option<Seq>> {
        let layout = &self.backend.layout;
        let (begin, _) = layout.space(Space::Changes).range();
        // The last change at or below `seq`, then `back` keys before it:
        // the storage servers count, nothing is read back but one key.
        let offset = i32::try_from(back).map_or(i32::MIN, |back| -back);
        let selector = KeySelector::new(layout.changes_from(seq).into(), false, offset);
        let key = block_on(self.trx.get_key(&selector, true)).map_err(|e| self.fail(e))?;
        if key.as_ref() < begin.as_slice() || !layout.space(Space::Changes).is_start_of(&key) {
            return Ok(None);
        }
        Ok(Some(self.backend.change_seq(&key)?))
    }

    fn first_change(&self) -> StoreResult<Option<Seq>> {
        let (begin, end) = self.backend.layout.space(Space::Changes).range();
        let opt = RangeOption {
            limit: Some(1),
            mode: StreamingMode::Exact,
            ..RangeOption::from((begin.as_slice(), end.as_slice()))
        };
        let values = block_on(self.trx.get_range(&opt, 1, true)).map_err(|e| self.fail(e))?;
        values
            .first()
            .map(|kv| self.backend.change_seq(kv.key()))
            .transpose()
    }

    fn pruned_through(&self) -> StoreResult<Seq> {
        Ok(Seq(self.get(Space::Meta, keys::PRUNED)?.map_or(0, |v| {
            v.as_slice().try_into().map_or(0, u64::from_le_bytes)
        })))
    }
}

impl Backend for FdbBackend {
    fn write(&self, body: &mut dyn FnMut(&mut dyn Txn) -> StoreResult<()>) -> StoreResult<Seq> {
        let mut trx = self.transaction()?;
        // Markers of attempts whose commits ended in an unknown result.
        let mut unknown: Vec<Vec<u8>> = Vec::new();
        'attempt: loop {
            for previous in &unknown {
                // Read inside the retry (a conflict-tracked read): if that
                // attempt lands concurrently this one conflicts, and if it
                // landed, its writes are not applied again.
                match block_on(trx.get(previous, false)) {
                    Ok(Some(_)) => {
                        let seq = (self as &dyn Backend).read(|txn| txn.last_seq())?;
                        return Ok(seq);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        trx = block_on(trx.on_error(e)).map_err(fdb)?;
                        continue 'attempt;
                    }
                }
            }
            let marker = self.marker_key(&rand::random());
            let mut txn = FdbTxn {
                trx: &trx,
                layout: &self.layout,
                changes: Vec::new(),
                error: Cell::new(None),
            };
            let outcome = body(&mut txn);
            let (changes, error) = (std::mem::take(&mut txn.changes), txn.error.take());
            if let Err(e) = outcome {
                match error {
                    // An FDB error inside the body: retry if FDB says so.
                    Some(fdb_error) => {
                        trx = block_on(trx.on_error(fdb_error)).map_err(fdb)?;
                        continue;
                    }
                    // The body's own refusal: nothing is committed.
                    None => return Err(e),
                }
            }
            let changes_space = self.layout.space(Space::Changes);
            for (index, change) in changes.iter().enumerate() {
                let user_version = u16::try_from(index).expect("checked in log_change");
                let key =
                    changes_space.pack_with_versionstamp(&Versionstamp::incomplete(user_version));
                trx.atomic_op(&key, change, MutationType::SetVersionstampedKey);
            }
            if !changes.is_empty() {
                trx.atomic_op(
                    &self.layout.key(Space::Meta, keys::NOTIFY),
                    &1i64.to_le_bytes(),
                    MutationType::Add,
                );
            }
            trx.set(&marker, b"");
            let current = if changes.is_empty() {
                // Only reported back; a failed read must not fail the write.
                self.newest(&trx).ok().and_then(Result::ok).flatten()
            } else {
                None
            };
            match block_on(trx.commit()) {
                Ok(committed) => {
                    if changes.is_empty() {
                        return Ok(current.unwrap_or(Seq(0)));
                    }
                    let version = committed.committed_version().map_err(fdb)?;
                    return Ok(Seq(u64::try_from(version).unwrap_or(0)));
                }
                Err(failed) => {
                    if failed.is_maybe_committed() {
                        unknown.push(marker);
                    }
                    trx = block_on(failed.on_error()).map_err(fdb)?;
                }
            }
        }
    }

    fn view(&self, body: &mut dyn FnMut(&dyn View) -> StoreResult<()>) -> StoreResult<()> {
        let mut trx = self.transaction()?;
        loop {
            let read = FdbRead {
                backend: self,
                trx,
                error: Cell::new(None),
            };
            let outcome = body(&read);
            match (outcome, read.error.take()) {
                (Ok(()), _) => return Ok(()),
                // An FDB error while reading: a fresh read version, after
                // FDB's back-off, if FDB says it is worth retrying.
                (Err(_), Some(error)) => {
                    trx = block_on(read.trx.on_error(error)).map_err(fdb)?;
                }
                (Err(e), None) => return Err(e),
            }
        }
    }

    fn prune_changes(&self, through: Seq) -> StoreResult<u64> {
        let changes = self.layout.space(Space::Changes);
        let (begin, _) = changes.range();
        let end = self.layout.changes_from(through);
        let pruned_key = self.layout.key(Space::Meta, keys::PRUNED);
        // Commit markers older than their time to live.
        let cutoff = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(MARKER_TTL_SECONDS);
        let (markers_begin, _) = self.layout.markers.range();
        let markers_end = self.layout.markers.pack(&(cutoff,));
        // Clearing a range and raising a maximum are safe to repeat, so
        // every retryable failure (commit_unknown_result included) retries.
        let mut trx = self.transaction()?;
        loop {
            let pruned = match block_on(trx.get(&pruned_key, false)) {
                Ok(value) => value.map_or(0, |v| (*v).try_into().map_or(0, u64::from_le_bytes)),
                Err(e) => {
                    trx = block_on(trx.on_error(e)).map_err(fdb)?;
                    continue;
                }
            };
            trx.clear_range(&begin, &end);
            trx.set(&pruned_key, &pruned.max(through.0).to_le_bytes());
            trx.clear_range(&markers_begin, &markers_end);
            match block_on(trx.commit()) {
                Ok(_) => break,
                Err(failed) => trx = block_on(failed.on_error()).map_err(fdb)?,
            }
        }
        // FDB does not count cleared keys; report the range as one prune.
        Ok(1)
    }

    fn name(&self) -> &'static str {
        "foundationdb"
    }

    fn shared(&self) -> bool {
        true
    }

    fn wait_for_changes(&self, timeout: Duration) -> StoreResult<()> {
        let trx = self.transaction()?;
        let watch = trx.watch(&self.layout.key(Space::Meta, keys::NOTIFY));
        block_on(trx.commit()).map_err(|e| fdb(FdbError::from(e)))?;
        let (wake, woken) = futures::channel::oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            let _ = wake.send(());
        });
        match block_on(futures::future::select(watch, woken)) {
            futures::future::Either::Left((Err(e), _)) => Err(fdb(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The cluster named by `FDB_CLUSTER_FILE`, with the network started
    /// once for the process: with the client's fault injection on when
    /// `SHORTLINE_FDB_CLIENT_FAULTS` gives a percentage. `None` (and a line
    /// saying the test is skipped) without a cluster.
    fn cluster(test: &str) -> Option<(PathBuf, Option<i32>)> {
        static NETWORK: std::sync::OnceLock<Network> = std::sync::OnceLock::new();
        let Some(file) = std::env::var_os("FDB_CLUSTER_FILE") else {
            eprintln!("skipped: {test} needs FDB_CLUSTER_FILE naming a FoundationDB cluster");
            return None;
        };
        let faults = std::env::var("SHORTLINE_FDB_CLIENT_FAULTS")
            .ok()
            .and_then(|n| n.parse::<i32>().ok());
        NETWORK.get_or_init(|| match faults {
            Some(percent) => {
                eprintln!("FoundationDB client fault injection on: {percent} % of sections fire");
                boot_with_client_faults(percent)
            }
            None => boot(),
        });
        Some((PathBuf::from(file), faults))
    }

    /// A backend on a fresh prefix, cleared when dropped.
    struct Fresh(FdbBackend, String);

    impl Fresh {
        fn open(cluster_file: &Path, name: &str) -> Self {
            let prefix = format!("{name}-{}", uuid::Uuid::new_v4());
            Self(
                FdbBackend::open(Some(cluster_file), &prefix).expect("cluster"),
                prefix,
            )
        }
    }

    impl Drop for Fresh {
        fn drop(&mut self) {
            if let Err(e) = self.0.clear_prefix() {
                eprintln!("prefix {} left behind: {e}", self.1);
            }
        }
    }

    /// The shared store suite, against a real cluster. Each run uses a
    /// fresh prefix and clears it afterwards. It expects every operation
    /// to succeed, so it does not run under fault injection; the workload
    /// below does.
    #[test]
    fn conformance_on_a_cluster() {
        let Some((cluster_file, faults)) = cluster("the FoundationDB conformance suite") else {
            return;
        };
        if faults.is_some() {
            eprintln!("skipped under fault injection: the suite expects no failures");
            return;
        }
        let backend = std::sync::Arc::new(Fresh::open(&cluster_file, "conformance"));
        crate::db::conformance::run_all(&backend.0);
        crate::db::conformance::run_concurrent(std::sync::Arc::new(
            FdbBackend::open(Some(&cluster_file), &backend.1).expect("cluster"),
        ));
    }

    /// Concurrent writes, each setting its own key, adding one to a shared
    /// counter and logging one change, with or without the client's fault
    /// injection: every write is applied once or not at all (the counter
    /// equals the keys present, and each present key has exactly one
    /// change), and every acknowledged write is present.
    #[test]
    fn writes_are_applied_once_or_not_at_all() {
        let Some((cluster_file, faults)) = cluster("the FoundationDB write workload") else {
            return;
        };
        let fresh = Fresh::open(&cluster_file, "workload");
        let backend: &dyn Backend = &fresh.0;
        let start = read_until_it_works(backend, |txn| txn.last_seq());
        let (threads, writes) = (4, 100);
        type Outcome = (Vec<String>, std::collections::BTreeMap<String, usize>);
        let acknowledged: Vec<Outcome> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        let mut acked = Vec::new();
                        let mut failed = std::collections::BTreeMap::<String, usize>::new();
                        for i in 0..writes {
                            let name = format!("w{t}-{i:03}");
                            let written = backend.write(&mut |txn| {
                                txn.set(Space::Meta, format!("fault/{name}").as_bytes(), b"1")?;
                                txn.add(Space::Counters, b"fault/n", 1)?;
                                txn.log_change(name.as_bytes())
                            });
                            match written {
                                Ok(_) => acked.push(name),
                                Err(e) => *failed.entry(e.chain()).or_default() += 1,
                            }
                        }
                        (acked, failed)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut failures = std::collections::BTreeMap::<String, usize>::new();
        let acknowledged: Vec<String> = acknowledged
            .into_iter()
            .flat_map(|(acked, failed)| {
                for (error, n) in failed {
                    *failures.entry(error).or_default() += n;
                }
                acked
            })
            .collect();
        let present: Vec<String> = read_until_it_works(backend, |txn| {
            Ok(txn
                .range(Space::Meta, b"fault/", b"fault0", usize::MAX)?
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k[6..]).into_owned())
                .collect())
        });
        let counter = read_until_it_works(backend, |txn| {
            Ok(txn
                .get(Space::Counters, b"fault/n")?
                .map_or(0, |v| keys::counter_value(&v)))
        });
        let logged: Vec<String> = read_until_it_works(backend, |txn| {
            Ok(txn
                .changes_after(start, usize::MAX)?
                .into_iter()
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
                .collect())
        });
        eprintln!(
            "faults {faults:?}: {} of {} writes acknowledged, {} applied; failures: {failures:?}",
            acknowledged.len(),
            threads * writes,
            present.len()
        );
        assert_eq!(
            counter,
            present.len() as i64,
            "the counter counts each applied write once"
        );
        for name in &acknowledged {
            assert!(present.contains(name), "acknowledged write {name} is lost");
        }
        let mut logged_sorted = logged.clone();
        logged_sorted.sort();
        let mut present_sorted = present.clone();
        present_sorted.sort();
        assert_eq!(
            logged_sorted, present_sorted,
            "exactly one change per applied write"
        );
        if faults.is_none() {
            assert_eq!(
                acknowledged.len(),
                threads * writes,
                "no faults, no failures"
            );
        }
    }

    /// What a click counter costs of the 10 MB a transaction holds, as
    /// FoundationDB counts it: a statistics counter (no write conflict range)
    /// less than half of a counter readers conflict on. `--nocapture` prints
    /// the bytes per counter that docs/FOUNDATIONDB.md quotes.
    #[test]
    fn statistics_counters_cost_only_their_mutation() {
        let Some((cluster_file, faults)) = cluster("the counter size test") else {
            return;
        };
        if faults.is_some() {
            eprintln!("skipped under fault injection: it measures one transaction");
            return;
        }
        let fresh = Fresh::open(&cluster_file, "sizes");
        let per_counter = |statistic: bool| {
            let trx = fresh.0.transaction().expect("transaction");
            let mut txn = FdbTxn {
                trx: &trx,
                layout: &fresh.0.layout,
                changes: Vec::new(),
                error: Cell::new(None),
            };
            let n = 10_000u64;
            for link in 0..n {
                let key = keys::series(
                    100_000 + link,
                    keys::Granularity::Day,
                    20_000,
                    keys::dim::REFERRER,
                    "example.com",
                );
                let added = if statistic {
                    txn.add_statistic(Space::Counters, &key, 1)
                } else {
                    txn.add(Space::Counters, &key, 1)
                };
                added.expect("add");
            }
            let size = block_on(trx.get_approximate_size()).expect("size");
            size as f64 / n as f64
        };
        let (statistic, conflicting) = (per_counter(true), per_counter(false));
        eprintln!(
            "bytes per counter: {statistic:.0} as a statistic, {conflicting:.0} with a write conflict range"
        );
        assert!(
            statistic * 2.0 < conflicting,
            "{statistic} bytes per statistic counter, {conflicting} per conflicting one"
        );
    }

    /// Reads, retrying failures (fault injection fails reads too).
    fn read_until_it_works<T>(
        backend: &dyn Backend,
        mut body: impl FnMut(&dyn View) -> StoreResult<T>,
    ) -> T {
        for _ in 0..1000 {
            if let Ok(value) = backend.read(&mut body) {
                return value;
            }
        }
        panic!("a read kept failing");
    }

    #[test]
    fn space_keys_keep_the_order_of_raw_keys() {
        let layout = Layout::new("order");
        let mut raw: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\xff",
            b"a",
            b"a\x00",
            b"ab",
            b"\xff",
            b"\xff\x00",
        ];
        raw.sort();
        let packed: Vec<Vec<u8>> = raw.iter().map(|k| layout.key(Space::Links, k)).collect();
        let mut sorted = packed.clone();
        sorted.sort();
        assert_eq!(packed, sorted, "tuple-packed keys sort as the raw keys do");
        let first = layout.changes_from(Seq(41));
        let second = layout.changes_from(Seq(42));
        assert!(first < second);
    }
}
