//! The live table: the current snapshot plus an overlay of newer changes,
//! swapped atomically as one [`View`].

use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::reader::Snapshot;
use crate::record::{LinkRecord, LinkView, Seq};

type OverlayMap = imbl::GenericHashMap<
    Box<str>,
    OverlayEntry,
    Xxh3DefaultBuilder,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// One committed change to one code: an upsert, or a delete when `record` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Change {
    pub seq: Seq,
    pub code: crate::Code,
    pub record: Option<LinkRecord>,
}

#[derive(Debug, Clone)]
struct OverlayEntry {
    seq: Seq,
    record: Option<Arc<LinkRecord>>,
}

/// An immutable view of the table: a snapshot and the overlay of changes newer
/// than it. Readers hold one for the length of a request.
#[derive(Debug)]
pub struct View {
    snapshot: Arc<Snapshot>,
    overlay: OverlayMap,
    applied: Seq,
}

impl View {
    /// Looks `code` up, overlay first. No lock and no allocation.
    #[inline]
    #[must_use]
    pub fn get(&self, code: &[u8]) -> Option<LinkView<'_>> {
        if !self.overlay.is_empty() {
            // Codes are ASCII; anything else cannot be in the overlay.
            if let Ok(text) = std::str::from_utf8(code)
                && let Some(entry) = self.overlay.get(text)
            {
                return entry.record.as_deref().map(LinkRecord::view);
            }
        }
        self.snapshot.get(code)
    }

    /// The newest change this view includes.
    #[must_use]
    pub fn sequence(&self) -> Seq {
        self.applied
    }

    /// The snapshot under the overlay.
    #[must_use]
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Every live record: the snapshot's, minus what the overlay replaces or
    /// deletes, plus the overlay's, one at a time (for streaming a view into
    /// a new snapshot). An error when a record of the snapshot cannot be read
    /// (a damaged block), never a table with links missing.
    pub fn records(&self) -> impl Iterator<Item = Result<LinkRecord, crate::OpenError>> + '_ {
        let snapshot = self.snapshot.iter().filter_map(|link| {
            let link = match link {
                Ok(link) => link,
                Err(e) => return Some(Err(e)),
            };
            let replaced =
                std::str::from_utf8(link.code()).is_ok_and(|code| self.overlay.contains_key(code));
            if replaced {
                return None;
            }
            Some(link.to_record().ok_or(crate::OpenError::Layout(
                "record holds a bad code or target",
            )))
        });
        let overlay = self
            .overlay
            .values()
            .filter_map(|entry| entry.record.as_deref().cloned().map(Ok));
        snapshot.chain(overlay)
    }

    /// The overlay as changes, oldest first: what this view holds beyond
    /// its snapshot, for a journal that must outlive the process.
    #[must_use]
    pub fn overlay_changes(&self) -> Vec<Change> {
        let mut changes: Vec<Change> = self
            .overlay
            .iter()
            .filter_map(|(code, entry)| {
                Some(Change {
                    seq: entry.seq,
                    code: crate::Code::parse(code).ok()?,
                    record: entry.record.as_deref().cloned(),
                })
            })
            .collect();
        changes.sort_by_key(|change| change.seq);
        changes
    }

    /// Number of codes whose newest state is in the overlay.
    #[must_use]
    pub fn overlay_len(&self) -> usize {
        self.overlay.len()
    }
}

/// Why a snapshot was not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    #[error("snapshot at sequence {offered} is older than the installed one at {installed}")]
    Older { offered: u64, installed: u64 },
}

/// The table the proxy answers from.
///
/// Reads ([`LiveTable::load`]) are lock-free. Writes ([`LiveTable::apply`],
/// [`LiveTable::install`]) are serialised among themselves by a mutex that
/// readers never touch, and publish a whole new [`View`] at once.
#[derive(Debug)]
pub struct LiveTable {
    current: ArcSwap<View>,
    writer: Mutex<()>,
}

impl LiveTable {
    #[must_use]
    pub fn new(snapshot: Snapshot) -> Self {
        let applied = snapshot.sequence();
        let view = View {
            snapshot: Arc::new(snapshot),
            overlay: OverlayMap::default(),
            applied,
        };
        Self {
            current: ArcSwap::from_pointee(view),
            writer: Mutex::new(()),
        }
    }

    /// The current view.
    #[inline]
    pub fn load(&self) -> Guard<Arc<View>> {
        self.current.load()
    }

    /// The current view, as an owned handle that may be kept.
    #[must_use]
    pub fn load_full(&self) -> Arc<View> {
        self.current.load_full()
    }

