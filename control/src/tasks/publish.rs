//! Keeping proxies current: snapshot segments (a base and deltas over it)
//! built in the background, and a change stream resumable by sequence
//! number.
//!
//! The stream is `GET /internal/v1/changes?after=SEQ`, a long-lived response of
//! newline-delimited JSON messages (see [`Message`]). It is not part of the
//! public API: it lives under `/internal/`, is absent from the OpenAPI
//! document, and needs the internal token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shortline_store::files::{DeltaFile, chain, delta_file_name, list_deltas};
use shortline_store::stream::{Manifest, ManifestBase, ManifestDelta};
use shortline_store::{
    Change, Code, DeltaOf, LinkRecord, LiveTable, Seq, Snapshot, SnapshotStats, SnapshotWriter,
};
use tokio::sync::mpsc;

use crate::db::{Space, StoreResult, keys};
use crate::model::{ChangeDoc, LinkDoc};
use crate::state::AppState;

/// How often an idle stream says it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Messages buffered per subscriber before the stream waits for the proxy.
pub const STREAM_BUFFER_MESSAGES: usize = 64;
/// Links read per page while building a snapshot.
const SNAPSHOT_PAGE_LINKS: usize = 10_000;

pub use shortline_store::stream::Message;

pub use shortline_store::files::{file_name as snapshot_file_name, list as snapshot_files};

/// Writes every link to a snapshot at `dir`, as of the returned sequence
/// or later: the sequence is read first, then the links page by page, each
/// page in its own read transaction at a newer version, so a table of any
/// size is read within FoundationDB's five-second transaction limit, and
/// each page goes straight to the file, so memory does not grow with the
/// table. A link changed while the pages are read may be in the snapshot in
/// its newer state; that change is after the snapshot's sequence, so
/// proxies apply it on top all the same, and applying a change twice is
/// harmless.
fn write_all_links(
    state: &AppState,
    dir: &std::path::Path,
) -> anyhow::Result<(Seq, SnapshotStats)> {
    let seq = state.backend.read(|txn| txn.last_seq())?;
    let path = dir.join(snapshot_file_name(seq));
    let mut writer = SnapshotWriter::create(&path, seq)?;
    let mut start = Vec::new();
    loop {
        let page = state
            .backend
            .read(|txn| txn.range(Space::Links, &start, &[0xff], SNAPSHOT_PAGE_LINKS))?;
        for (_, value) in &page {
            writer.push(&LinkDoc::decode(value)?.record())?;
        }
        match page.last() {
            Some((key, _)) if page.len() == SNAPSHOT_PAGE_LINKS => {
                start.clone_from(key);
                start.push(0);
            }
            _ => break,
        }
    }
    // The short domains' settings travel with the links, as records.
    let (domains, default) = state.backend.read(|txn| {
        Ok((
            crate::domain::domains::list(txn)?,
            crate::domain::domains::default_name(txn)?,
        ))
    })?;
    let challenges = state
        .backend
        .read(|txn| crate::domain::acme::challenges(txn))?;
    for (token, key_authorization) in &challenges {
        writer.push(&crate::domain::acme::challenge_record(
            token,
            key_authorization,
        )?)?;
    }
    for domain in &domains {
        let key = shortline_store::domain::settings_key(&domain.name)?;
        writer.push(&domain.record(key))?;
        if default.as_deref() == Some(&domain.name) {
            let key = Code::key(shortline_store::domain::DEFAULT_KEY)?;
            writer.push(&domain.record(key))?;
        }
    }
    let stats = writer.finish()?;
    Ok((seq, stats))
}

/// Whether the segments should move forward: enough changes since the
/// newest segment, or changes older than `snapshot_age_max_ms`. A steady
/// trickle of writes must not cause a segment per tick; proxies carry the
/// changes in their overlays meanwhile.
fn due(state: &AppState, top: Seq, written: std::time::SystemTime, committed: Seq) -> bool {
    if top >= committed {
        return false;
    }
    let pending = committed.0 - top.0;
    let age = written.elapsed().unwrap_or_default();
    pending >= state.config.snapshot_changes_min
        || age >= Duration::from_millis(state.config.snapshot_age_max_ms)
}

/// Control's table as files: the newest base that opens and the chain of
/// deltas over it.
#[derive(Debug)]
pub struct Chain {
    pub base: Snapshot,
    pub base_path: PathBuf,
    pub deltas: Vec<DeltaFile>,
}

