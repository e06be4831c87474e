//! Where snapshot files live: one folder, files named by the sequence they
//! cover, so the newest is found by name without opening anything. Both the
//! control plane (which writes them) and the proxy (which reads them and
//! keeps its own copies) use this convention.

use std::path::{Path, PathBuf};

use crate::record::Seq;

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
