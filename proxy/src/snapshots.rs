//! Finding, loading and keeping snapshot files on the proxy's side.
//!
//! A snapshot found on disk at start-up is opened without reading its
//! blocks (opening a table of a hundred million links costs the same as
//! one of a thousand) and checked block by block in the background while
//! the proxy answers; a lookup checks the blocks it reads itself first. A
//! snapshot about to replace the one serving is checked whole before.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use shortline_store::files::{chain, delta_file_name, list_deltas};
use shortline_store::{OpenError, Seq, Snapshot, View};

use crate::metrics::Metrics;

pub use shortline_store::files::{file_name, list};

/// Opens a snapshot, every block checked, logging and counting a refusal.
pub fn open_checked(path: &Path, metrics: &Metrics) -> Option<Snapshot> {
    refused(path, metrics, Snapshot::open_verified(path))
}

fn refused(
    path: &Path,
    metrics: &Metrics,
    opened: Result<Snapshot, OpenError>,
) -> Option<Snapshot> {
    match opened {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            metrics.snapshots_rejected.fetch_add(1, Relaxed);
            tracing::error!(path = %path.display(), error = %e, "refusing snapshot file; keeping the current table");
            None
        }
    }
}

/// The newest snapshot in any of `dirs` that opens cleanly, its blocks
/// left for [`verify_in_background`].
pub fn newest_valid(dirs: &[PathBuf], metrics: &Metrics) -> Option<(Snapshot, PathBuf)> {
    let mut candidates: Vec<(Seq, PathBuf)> = dirs.iter().flat_map(|d| list(d)).collect();
    candidates.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    candidates.into_iter().find_map(|(_, path)| {
        refused(&path, metrics, Snapshot::open(&path)).map(|snapshot| (snapshot, path))
    })
}

/// The chain of delta segments over `base` found in `dirs`, each checked
/// whole (deltas are small; the base is checked in the background). The
/// chain stops before the first delta that does not open or is not what
/// its name says.
pub fn deltas_over(base: &Snapshot, dirs: &[PathBuf], metrics: &Metrics) -> Vec<Snapshot> {
    let files: Vec<_> = dirs.iter().flat_map(|d| list_deltas(d)).collect();
    let mut out = Vec::new();
    for delta in chain(base.base_id(), &files) {
        let Some(opened) = open_checked(&delta.path, metrics) else {
            break;
        };
        if opened.delta_of() != Some(delta.of) || opened.sequence() != delta.seq {
            metrics.snapshots_rejected.fetch_add(1, Relaxed);
            tracing::error!(path = %delta.path.display(), "delta segment holds something other than its name says; refused, with the deltas after it");
            break;
        }
        out.push(opened);
    }
    out
}

/// The file name a segment is kept under.
#[must_use]
pub fn segment_file_name(segment: &Snapshot) -> String {
    match segment.delta_of() {
        Some(of) => delta_file_name(of, segment.sequence()),
        None => file_name(segment.sequence()),
    }
}

/// Whether the installed snapshot was found damaged, and a way to wait for it.
#[derive(Debug, Default)]
pub struct Damage {
    notify: tokio::sync::Notify,
}

impl Damage {
    /// Resolves once damage is reported (at once if it was reported before
    /// and not yet waited for).
    pub async fn reported(&self) {
        self.notify.notified().await;
    }

    fn report(&self) {
        self.notify.notify_one();
    }
}

/// Checks every block of `snapshot` (read from `path`) on a thread of its
/// own. Damage is logged with the file and the block, shown by
/// `proxy_snapshot_damaged`, and reported to `damage`, so the subscriber
/// fetches a good copy from control.
pub fn verify_in_background(
    snapshot: Arc<Snapshot>,
    path: PathBuf,
    metrics: Arc<Metrics>,
    damage: Arc<Damage>,
) {
    let spawned = std::thread::Builder::new()
        .name("snapshot-verify".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            match snapshot.verify() {
                Ok(()) => tracing::info!(
                    path = %path.display(),
                    blocks = snapshot.checked_blocks().1,
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot checked"
                ),
                Err(e) => {
                    metrics.snapshots_rejected.fetch_add(1, Relaxed);
                    metrics.snapshot_damaged.store(1, Relaxed);
                    tracing::error!(
                        path = %path.display(),
                        error = %e,
                        "the snapshot being served is damaged: lookups that read the damaged block answer 503 until a good copy is fetched from the control plane"
                    );
                    damage.report();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the snapshot check; blocks are checked as lookups read them");
    }
}

/// Records what the installed segments are, for metrics; `installed` new
/// segment files were installed.
pub fn note_installed(view: &View, installed: u64, metrics: &Metrics) {
    let newest = view.deltas().last().unwrap_or(view.base());
    metrics.snapshot_sequence.store(view.covered().0, Relaxed);
    metrics
        .snapshot_created_unix_ms
        .store(newest.info().created_at_unix_ms, Relaxed);
    metrics.snapshot_links.store(view.base().len(), Relaxed);
    metrics
        .snapshot_deltas
        .store(view.deltas().len() as u64, Relaxed);
    metrics.snapshots_installed.fetch_add(installed, Relaxed);
    metrics
        .snapshot_damaged
        .store(u64::from(view.damage().is_some()), Relaxed);
}

/// Removes all but the newest `keep` bases in `dir`, and every delta that
/// is not one of `view`'s.
pub fn prune(dir: &Path, keep: usize, view: &View) {
    let current: Vec<String> = view.deltas().iter().map(|d| segment_file_name(d)).collect();
    let deltas = list_deltas(dir).into_iter().filter_map(|delta| {
        let name = delta.path.file_name()?.to_string_lossy().into_owned();
        (!current.contains(&name)).then_some(delta.path)
    });
    for old in deltas {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(path = %old.display(), error = %e, "cannot remove old delta segment");
        }
    }
    for (old, e) in shortline_store::files::prune(dir, keep) {
        tracing::warn!(path = %old.display(), error = %e, "cannot remove old snapshot");
    }
}