impl Chain {
    /// The newest change the segments cover.
    #[must_use]
    pub fn sequence(&self) -> Seq {
        self.deltas.last().map_or(self.base.sequence(), |d| d.seq)
    }

    fn newest_path(&self) -> &Path {
        self.deltas.last().map_or(&self.base_path, |d| &d.path)
    }

    /// The segments opened as one table for a merge, every block of the
    /// deltas (and, for a merge that reads it, of the base) checked first:
    /// a damaged one is set aside, so the next step builds without it, and
    /// the merge does not happen.
    fn open(&self, read_base: bool) -> anyhow::Result<LiveTable> {
        let checked =
            |path: &Path| Snapshot::open_verified(path).inspect_err(|e| set_aside(path, e));
        let base = if read_base {
            checked(&self.base_path)?
        } else {
            Snapshot::open(&self.base_path)?
        };
        let deltas = self
            .deltas
            .iter()
            .map(|d| checked(&d.path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LiveTable::with_deltas(base, deltas)?)
    }

    /// What proxies are told to fetch.
    #[must_use]
    pub fn manifest(&self) -> Manifest {
        let name = |path: &Path| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let info = self.base.info();
        Manifest {
            base: ManifestBase {
                file: name(&self.base_path),
                sequence: info.sequence,
                seed: self.base.hash_seed(),
                links: info.record_count,
                bytes: info.file_size_bytes,
            },
            deltas: self
                .deltas
                .iter()
                .map(|d| {
                    let (entries, bytes) = Snapshot::open(&d.path)
                        .map(|s| (s.len(), s.info().file_size_bytes))
                        .unwrap_or_default();
                    ManifestDelta {
                        file: name(&d.path),
                        parent: d.of.parent,
                        sequence: d.seq,
                        entries,
                        bytes,
                    }
                })
                .collect(),
        }
    }
}

/// The chain in `dir`: the newest base whose header opens (one that does
/// not is moved aside, so a new one is built) and the deltas over it.
pub fn current_chain(dir: &Path) -> Option<Chain> {
    let deltas = list_deltas(dir);
    for (_, path) in snapshot_files(dir) {
        match Snapshot::open(&path) {
            Ok(base) => {
                let deltas = chain(base.base_id(), &deltas);
                return Some(Chain {
                    base,
                    base_path: path,
                    deltas,
                });
            }
            Err(e) => set_aside(&path, &e),
        }
    }
    None
}

/// Moves a damaged segment file out of the way, so it is neither sent nor
/// built upon, and says so.
pub fn set_aside(path: &Path, error: &dyn std::fmt::Display) {
    let mut aside = path.to_path_buf().into_os_string();
    aside.push(".damaged");
    let moved = std::fs::rename(path, &aside);
    metrics::counter!("control_snapshots_damaged_total").increment(1);
    tracing::error!(
        path = %path.display(),
        error = %error,
        moved_aside = moved.is_ok(),
        "a snapshot file is damaged; it is not sent, and the segments are built again without it"
    );
}

/// What one publishing step did, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A new base read from the store.
    Base,
    /// A delta from the change log.
    Delta,
    /// The deltas merged into one.
    MergeDeltas,
    /// The base and the deltas merged into a new base.
    MergeAll,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Delta => "delta",
            Self::MergeDeltas => "merge_deltas",
            Self::MergeAll => "merge_all",
        }
    }
}

/// Writes a delta over `chain` of the changes after its newest segment, read
/// from the change log in pages (each page its own read transaction, whole
/// commits only): its cost follows the changes, not the table. `None` when
/// the log no longer holds them (pruned, or a restore moved past them).
fn write_delta(state: &AppState, dir: &Path, chain: &Chain) -> anyhow::Result<Option<Seq>> {
    let parent = chain.sequence();
    let committed = state.backend.read(|txn| txn.last_seq())?;
    let mut newest: HashMap<Code, Option<LinkRecord>> = HashMap::new();
    let mut after = parent;
    while after < committed {
        match read_changes(state, after, SNAPSHOT_PAGE_LINKS)? {
            Err(()) => return Ok(None),
            Ok(changes) if changes.is_empty() => break,
            Ok(changes) => {
                after = changes.last().map_or(after, |c| c.seq);
                for change in changes {
                    newest.insert(change.code, change.record);
                }
            }
        }
    }
    if after == parent {
        return Ok(Some(parent));
    }
    let of = DeltaOf {
        base: chain.base.base_id(),
        parent,
    };
    let mut writer =
        SnapshotWriter::create_delta(&dir.join(delta_file_name(of, after)), after, of)?;
    for (code, record) in &newest {
        writer.push_change(code, record.as_ref())?;
    }
    writer.finish()?;
    Ok(Some(after))
}

