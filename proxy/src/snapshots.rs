//! Finding, loading and keeping snapshot files on the proxy's side.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use shortline_store::{Seq, Snapshot};

use crate::metrics::Metrics;

pub use shortline_store::files::{file_name, list};

/// Opens a snapshot, logging and counting a refusal.
pub fn open_checked(path: &Path, metrics: &Metrics) -> Option<Snapshot> {
    match Snapshot::open(path) {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            metrics.snapshots_rejected.fetch_add(1, Relaxed);
            tracing::error!(path = %path.display(), error = %e, "refusing snapshot file; keeping the current table");
            None
        }
    }
}

/// The newest snapshot in any of `dirs` that opens cleanly.
pub fn newest_valid(dirs: &[PathBuf], metrics: &Metrics) -> Option<Snapshot> {
    let mut candidates: Vec<(Seq, PathBuf)> = dirs.iter().flat_map(|d| list(d)).collect();
    candidates.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    candidates
        .into_iter()
        .find_map(|(_, path)| open_checked(&path, metrics))
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
}

/// Removes all but the newest `keep` files in `dir`.
pub fn prune(dir: &Path, keep: usize) {
    for (old, e) in shortline_store::files::prune(dir, keep) {
        tracing::warn!(path = %old.display(), error = %e, "cannot remove old snapshot");
    }
}
