//! The proxy's own durability: every batch of changes from the stream is
//! appended to a journal in `proxy-cache/` and synced before it is applied,
//! so a link the proxy has answered is on its disk, whatever happens next.
//! At start-up every journal there is replayed over the newest snapshot;
//! when a snapshot covering a journal is installed, it is rewritten to hold
//! only what the snapshot does not.
//!
//! Each process writes a journal of its own, `journal-<id>.log`, and holds
//! an exclusive advisory lock on `journal-<id>.lock` for as long as it
//! runs. In a graceful upgrade the old process goes on applying (and
//! journaling) changes while it drains, and the new one replays the old
//! one's journal as it stands; a journal whose lock is free belonged to a
//! process that has ended, and is adopted: its changes are appended to the
//! live journal, then it is deleted.
//!
//! Layout: an 8-byte magic and the sequence of the snapshot it starts
//! after, then frames of `u32` length, `u64` XXH3 of the payload and the
//! payload (a JSON array of [`Change`]s), all little-endian. A frame that
//! is cut short or does not match its hash ends the journal: it was being
//! written when the process died, so its changes were never applied.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use shortline_store::{Change, Seq};

const MAGIC: &[u8; 8] = b"SLJRNL01";
const HEADER_LEN: u64 = 16;
const FRAME_HEAD_LEN: usize = 12;
/// Largest frame read back; a larger length is damage, not data.
const FRAME_LEN_MAX: usize = 1 << 30;

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is held by another process")]
    Locked(PathBuf),
    #[error("{0} is not a journal (bad magic); move it away to start with an empty one")]
    Foreign(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the journals in a folder held.
#[derive(Debug, Default)]
pub struct Replay {
    /// The newest snapshot sequence any journal starts after.
    pub base: Seq,
    /// Every change of every journal, by sequence.
    pub changes: Vec<Change>,
    /// Bytes of damaged or unfinished tails, ignored.
    pub dropped_bytes: u64,
    /// Journals of processes still running (the old one in an upgrade).
    pub running: usize,
    /// Journals of ended processes, with their locks held: deleted by
    /// [`Replay::retire`] once a new journal holds their changes.
    ended: Vec<(PathBuf, PathBuf, File)>,
}

impl Replay {
    /// Deletes the journals of ended processes that were replayed.
    pub fn retire(self) -> Result<(), JournalError> {
        for (journal, lock_path, lock) in self.ended {
            std::fs::remove_file(&journal).map_err(io(&journal))?;
            drop(lock);
            let _ = std::fs::remove_file(&lock_path);
        }
        Ok(())
    }
}

/// One journal read back.
struct ReadBack {
    base: Seq,
    changes: Vec<Change>,
    dropped_bytes: u64,
}

fn read_journal(path: &Path) -> Result<ReadBack, JournalError> {
    let raw = std::fs::read(path).map_err(io(path))?;
    if raw.len() < HEADER_LEN as usize {
        // Cut short while it was first written: nothing in it was applied.
        return Ok(ReadBack {
            base: Seq(0),
            changes: Vec::new(),
            dropped_bytes: raw.len() as u64,
        });
    }
    if &raw[..8] != MAGIC {
        return Err(JournalError::Foreign(path.to_path_buf()));
    }
    let base = Seq(u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes")));
    let (changes, good) = read_frames(&raw[HEADER_LEN as usize..]);
    Ok(ReadBack {
        base,
        changes,
        dropped_bytes: raw.len() as u64 - HEADER_LEN - good as u64,
    })
}

/// The journals in `dir`: (journal, its lock file), any order.
fn journals(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let id = name.strip_prefix("journal-")?.strip_suffix(".log")?;
            Some((entry.path(), dir.join(format!("journal-{id}.lock"))))
        })
        .collect()
}

/// Takes the lock of a journal if its process has ended.
fn lock_if_ended(lock_path: &Path) -> Result<Option<File>, JournalError> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .map_err(io(lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io(lock_path)(e)),
    }
}

/// Reads every journal in `dir`: of ended processes (their locks taken,
/// for [`Replay::retire`]) and of running ones (read as they stand).
pub fn recover(dir: &Path) -> Result<Replay, JournalError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut replay = Replay::default();
    for (journal, lock_path) in journals(dir) {
        let lock = lock_if_ended(&lock_path)?;
        let read = read_journal(&journal)?;
        replay.base = replay.base.max(read.base);
        replay.changes.extend(read.changes);
        replay.dropped_bytes += read.dropped_bytes;
        match lock {
            Some(lock) => replay.ended.push((journal, lock_path, lock)),
            None => replay.running += 1,
        }
    }
    // Journals overlap; by sequence, the newest state of each code wins.
    replay.changes.sort_by_key(|change| change.seq);
    Ok(replay)
}