    /// Applies committed changes in stream order. A change below the sequence
    /// already held for its code (or covered by the snapshot) is skipped, so
    /// replaying a stream is harmless. Returns the view's new sequence.
    pub fn apply<I: IntoIterator<Item = Change>>(&self, changes: I) -> Seq {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load();
        let mut overlay = old.overlay.clone();
        let mut applied = old.applied;
        let covered = old.snapshot.sequence();
        for change in changes {
            applied = applied.max(change.seq);
            if change.seq <= covered {
                continue;
            }
            let key: &str = change.code.as_str();
            // Changes of one commit may share a sequence; within it the
            // stream's order holds, so only strictly older entries are skipped.
            if overlay.get(key).is_some_and(|e| e.seq > change.seq) {
                continue;
            }
            overlay.insert(
                key.into(),
                OverlayEntry {
                    seq: change.seq,
                    record: change.record.map(Arc::new),
                },
            );
        }
        let snapshot = Arc::clone(&old.snapshot);
        self.current.store(Arc::new(View {
            snapshot,
            overlay,
            applied,
        }));
        applied
    }

    /// Installs a newer snapshot and drops the overlay entries it covers.
    pub fn install(&self, snapshot: Snapshot) -> Result<Seq, InstallError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load();
        let installed = old.snapshot.sequence();
        let offered = snapshot.sequence();
        if offered < installed {
            return Err(InstallError::Older {
                offered: offered.0,
                installed: installed.0,
            });
        }
        let overlay: OverlayMap = old
            .overlay
            .iter()
            .filter(|(_, entry)| entry.seq > offered)
            .map(|(code, entry)| (code.clone(), entry.clone()))
            .collect();
        let applied = old.applied.max(offered);
        self.current.store(Arc::new(View {
            snapshot: Arc::new(snapshot),
            overlay,
            applied,
        }));
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Code, LinkId, Target, encode_snapshot};

    fn record(code: &str, target: &str) -> LinkRecord {
        LinkRecord::new(
            Code::parse(code).unwrap(),
            Target::parse(target).unwrap(),
            LinkId(1),
        )
    }

    fn upsert(seq: u64, code: &str, target: &str) -> Change {
        Change {
            seq: Seq(seq),
            code: Code::parse(code).unwrap(),
            record: Some(record(code, target)),
        }
    }

    #[test]
    fn overlay_wins_until_a_snapshot_covers_it() {
        let base = encode_snapshot(Seq(1), [record("a", "https://one/")]).unwrap();
        let table = LiveTable::new(Snapshot::from_bytes(base).unwrap());
        table.apply([upsert(2, "a", "https://two/"), upsert(3, "b", "https://b/")]);
        table.apply([Change {
            seq: Seq(4),
            code: Code::parse("b").unwrap(),
            record: None,
        }]);
        let view = table.load();
        assert_eq!(view.get(b"a").unwrap().target(), b"https://two/");
        assert_eq!(view.get(b"b"), None, "a tombstone hides the code");
        assert_eq!(view.sequence(), Seq(4));
        assert_eq!(view.overlay_len(), 2);

        let next = encode_snapshot(
            Seq(3),
            [record("a", "https://two/"), record("b", "https://b/")],
        )
        .unwrap();
        table.install(Snapshot::from_bytes(next).unwrap()).unwrap();
        let view = table.load();
        assert_eq!(
            view.overlay_len(),
            1,
            "only the delete at 4 is newer than the snapshot"
        );
        assert_eq!(view.get(b"b"), None);
        assert_eq!(view.get(b"a").unwrap().target(), b"https://two/");
        assert_eq!(
            view.overlay_changes(),
            [Change {
                seq: Seq(4),
                code: Code::parse("b").unwrap(),
                record: None,
            }],
            "the overlay as changes: what a journal keeps past the snapshot"
        );
        let mut merged: Vec<LinkRecord> = view.records().collect::<Result<_, _>>().unwrap();
        merged.sort_by(|x, y| x.code.cmp(&y.code));
        assert_eq!(
            merged,
            [record("a", "https://two/")],
            "b is deleted, a replaced"
        );
    }

    #[test]
    fn stale_changes_and_older_snapshots_are_ignored() {
        let table = LiveTable::new(Snapshot::empty());
        table.apply([upsert(5, "a", "https://new/")]);
        table.apply([upsert(4, "a", "https://old/")]);
        assert_eq!(table.load().get(b"a").unwrap().target(), b"https://new/");
        let newer = encode_snapshot(Seq(6), std::iter::empty::<LinkRecord>()).unwrap();
        table.install(Snapshot::from_bytes(newer).unwrap()).unwrap();
        let older = encode_snapshot(Seq(2), std::iter::empty::<LinkRecord>()).unwrap();
        assert_eq!(
            table.install(Snapshot::from_bytes(older).unwrap()),
            Err(InstallError::Older {
                offered: 2,
                installed: 6
            })
        );
    }
}