/// Merges every delta of `chain` into one over its base: the cost follows
/// the deltas, and proxies holding the base fetch one file.
fn merge_deltas(dir: &Path, chain: &Chain) -> anyhow::Result<()> {
    let view = chain.open(false)?.load_full();
    view.write_newer_than_base(dir, view.covered())?;
    Ok(())
}

/// Merges the base and its deltas into a new base, reading the old base
/// sequentially from its file (not the store: no transaction spans the
/// merge, whatever the table's size).
fn merge_all(dir: &Path, chain: &Chain) -> anyhow::Result<SnapshotStats> {
    let view = chain.open(true)?.load_full();
    let seq = view.covered();
    let mut writer = SnapshotWriter::create(&dir.join(snapshot_file_name(seq)), seq)?;
    for record in view.records() {
        writer.push(&record?)?;
    }
    Ok(writer.finish()?)
}

/// Moves control's segments forward when due (or, with `force`, whenever
/// the log has moved past them): a base read from the store when there is
/// none or the log cannot say what changed, else a delta from the change
/// log; then deltas merged into one past `snapshot_deltas_max`, and
/// everything merged into a new base once the deltas hold
/// `snapshot_merge_percent` of the base's links. Removes files no chain
/// needs, prunes the change log and announces the segments. Returns the
/// sequence they cover when they moved.
pub fn build_snapshot(state: &AppState, force: bool) -> anyhow::Result<Option<Seq>> {
    let dir = state.config.snapshot_dir();
    std::fs::create_dir_all(&dir)?;
    let committed = state.committed.borrow().seq;
    let current = current_chain(&dir);
    let step = match &current {
        None => Step::Base,
        Some(chain) => {
            let top = chain.sequence();
            state
                .snapshot
                .send_if_modified(|cur| std::mem::replace(cur, top) != top);
            let written = std::fs::metadata(chain.newest_path())
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            let wanted = if force {
                top < committed
            } else {
                due(state, top, written, committed)
            };
            if !wanted {
                return Ok(None);
            }
            Step::Delta
        }
    };
    let started = Instant::now();
    let mut steps = vec![step];
    if let Some(chain) = &current {
        match write_delta(state, &dir, chain)? {
            // Nothing in the log past the segments after all.
            Some(seq) if seq == chain.sequence() => return Ok(None),
            Some(_) => {}
            None => {
                tracing::info!(
                    after = chain.sequence().0,
                    "the change log no longer reaches the newest segment; reading every link for a new base"
                );
                steps = vec![Step::Base];
            }
        }
    }
    if steps == [Step::Base] {
        write_all_links(state, &dir)?;
    }
    let mut chain = current_chain(&dir).context("the segments just written do not open")?;
    if chain.deltas.len() > state.config.snapshot_deltas_max {
        merge_deltas(&dir, &chain)?;
        steps.push(Step::MergeDeltas);
        chain = current_chain(&dir).context("the merged delta does not open")?;
    }
    let delta_entries: u64 = chain
        .deltas
        .iter()
        .filter_map(|d| Snapshot::open(&d.path).ok())
        .map(|d| d.len())
        .sum();
    if !chain.deltas.is_empty()
        && delta_entries * 100 >= chain.base.len().max(1) * state.config.snapshot_merge_percent
    {
        merge_all(&dir, &chain)?;
        steps.push(Step::MergeAll);
        chain = current_chain(&dir).context("the merged base does not open")?;
    }
    let seq = chain.sequence();
    let seconds = started.elapsed().as_secs_f64();
    for step in &steps {
        metrics::counter!("control_snapshot_steps_total", "step" => step.as_str()).increment(1);
    }
    metrics::histogram!("control_snapshot_build_seconds").record(seconds);
    let info = chain.base.info();
    metrics::gauge!("control_snapshot_size_bytes").set(info.file_size_bytes as f64);
    // The base also holds each short domain's settings, and the default's.
    let domains = state.domains.current();
    let settings_records = domains.by_name.len() + usize::from(domains.default.is_some());
    metrics::gauge!("control_snapshot_links")
        .set(info.record_count.saturating_sub(settings_records as u64) as f64);
    metrics::gauge!("control_snapshot_deltas").set(chain.deltas.len() as f64);
    metrics::gauge!("control_snapshot_sequence").set(seq.0 as f64);
    tracing::info!(
        seq = seq.0,
        steps = ?steps.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        base_links = info.record_count,
        deltas = chain.deltas.len(),
        seconds,
        "segments moved forward"
    );
    remove_unneeded(state, &dir, &chain);
    // Keep `change_log_keep` changes behind the segments, counted through
    // the log: sequences are not counts (FoundationDB's are commit
    // versions, a million a second).
    let keep = state.config.change_log_keep;
    // While a webhook subscription is enabled, never past the changes
    // whose events are not yet queued for it.
    let behind = state.backend.read(|txn| {
        let behind = txn.change_behind(seq, keep)?;
        if !crate::domain::webhooks::active(txn)? {
            return Ok(behind);
        }
        let cursor = txn
            .get(Space::Meta, keys::WEBHOOKS_CURSOR)?
            .and_then(|b| b.try_into().ok().map(u64::from_le_bytes));
        Ok(match cursor {
            Some(cursor) => behind.map(|b| Seq(b.0.min(cursor))),
            None => None,
        })
    })?;
    if let Some(prune_through) = behind {
        let removed = state.backend.prune_changes(prune_through)?;
        metrics::counter!("control_changes_pruned_total").increment(removed);
    }
    state.snapshot.send_replace(seq);
    Ok(Some(seq))
}

