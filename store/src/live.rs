//! The live table: the current snapshot plus an overlay of newer changes,
//! swapped atomically as one [`View`].

use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::format::BaseId;
use crate::reader::{Entry, Snapshot};
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

/// An immutable view of the table: a base snapshot, the delta segments
/// over it, and the overlay of changes newer than the newest segment.
/// Readers hold one for the length of a request.
#[derive(Debug)]
pub struct View {
    base: Arc<Snapshot>,
    /// Delta segments over `base`, oldest first; each starts where the one
    /// before it (or the base) ends.
    deltas: Arc<[Arc<Snapshot>]>,
    overlay: OverlayMap,
    applied: Seq,
}

/// A code's newest state in the layers above a base: its record, or `None`
/// when it was deleted.
pub type Newer = (crate::Code, Option<LinkRecord>);

impl View {
    /// Looks `code` up: the overlay, then the deltas newest first, then the
    /// base. No lock and no allocation.
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
        if self.deltas.is_empty() {
            return self.base.get(code);
        }
        self.get_layered(code)
    }

    /// The lookup through the deltas: the code hashed once with the base's
    /// seed, which the deltas share. Out of line, so the lookup in a table
    /// without deltas compiles as it did before there were any.
    #[inline(never)]
    fn get_layered(&self, code: &[u8]) -> Option<LinkView<'_>> {
        let seed = self.base.hash_seed();
        let hash = crate::format::hash_code(code, seed);
        for delta in self.deltas.iter().rev() {
            let own = if delta.hash_seed() == seed {
                hash
            } else {
                crate::format::hash_code(code, delta.hash_seed())
            };
            if !delta.may_hold(own) {
                continue;
            }
            if let Some(entry) = delta.find_hashed(code, own) {
                return entry.link();
            }
        }
        self.base.find_hashed(code, hash).and_then(Entry::link)
    }

    /// The newest change this view includes.
    #[must_use]
    pub fn sequence(&self) -> Seq {
        self.applied
    }

    /// The newest change the segments (base and deltas) cover; the overlay
    /// holds what is newer.
    #[must_use]
    pub fn covered(&self) -> Seq {
        self.deltas
            .last()
            .map_or_else(|| self.base.sequence(), |delta| delta.sequence())
    }

    /// The base snapshot.
    #[must_use]
    pub fn base(&self) -> &Arc<Snapshot> {
        &self.base
    }

    /// The delta segments over the base, oldest first.
    #[must_use]
    pub fn deltas(&self) -> &[Arc<Snapshot>] {
        &self.deltas
    }

    /// Every segment, the base first.
    pub fn segments(&self) -> impl Iterator<Item = &Arc<Snapshot>> {
        std::iter::once(&self.base).chain(self.deltas.iter())
    }

    /// The first damaged block found so far in any segment.
    #[must_use]
    pub fn damage(&self) -> Option<crate::BlockDamage> {
        self.segments().find_map(|segment| segment.damage())
    }

    /// Whether a layer above the base's, from the delta `from` on (the
    /// overlay always), mentions `code`.
    fn newer_has(&self, code: &[u8], from: usize) -> bool {
        std::str::from_utf8(code).is_ok_and(|text| self.overlay.contains_key(text))
            || self.deltas[from..].iter().any(|d| d.find(code).is_some())
    }

    /// Each code the deltas and the overlay change, once, in its newest
    /// state: what a delta replacing all of them holds. Memory does not
    /// grow with the base: a code is kept only if no newer layer has it.
    pub fn newer_than_base(&self) -> impl Iterator<Item = Result<Newer, crate::OpenError>> + '_ {
        let overlay = self.overlay.iter().map(|(code, entry)| {
            let code = crate::Code::key(code)
                .map_err(|_| crate::OpenError::Layout("overlay holds a bad code"))?;
            Ok((code, entry.record.as_deref().cloned()))
        });
        let deltas = self
            .deltas
            .iter()
            .enumerate()
            .rev()
            .flat_map(move |(i, delta)| {
                delta.entries().filter_map(move |entry| {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => return Some(Err(e)),
                    };
                    if self.newer_has(entry.code(), i + 1) {
                        return None;
                    }
                    Some(owned(entry))
                })
            });
        overlay.chain(deltas)
    }

    /// Writes [`View::newer_than_base`] as one delta segment over the base,
    /// covering `seq`, into `dir` under its file name: a merge of the
    /// deltas (and the overlay) whose cost follows the changes.
    pub fn write_newer_than_base(
        &self,
        dir: &std::path::Path,
        seq: Seq,
    ) -> Result<(std::path::PathBuf, crate::SnapshotStats), crate::WriteError> {
        let of = crate::DeltaOf {
            base: self.base.base_id(),
            parent: self.base.sequence(),
        };
        let path = dir.join(crate::files::delta_file_name(of, seq));
        let mut writer = crate::SnapshotWriter::create_delta(&path, seq, of)?;
        for newer in self.newer_than_base() {
            let (code, record) = newer?;
            writer.push_change(&code, record.as_ref())?;
        }
        Ok((path, writer.finish()?))
    }

    /// Every live record: the base's, minus what a newer layer replaces or
    /// deletes, plus the newer layers' own, one at a time (for streaming a
    /// view into a new base). An error when a record of a segment cannot be
    /// read (a damaged block), never a table with links missing.
    pub fn records(&self) -> impl Iterator<Item = Result<LinkRecord, crate::OpenError>> + '_ {
        let base = self.base.entries().filter_map(|entry| match entry {
            Ok(entry) if self.newer_has(entry.code(), 0) => None,
            Ok(entry) => owned(entry).map(|(_, record)| record).transpose(),
            Err(e) => Some(Err(e)),
        });
        let newer = self
            .newer_than_base()
            .filter_map(|newer| newer.map(|(_, record)| record).transpose());
        base.chain(newer)
    }

    /// The overlay as changes, oldest first: what this view holds beyond
    /// its segments, for a journal that must outlive the process.
    #[must_use]
    pub fn overlay_changes(&self) -> Vec<Change> {
        let mut changes: Vec<Change> = self
            .overlay
            .iter()
            .filter_map(|(code, entry)| {
                Some(Change {
                    seq: entry.seq,
                    code: crate::Code::key(code).ok()?,
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

/// A segment's entry as an owned code and record.
fn owned(entry: Entry<'_>) -> Result<Newer, crate::OpenError> {
    let bad = || crate::OpenError::Layout("record holds a bad code or target");
    let code = std::str::from_utf8(entry.code())
        .ok()
        .and_then(|code| crate::Code::key(code).ok())
        .ok_or_else(bad)?;
    let record = match entry {
        Entry::Link(view) => Some(view.to_record().ok_or_else(bad)?),
        Entry::Deleted(_) => None,
    };
    Ok((code, record))
}

/// Checks a delta whole and builds its filter before it serves: a lookup
/// that passed a damaged delta would find an older state of the code
/// beneath it.
fn prepare(delta: &Snapshot) -> Result<(), InstallError> {
    delta.prepare_filter().map_err(|e| InstallError::Damaged {
        sequence: delta.sequence().0,
        reason: e.to_string(),
    })
}

/// Why a segment was not installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    #[error("segment at sequence {offered} is not newer than the table, which covers {installed}")]
    Older { offered: u64, installed: u64 },
    #[error("delta segment is over base {offered}, but the table's base is {installed}")]
    OtherBase { offered: BaseId, installed: BaseId },
    #[error("segment at sequence {sequence} follows a base but is not a delta")]
    NotDelta { sequence: u64 },
    #[error("delta segment at sequence {sequence} is damaged: {reason}")]
    Damaged { sequence: u64, reason: String },
    #[error(
        "delta segment starts after sequence {parent}, where no segment of the table ends (base {base}, deltas ending at {ends:?}): a segment is missing"
    )]
    Gap {
        parent: u64,
        base: u64,
        ends: Vec<u64>,
    },
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
    pub fn new(base: Snapshot) -> Self {
        let applied = base.sequence();
        let view = View {
            base: Arc::new(base),
            deltas: Arc::new([]),
            overlay: OverlayMap::default(),
            applied,
        };
        Self {
            current: ArcSwap::from_pointee(view),
            writer: Mutex::new(()),
        }
    }

    /// A table of a base and its deltas, oldest first, each checked to
    /// follow the one before.
    pub fn with_deltas(base: Snapshot, deltas: Vec<Snapshot>) -> Result<Self, InstallError> {
        let table = Self::new(base);
        let view = table.load_full();
        table.install_chain(
            Arc::clone(&view.base),
            deltas.into_iter().map(Arc::new).collect(),
        )?;
        Ok(table)
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

    fn write(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies committed changes in stream order. A change below the sequence
    /// already held for its code (or covered by the segments) is skipped, so
    /// replaying a stream is harmless. Returns the view's new sequence.
    pub fn apply<I: IntoIterator<Item = Change>>(&self, changes: I) -> Seq {
        let _writer = self.write();
        let old = self.current.load();
        let mut overlay = old.overlay.clone();
        let mut applied = old.applied;
        let covered = old.covered();
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
        self.current.store(Arc::new(View {
            base: Arc::clone(&old.base),
            deltas: Arc::clone(&old.deltas),
            overlay,
            applied,
        }));
        applied
    }

    /// Replaces the base and deltas at once, reusing the segments already
    /// held: how a proxy moves to the chain control publishes, whether it
    /// lacks one delta, many, a merged one or a new base, or replaces a
    /// damaged segment with a good copy. Each delta must follow the one
    /// before over this base, and the chain must cover at least what the
    /// table did.
    pub fn install_chain(
        &self,
        base: Arc<Snapshot>,
        deltas: Vec<Arc<Snapshot>>,
    ) -> Result<Seq, InstallError> {
        let id = base.base_id();
        let mut end = base.sequence();
        for delta in &deltas {
            prepare(delta)?;
            let of = delta.delta_of().ok_or(InstallError::NotDelta {
                sequence: delta.sequence().0,
            })?;
            if of.base != id {
                return Err(InstallError::OtherBase {
                    offered: of.base,
                    installed: id,
                });
            }
            if of.parent != end {
                return Err(InstallError::Gap {
                    parent: of.parent.0,
                    base: id.sequence.0,
                    ends: vec![end.0],
                });
            }
            end = delta.sequence();
        }
        let _writer = self.write();
        let old = self.current.load();
        let installed = old.covered();
        if end < installed {
            return Err(InstallError::Older {
                offered: end.0,
                installed: installed.0,
            });
        }
        Ok(self.publish(&old, base, deltas.into(), end))
    }

    /// Stores a view of `base` and `deltas`, which cover up to `covered`,
    /// with the overlay entries of `old` that are newer. The caller holds
    /// the writer lock.
    fn publish(
        &self,
        old: &View,
        base: Arc<Snapshot>,
        deltas: Arc<[Arc<Snapshot>]>,
        covered: Seq,
    ) -> Seq {
        let overlay: OverlayMap = old
            .overlay
            .iter()
            .filter(|(_, entry)| entry.seq > covered)
            .map(|(code, entry)| (code.clone(), entry.clone()))
            .collect();
        let applied = old.applied.max(covered);
        self.current.store(Arc::new(View {
            base,
            deltas,
            overlay,
            applied,
        }));
        applied
    }

    /// Installs a segment and drops the overlay entries it covers.
    ///
    /// A base replaces the base and every delta; it must cover at least
    /// what they did. A delta must be over the installed base and start
    /// where the base or one of the deltas ends: it replaces the deltas
    /// after that point (a merged delta replaces the ones it merged), and it
    /// must reach further than they did. The base's pages are not touched.
    pub fn install(&self, segment: Snapshot) -> Result<Seq, InstallError> {
        if segment.delta_of().is_some() {
            prepare(&segment)?;
        }
        let _writer = self.write();
        let old = self.current.load();
        let installed = old.covered();
        let offered = segment.sequence();
        let deltas: Arc<[Arc<Snapshot>]> = match segment.delta_of() {
            None if offered < installed => {
                return Err(InstallError::Older {
                    offered: offered.0,
                    installed: installed.0,
                });
            }
            None => Arc::new([]),
            Some(of) => {
                let base = old.base.base_id();
                if of.base != base {
                    return Err(InstallError::OtherBase {
                        offered: of.base,
                        installed: base,
                    });
                }
                if offered <= installed {
                    return Err(InstallError::Older {
                        offered: offered.0,
                        installed: installed.0,
                    });
                }
                let keep = if of.parent == base.sequence {
                    0
                } else {
                    old.deltas
                        .iter()
                        .position(|d| d.sequence() == of.parent)
                        .map(|i| i + 1)
                        .ok_or_else(|| InstallError::Gap {
                            parent: of.parent.0,
                            base: base.sequence.0,
                            ends: old.deltas.iter().map(|d| d.sequence().0).collect(),
                        })?
                };
                old.deltas[..keep].iter().cloned().collect()
            }
        };
        let segment = Arc::new(segment);
        let (base, deltas) = if segment.delta_of().is_some() {
            let mut chain = deltas.to_vec();
            chain.push(segment);
            (Arc::clone(&old.base), chain.into())
        } else {
            (segment, deltas)
        };
        Ok(self.publish(&old, base, deltas, offered))
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

    fn delta(seq: u64, base: &Snapshot, parent: u64, changes: &[Change]) -> Snapshot {
        let of = crate::DeltaOf {
            base: base.base_id(),
            parent: Seq(parent),
        };
        let entries = changes.iter().map(|c| (&c.code, c.record.as_ref()));
        Snapshot::from_bytes(crate::encode_delta(Seq(seq), of, entries).unwrap()).unwrap()
    }

    #[test]
    fn deltas_install_in_order_over_their_own_base_only() {
        let base = Snapshot::from_bytes(
            encode_snapshot(
                Seq(10),
                [record("a", "https://a/"), record("b", "https://b/")],
            )
            .unwrap(),
        )
        .unwrap();
        let deleted = Change {
            seq: Seq(12),
            code: Code::parse("b").unwrap(),
            record: None,
        };
        let first = delta(12, &base, 10, &[upsert(11, "c", "https://c/"), deleted]);
        let second = delta(15, &base, 12, &[upsert(13, "a", "https://a2/")]);
        let gap = delta(20, &base, 16, &[upsert(17, "d", "https://d/")]);
        let other =
            Snapshot::from_bytes(encode_snapshot(Seq(10), [record("z", "https://z/")]).unwrap())
                .unwrap();
        let foreign = delta(30, &other, 10, &[upsert(30, "y", "https://y/")]);
        let table = LiveTable::new(base);
        table.apply([upsert(16, "e", "https://e/"), upsert(17, "f", "https://f/")]);
        assert_eq!(table.install(first).unwrap(), Seq(17));
        let view = table.load();
        assert_eq!(view.get(b"b"), None, "a tombstone hides the base's link");
        assert_eq!(view.get(b"c").unwrap().target(), b"https://c/");
        assert_eq!(view.get(b"a").unwrap().target(), b"https://a/");
        assert_eq!(view.covered(), Seq(12));
        assert_eq!(view.overlay_len(), 2);
        assert!(matches!(
            table.install(gap),
            Err(InstallError::Gap {
                parent: 16,
                base: 10,
                ..
            })
        ));
        assert!(matches!(
            table.install(foreign),
            Err(InstallError::OtherBase { .. })
        ));
        table.install(second).unwrap();
        let view = table.load();
        assert_eq!(view.get(b"a").unwrap().target(), b"https://a2/");
        assert_eq!(view.deltas().len(), 2);
        assert_eq!(view.overlay_len(), 2, "e and f are newer than the deltas");
        let again = delta(15, view.base(), 12, &[upsert(13, "a", "https://a2/")]);
        assert!(matches!(
            table.install(again),
            Err(InstallError::Older {
                offered: 15,
                installed: 15
            })
        ));
        let mut records: Vec<LinkRecord> = view.records().collect::<Result<_, _>>().unwrap();
        records.sort_by(|x, y| x.code.cmp(&y.code));
        let codes: Vec<&str> = records.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, ["a", "c", "e", "f"]);
        assert_eq!(records[0].target.as_str(), "https://a2/");
    }

    #[test]
    fn a_damaged_delta_is_never_installed() {
        let base =
            Snapshot::from_bytes(encode_snapshot(Seq(1), [record("a", "https://a/")]).unwrap())
                .unwrap();
        let of = crate::DeltaOf {
            base: base.base_id(),
            parent: Seq(1),
        };
        let deleted = Code::parse("a").unwrap();
        let mut bytes = crate::encode_delta(Seq(2), of, [(&deleted, None)]).unwrap();
        let at = crate::format::DELTA_HEADER_SIZE + 3;
        bytes[at] ^= 1;
        let table = LiveTable::new(base);
        let damaged = Snapshot::from_bytes_lazy(bytes).unwrap();
        assert!(matches!(
            table.install(damaged),
            Err(InstallError::Damaged { sequence: 2, .. })
        ));
        assert_eq!(
            table.load().get(b"a").unwrap().target(),
            b"https://a/",
            "the table is as it was"
        );
    }
}
