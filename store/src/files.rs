//! Where snapshot files live: one folder, a base named by the sequence it
//! covers and a delta segment by its base, its parent and its sequence, so
//! the newest base and the chain of deltas over it are found by name
//! without opening anything. Both the control plane (which writes them) and
//! the proxy (which reads them and keeps its own copies) use this
//! convention.

use std::path::{Path, PathBuf};

use crate::format::{BaseId, DeltaOf};
use crate::record::Seq;

/// The sequence a base's file name says, if `name` is one as written here.
#[must_use]
pub fn parse_base_name(name: &str) -> Option<Seq> {
    let seq = Seq(name
        .strip_prefix("links-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()?);
    (file_name(seq) == name).then_some(seq)
}

/// Whether `name` is a segment file name as written here (a base or a
/// delta): what may be asked for by name, never a path.
#[must_use]
pub fn is_segment_name(name: &str) -> bool {
    parse_base_name(name).is_some() || parse_delta_name(name).is_some()
}

/// A delta segment's file name:
/// `delta-<base sequence>-<base seed, hex>-<parent>-<sequence>.snap`.
#[must_use]
pub fn delta_file_name(of: DeltaOf, seq: Seq) -> String {
    format!(
        "delta-{:020}-{:016x}-{:020}-{:020}.snap",
        of.base.sequence.0, of.base.seed, of.parent.0, seq.0
    )
}

/// What a delta file name says, if it is one.
#[must_use]
pub fn parse_delta_name(name: &str) -> Option<(DeltaOf, Seq)> {
    let mut parts = name
        .strip_prefix("delta-")?
        .strip_suffix(".snap")?
        .split('-');
    let base = parts.next()?.parse().ok()?;
    let seed = u64::from_str_radix(parts.next()?, 16).ok()?;
    let parent = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let of = DeltaOf {
        base: BaseId {
            sequence: Seq(base),
            seed,
        },
        parent: Seq(parent),
    };
    // The name must be the one this module writes, so no two names mean
    // one delta.
    (delta_file_name(of, Seq(seq)) == name).then_some((of, Seq(seq)))
}

/// One delta file found in a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaFile {
    pub of: DeltaOf,
    pub seq: Seq,
    pub path: PathBuf,
}

/// Delta files in `dir`, in no particular order.
#[must_use]
pub fn list_deltas(dir: &Path) -> Vec<DeltaFile> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (of, seq) = parse_delta_name(&name)?;
            Some(DeltaFile {
                of,
                seq,
                path: entry.path(),
            })
        })
        .collect()
}

/// The chain of deltas over `base` that reaches furthest (the fewest
/// deltas among those that reach as far): each starts where the one before
/// it ends, the first where the base does.
#[must_use]
pub fn chain(base: BaseId, deltas: &[DeltaFile]) -> Vec<DeltaFile> {
    let over: Vec<&DeltaFile> = deltas
        .iter()
        .filter(|d| d.of.base == base && d.seq > d.of.parent)
        .collect();
    // Sequences only grow along a chain, so the best chain from each end
    // point is found from the highest end point down.
    let mut ends: Vec<Seq> = over.iter().map(|d| d.of.parent).collect();
    ends.sort_unstable();
    ends.dedup();
    let mut best: std::collections::HashMap<Seq, (Seq, usize, Option<&DeltaFile>)> =
        std::collections::HashMap::new();
    for &end in ends.iter().rev() {
        let mut choice = (end, 0usize, None);
        for delta in over.iter().filter(|d| d.of.parent == end) {
            let (reach, count, _) = best
                .get(&delta.seq)
                .copied()
                .unwrap_or((delta.seq, 0, None));
            if (reach, std::cmp::Reverse(count + 1)) > (choice.0, std::cmp::Reverse(choice.1)) {
                choice = (reach, count + 1, Some(*delta));
            }
        }
        best.insert(end, choice);
    }
    let mut out = Vec::new();
    let mut at = base.sequence;
    while let Some(&(_, _, Some(delta))) = best.get(&at) {
        out.push(delta.clone());
        at = delta.seq;
    }
    out
}

/// The file name of the snapshot covering `seq`: `links-<20 digits>.snap`.
#[must_use]
pub fn file_name(seq: Seq) -> String {
    format!("links-{:020}.snap", seq.0)
}

/// Snapshot files in `dir`, newest first. A missing folder lists nothing;
/// other names are ignored.
#[must_use]
pub fn list(dir: &Path) -> Vec<(Seq, PathBuf)> {
    let mut files: Vec<(Seq, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let seq = name
                .strip_prefix("links-")?
                .strip_suffix(".snap")?
                .parse()
                .ok()?;
            Some((Seq(seq), entry.path()))
        })
        .collect();
    files.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    files
}

/// Removes all but the newest `keep` snapshot files in `dir`, returning the
/// paths that could not be removed with why.
pub fn prune(dir: &Path, keep: usize) -> Vec<(PathBuf, std::io::Error)> {
    list(dir)
        .into_iter()
        .skip(keep)
        .filter_map(|(_, path)| std::fs::remove_file(&path).err().map(|e| (path, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(base: &BaseId, parent: u64, seq: u64) -> DeltaFile {
        let of = DeltaOf {
            base: *base,
            parent: Seq(parent),
        };
        DeltaFile {
            of,
            seq: Seq(seq),
            path: PathBuf::from(delta_file_name(of, Seq(seq))),
        }
    }

    #[test]
    fn delta_names_round_trip_and_chains_reach_furthest() {
        let base = BaseId {
            sequence: Seq(10),
            seed: 0xabc,
        };
        let d = delta(&base, 10, 20);
        assert_eq!(
            parse_delta_name(d.path.to_str().unwrap()),
            Some((d.of, d.seq))
        );
        assert_eq!(
            parse_delta_name("delta-1-2-3-4.snap"),
            None,
            "not canonical"
        );
        assert_eq!(parse_delta_name("links-00000000000000000001.snap"), None);
        let other = BaseId { seed: 1, ..base };
        let files = [
            delta(&base, 10, 20),
            delta(&base, 20, 30),
            delta(&base, 30, 40),
            // A merge of the first two: the same reach in fewer deltas.
            delta(&base, 10, 30),
            // A dead end that reaches less far.
            delta(&base, 20, 35),
            delta(&other, 10, 99),
            delta(&base, 50, 60),
        ];
        let seqs: Vec<u64> = chain(base, &files).iter().map(|d| d.seq.0).collect();
        assert_eq!(seqs, [30, 40]);
        assert!(chain(other, &files[..5]).is_empty());
    }

    #[test]
    fn lists_newest_first_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        for seq in [3, 10, 7] {
            std::fs::write(dir.path().join(file_name(Seq(seq))), b"x").unwrap();
        }
        std::fs::write(dir.path().join("links-x.snap"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let seqs: Vec<u64> = list(dir.path()).iter().map(|(s, _)| s.0).collect();
        assert_eq!(seqs, [10, 7, 3]);
        assert!(prune(dir.path(), 2).is_empty());
        let seqs: Vec<u64> = list(dir.path()).iter().map(|(s, _)| s.0).collect();
        assert_eq!(seqs, [10, 7]);
        assert!(list(&dir.path().join("missing")).is_empty());
    }
}