/// Removes bases beyond the newest `snapshot_keep` and every delta that is
/// not in the current chain.
fn remove_unneeded(state: &AppState, dir: &Path, chain: &Chain) {
    let keep: Vec<&Path> = chain.deltas.iter().map(|d| d.path.as_path()).collect();
    let old_deltas = list_deltas(dir)
        .into_iter()
        .filter(|d| !keep.contains(&d.path.as_path()))
        .map(|d| d.path);
    let old_bases = snapshot_files(dir)
        .into_iter()
        .skip(state.config.snapshot_keep)
        .map(|(_, path)| path);
    for old in old_deltas.chain(old_bases) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(path = %old.display(), error = %e, "cannot remove old snapshot");
        }
    }
}

/// Builds snapshots every `snapshot_interval_ms` until the process ends.
/// With a shared store, the short domains are read again each tick.
pub async fn snapshot_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(state.config.snapshot_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let worker = Arc::clone(&state);
        let built = tokio::task::spawn_blocking(move || {
            // Other sidecars change domains too: their settings are read
            // again each tick (this process refreshes on its own writes).
            if worker.backend.shared()
                && let Err(e) = worker.domains.refresh(&*worker.backend)
            {
                tracing::warn!(error = %e, "reading the short domains failed");
            }
            build_snapshot(&worker, false)
        });
        match built.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                metrics::counter!("control_snapshot_errors_total").increment(1);
                tracing::error!(error = %e, "snapshot build failed");
            }
            Err(e) => tracing::error!(error = %e, "snapshot task failed"),
        }
    }
}

/// Marks expired links every `sweep_interval_ms`, publishing each change.
pub async fn sweep_loop(state: Arc<AppState>) {
    const SWEEP_BATCH_LINKS: usize = 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(state.config.sweep_interval_ms));
    loop {
        tick.tick().await;
        loop {
            let now = crate::model::now_unix();
            match state
                .committer
                .write(move |txn| crate::domain::links::expire_due(txn, now, SWEEP_BATCH_LINKS))
                .await
            {
                Ok(0) => {
                    let pruned = state
                        .committer
                        .write(move |txn| {
                            crate::domain::ingest::prune_batch_ids(txn, now, SWEEP_BATCH_LINKS)
                        })
                        .await;
                    if let Err(e) = pruned {
                        tracing::warn!(error = %e, "pruning click batch ids failed");
                    }
                    let retention = state.analytics.settings().hourly_retention_days;
                    let pruned = state
                        .committer
                        .write(move |txn| {
                            crate::analytics::aggregate::prune_hours(
                                txn,
                                now,
                                retention,
                                SWEEP_BATCH_LINKS,
                            )
                        })
                        .await;
                    match pruned {
                        Ok(n) if n > 0 => {
                            metrics::counter!("control_stats_hours_pruned_total")
                                .increment(n as u64);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning hourly stats failed"),
                    }
                    break;
                }
                Ok(n) => {
                    metrics::counter!("control_links_expired_total").increment(n as u64);
                    tracing::info!(links = n, "expired links");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expiry sweep failed");
                    break;
                }
            }
        }
    }
}

