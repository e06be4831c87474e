//! Keeping proxies current: full snapshots built in the background, and a
//! change stream resumable by sequence number.
//!
//! The stream is `GET /internal/v1/changes?after=SEQ`, a long-lived response of
//! newline-delimited JSON messages (see [`Message`]). It is not part of the
//! public API: it lives under `/internal/`, is absent from the OpenAPI
//! document, and needs the internal token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shortline_store::{Change, Seq, SnapshotStats, SnapshotWriter};
use tokio::sync::mpsc;

use crate::db::{Space, StoreResult};
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
    let stats = writer.finish()?;
    Ok((seq, stats))
}

/// Whether the newest snapshot should be replaced: enough changes since it,
/// or changes older than `snapshot_age_max_ms`. Rebuilding reads every link,
/// so a steady trickle of writes must not cause a rebuild per tick; proxies
/// carry the changes in their overlays meanwhile.
fn due(state: &AppState, newest: Option<(Seq, std::time::SystemTime)>, committed: Seq) -> bool {
    let Some((seq, written)) = newest else {
        return true;
    };
    if seq >= committed {
        return false;
    }
    let pending = committed.0 - seq.0;
    let age = written.elapsed().unwrap_or_default();
    pending >= state.config.snapshot_changes_min
        || age >= Duration::from_millis(state.config.snapshot_age_max_ms)
}

/// Builds a snapshot when one is due (or, with `force`, whenever the log has
/// moved past the newest one), removes old files, prunes the change log and
/// announces the snapshot. Returns its sequence.
pub fn build_snapshot(state: &AppState, force: bool) -> anyhow::Result<Option<Seq>> {
    let dir = state.config.snapshot_dir();
    std::fs::create_dir_all(&dir)?;
    let newest = snapshot_files(&dir).into_iter().next().map(|(seq, path)| {
        let written = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        (seq, written)
    });
    let committed = state.committed.borrow().seq;
    if let Some((seq, _)) = newest {
        state
            .snapshot
            .send_if_modified(|cur| std::mem::replace(cur, seq) != seq);
    }
    let wanted = if force {
        newest.is_none_or(|(seq, _)| seq < committed)
    } else {
        due(state, newest, committed)
    };
    if !wanted {
        return Ok(None);
    }
    let started = Instant::now();
    let (seq, stats) = write_all_links(state, &dir)?;
    let seconds = started.elapsed().as_secs_f64();
    metrics::histogram!("control_snapshot_build_seconds").record(seconds);
    metrics::gauge!("control_snapshot_size_bytes").set(stats.file_size_bytes as f64);
    metrics::gauge!("control_snapshot_links").set(stats.record_count as f64);
    metrics::gauge!("control_snapshot_sequence").set(seq.0 as f64);
    tracing::info!(
        seq = seq.0,
        links = stats.record_count,
        bytes = stats.file_size_bytes,
        seconds,
        "built snapshot"
    );
    for (_, old) in snapshot_files(&dir)
        .into_iter()
        .skip(state.config.snapshot_keep)
    {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(path = %old.display(), error = %e, "cannot remove old snapshot");
        }
    }
    // Keep `change_log_keep` changes behind the snapshot, counted through
    // the log: sequences are not counts (FoundationDB's are commit
    // versions, a million a second).
    let keep = state.config.change_log_keep;
    let behind = state.backend.read(|txn| txn.change_behind(seq, keep))?;
    if let Some(prune_through) = behind {
        let removed = state.backend.prune_changes(prune_through)?;
        metrics::counter!("control_changes_pruned_total").increment(removed);
    }
    state.snapshot.send_replace(seq);
    Ok(Some(seq))
}

/// Builds snapshots every `snapshot_interval_ms` until the process ends.
pub async fn snapshot_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(state.config.snapshot_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let worker = Arc::clone(&state);
        match tokio::task::spawn_blocking(move || build_snapshot(&worker, false)).await {
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
    let _guard = SubscriberGuard;
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

struct SubscriberGuard;

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        metrics::gauge!("control_stream_subscribers").decrement(1.0);
    }
}