/// This process's journal, holding its lock.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    bytes: u64,
    _lock: File,
}

impl Journal {
    /// Starts this process's journal in `dir`, after the snapshot at `base`
    /// and holding `changes` (what the process has applied beyond it).
    pub fn create(dir: &Path, base: Seq, changes: &[Change]) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let id = format!("{:08x}-{nanos:016x}", std::process::id());
        let lock_path = dir.join(format!("journal-{id}.lock"));
        let lock =
            lock_if_ended(&lock_path)?.ok_or_else(|| JournalError::Locked(lock_path.clone()))?;
        let path = dir.join(format!("journal-{id}.log"));
        let file = File::create(&path).map_err(io(&path))?;
        let mut journal = Self {
            dir: dir.to_path_buf(),
            path,
            file,
            bytes: 0,
            _lock: lock,
        };
        journal.rewrite(base, changes)?;
        Ok(journal)
    }

    /// Adopts the journals of processes that have ended since this one
    /// started (the old process of an upgrade): their changes are made
    /// durable here, returned for applying, and the journals deleted.
    pub fn adopt_ended(&mut self) -> Result<Vec<Change>, JournalError> {
        let mut adopted = Vec::new();
        for (journal, lock_path) in journals(&self.dir) {
            if journal == self.path {
                continue;
            }
            let Some(lock) = lock_if_ended(&lock_path)? else {
                continue;
            };
            let mut read = read_journal(&journal)?;
            read.changes.sort_by_key(|change| change.seq);
            self.append(&read.changes)?;
            std::fs::remove_file(&journal).map_err(io(&journal))?;
            drop(lock);
            let _ = std::fs::remove_file(&lock_path);
            adopted.extend(read.changes);
        }
        adopted.sort_by_key(|change| change.seq);
        Ok(adopted)
    }

    /// Appends one batch and syncs it: once this returns, the batch
    /// survives a crash of the process or the machine.
    pub fn append(&mut self, changes: &[Change]) -> Result<(), JournalError> {
        if changes.is_empty() {
            return Ok(());
        }
        let frame = encode_frame(changes);
        let written = self
            .file
            .write_all(&frame)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A partial frame would hide every later one: cut it off.
            let _ = self.file.set_len(self.bytes);
            return Err(io(&self.path)(e));
        }
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// Replaces the journal with one that starts after the snapshot at
    /// `base` and holds `changes` (what that snapshot does not cover):
    /// written aside, synced, then renamed over the old one.
    pub fn rewrite(&mut self, base: Seq, changes: &[Change]) -> Result<(), JournalError> {
        let aside = self.path.with_extension("new");
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&base.0.to_le_bytes());
        if !changes.is_empty() {
            bytes.extend_from_slice(&encode_frame(changes));
        }
        let mut file = File::create(&aside).map_err(io(&aside))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io(&aside))?;
        std::fs::rename(&aside, &self.path).map_err(io(&self.path))?;
        sync_dir(&self.dir)?;
        // Append mode: every write lands at the end, also after a cut.
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        self.bytes = bytes.len() as u64;
        Ok(())
    }

    /// The journal's size in bytes.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Syncs a directory, so a rename or a new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn encode_frame(changes: &[Change]) -> Vec<u8> {
    let payload = serde_json::to_vec(changes).expect("changes always serialise");
    let mut frame = Vec::with_capacity(FRAME_HEAD_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// The changes of every whole, intact frame, and the bytes they take.
fn read_frames(mut bytes: &[u8]) -> (Vec<Change>, usize) {
    let mut changes = Vec::new();
    let mut good = 0;
    while bytes.len() >= FRAME_HEAD_LEN {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let hash = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
        if len > FRAME_LEN_MAX || bytes.len() < FRAME_HEAD_LEN + len {
            break;
        }
        let payload = &bytes[FRAME_HEAD_LEN..FRAME_HEAD_LEN + len];
        if xxhash_rust::xxh3::xxh3_64(payload) != hash {
            break;
        }
        let Ok(batch) = serde_json::from_slice::<Vec<Change>>(payload) else {
            break;
        };
        changes.extend(batch);
        good += FRAME_HEAD_LEN + len;
        bytes = &bytes[FRAME_HEAD_LEN + len..];
    }
    (changes, good)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shortline_store::{Code, LinkId, LinkRecord, Target};

    fn change(seq: u64, code: &str) -> Change {
        Change {
            seq: Seq(seq),
            code: Code::parse(code).unwrap(),
            record: Some(LinkRecord::new(
                Code::parse(code).unwrap(),
                Target::parse("https://example.com/").unwrap(),
                LinkId(seq),
            )),
        }
    }

    fn only_journal(dir: &Path) -> PathBuf {
        let found = journals(dir);
        assert_eq!(found.len(), 1, "{found:?}");
        found[0].0.clone()
    }

    #[test]
    fn what_is_appended_is_read_back_and_a_torn_tail_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), Seq(0), &[]).unwrap();
        journal.append(&[change(1, "a"), change(2, "b")]).unwrap();
        journal.append(&[change(3, "c")]).unwrap();
        drop(journal);
        // A frame cut short, as a crash mid-write leaves it.
        let path = only_journal(dir.path());
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&encode_frame(&[change(4, "d")])[..20])
            .unwrap();
        drop(file);
        let replay = recover(dir.path()).unwrap();
        assert_eq!(
            replay.changes,
            [change(1, "a"), change(2, "b"), change(3, "c")]
        );
        assert_eq!(replay.dropped_bytes, 20);
        assert_eq!(replay.running, 0);
        // A new journal takes the changes over; the old one is deleted.
        let next = Journal::create(dir.path(), Seq(0), &replay.changes).unwrap();
        replay.retire().unwrap();
        assert_eq!(journals(dir.path()).len(), 1);
        drop(next);
        assert_eq!(recover(dir.path()).unwrap().changes.len(), 3);
    }

    #[test]
    fn a_damaged_frame_ends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), Seq(0), &[]).unwrap();
        journal.append(&[change(1, "a")]).unwrap();
        journal.append(&[change(2, "b")]).unwrap();
        drop(journal);
        let path = only_journal(dir.path());
        let mut raw = std::fs::read(&path).unwrap();
        let last = raw.len() - 3;
        raw[last] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
        let replay = recover(dir.path()).unwrap();
        assert_eq!(replay.changes, [change(1, "a")]);
        assert!(replay.dropped_bytes > 0);
    }

    #[test]
    fn a_rewrite_keeps_only_what_the_snapshot_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), Seq(0), &[]).unwrap();
        journal.append(&[change(1, "a"), change(2, "b")]).unwrap();
        journal.rewrite(Seq(2), &[change(3, "c")]).unwrap();
        journal.append(&[change(4, "d")]).unwrap();
        drop(journal);
        let replay = recover(dir.path()).unwrap();
        assert_eq!(replay.base, Seq(2));
        assert_eq!(replay.changes, [change(3, "c"), change(4, "d")]);
        assert!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().ends_with(".new"))
        );
    }

    #[test]
    fn a_running_process_keeps_its_journal_and_an_ended_one_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        // The old process of an upgrade, still draining.
        let mut old = Journal::create(dir.path(), Seq(0), &[]).unwrap();
        old.append(&[change(1, "a")]).unwrap();
        // The new process replays it as it stands, and leaves it alone.
        let replay = recover(dir.path()).unwrap();
        assert_eq!(replay.running, 1);
        assert_eq!(replay.changes, [change(1, "a")]);
        let mut new = Journal::create(dir.path(), Seq(0), &replay.changes).unwrap();
        replay.retire().unwrap();
        assert_eq!(journals(dir.path()).len(), 2);
        assert_eq!(new.adopt_ended().unwrap(), [], "the old process still runs");
        // The old one applies one more change, then exits.
        old.append(&[change(2, "b")]).unwrap();
        drop(old);
        assert_eq!(new.adopt_ended().unwrap(), [change(1, "a"), change(2, "b")]);
        assert_eq!(journals(dir.path()).len(), 1);
        drop(new);
        let replay = recover(dir.path()).unwrap();
        assert_eq!(replay.running, 0);
        assert_eq!(
            replay.changes,
            [change(1, "a"), change(1, "a"), change(2, "b")]
        );
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("journal-x.log"), b"not a journal at all").unwrap();
        let error = recover(dir.path()).unwrap_err();
        assert!(matches!(error, JournalError::Foreign(_)), "{error}");
    }
}