/// Reads up to `limit` changes after `after`; `Err(snapshot seq)` when they
/// were pruned and the subscriber must load a snapshot first.
fn read_changes(
    state: &AppState,
    after: Seq,
    limit: usize,
) -> StoreResult<Result<Vec<Change>, ()>> {
    let mut out = Ok(Vec::new());
    state.backend.read(|txn| {
        if txn.pruned_through()? > after {
            out = Err(());
            return Ok(());
        }
        let mut changes = Vec::new();
        for (seq, bytes) in txn.changes_after(after, limit)? {
            let doc = ChangeDoc::decode(&bytes)?;
            changes.push(Change {
                seq,
                code: doc.code,
                record: doc.record,
            });
        }
        out = Ok(changes);
        Ok(())
    })?;
    Ok(out)
}

pub async fn stream_changes(
    state: Arc<AppState>,
    mut after: Seq,
    tx: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    let id = state.streams.join(after);
    let _guard = SubscriberGuard {
        state: Arc::clone(&state),
        id,
    };
    let mut committed = state.committed.clone();
    let mut snapshots = state.snapshot.subscribe();
    let mut shutdown = state.shutdown.subscribe();
    let announced = *snapshots.borrow_and_update();
    if announced.0 > 0
        && announced > after
        && tx
            .send(Ok(Message::Snapshot {
                seq: announced,
                required: false,
            }
            .to_line()))
            .await
            .is_err()
    {
        return;
    }
    // The first time the subscriber is caught up it is told so at once: a
    // proxy starting up answers only once it is current (or has waited out
    // its `catch_up_wait_ms`), and under steady writes no idle heartbeat
    // would ever come.
    let mut told_caught_up = false;
    loop {
        let worker = Arc::clone(&state);
        let limit = state.config.stream_batch_max;
        let read = tokio::task::spawn_blocking(move || read_changes(&worker, after, limit)).await;
        let message = match read {
            Ok(Ok(Ok(changes))) if changes.is_empty() => None,
            Ok(Ok(Ok(changes))) => {
                after = changes.last().map_or(after, |c| c.seq);
                let newest = *state.committed.borrow();
                if newest.seq == after {
                    // Commit to hand-off: how stale a caught-up subscriber is.
                    metrics::histogram!("control_publish_lag_seconds")
                        .record(newest.at.elapsed().as_secs_f64());
                }
                Some(Message::Changes { changes })
            }
            Ok(Ok(Err(()))) => {
                let seq = *state.snapshot.borrow();
                if seq <= after {
                    // The log was pruned past the newest snapshot we know of:
                    // wait for the next one rather than send a useless reset.
                    tokio::time::sleep(HEARTBEAT_INTERVAL).await;
                    continue;
                }
                after = seq;
                Some(Message::Snapshot {
                    seq,
                    required: true,
                })
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "change stream read failed");
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "change stream task failed");
                return;
            }
        };
        if let Some(message) = message {
            if tx.send(Ok(message.to_line())).await.is_err() {
                return;
            }
            state.streams.sent(id, after);
            continue;
        }
        // Caught up: wait for a commit, a snapshot, the heartbeat or shutdown.
        if *shutdown.borrow() {
            return;
        }
        if !told_caught_up {
            told_caught_up = true;
            if tx
                .send(Ok(Message::Heartbeat { seq: after }.to_line()))
                .await
                .is_err()
            {
                return;
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = committed.changed() => if changed.is_err() { return },
            changed = snapshots.changed() => {
                if changed.is_err() { return }
                let seq = *snapshots.borrow_and_update();
                if tx.send(Ok(Message::Snapshot { seq, required: false }.to_line())).await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {
                let seq = committed.borrow().seq;
                if tx.send(Ok(Message::Heartbeat { seq }.to_line())).await.is_err() {
                    return;
                }
            }
        }
    }
}

struct SubscriberGuard {
    state: Arc<AppState>,
    id: u64,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.state.streams.leave(self.id);
        metrics::gauge!("control_stream_subscribers").decrement(1.0);
    }
}
