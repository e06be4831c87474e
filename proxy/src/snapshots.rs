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

use shortline_store::{OpenError, Seq, Snapshot};

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

/// Records what the installed snapshot is, for metrics.
pub fn note_installed(snapshot: &Snapshot, metrics: &Arc<Metrics>) {
    let info = snapshot.info();
    metrics.snapshot_sequence.store(info.sequence.0, Relaxed);
    metrics
        .snapshot_created_unix_ms
        .store(info.created_at_unix_ms, Relaxed);
    metrics.snapshot_links.store(info.record_count, Relaxed);
    metrics.snapshots_installed.fetch_add(1, Relaxed);
    metrics
        .snapshot_damaged
        .store(u64::from(snapshot.damage().is_some()), Relaxed);
}

/// Removes all but the newest `keep` files in `dir`.
pub fn prune(dir: &Path, keep: usize) {
    for (old, e) in shortline_store::files::prune(dir, keep) {
        tracing::warn!(path = %old.display(), error = %e, "cannot remove old snapshot");
    }
}
