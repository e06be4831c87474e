//! The proxy's own durability: every batch of changes from the stream is
//! appended to `proxy-cache/journal` and synced before it is applied, so a
//! link the proxy has answered is on its disk, whatever happens next. At
//! start-up the journal is replayed over the newest snapshot; when a
//! snapshot covering it is installed, it is rewritten to hold only what
//! the snapshot does not.
//!
//! Layout: an 8-byte magic and the sequence of the snapshot it starts
//! after, then frames of `u32` length, `u64` XXH3 of the payload and the
//! payload (a JSON array of [`Change`]s), all little-endian. A frame that
//! is cut short or does not match its hash ends the journal: it was being
//! written when the process died, so its changes were never applied.
//!
//! One process writes a journal at a time: `journal.lock` is held (an
//! exclusive advisory lock) for as long as the journal is open. In a
//! graceful upgrade the old process closes its journal before it hands its
//! sockets over, and the new one waits for the lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    #[error(
        "{0} is held by another shortline-proxy using the same data_dir; stop it, or give this one its own data_dir"
    )]
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

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Replay {
    /// The snapshot sequence the journal starts after.
    pub base: Seq,
    /// Every change, in the order it was applied.
    pub changes: Vec<Change>,
    /// Bytes of a damaged or unfinished tail, cut off.
    pub dropped_bytes: u64,
}

/// An open journal, holding the lock.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    bytes: u64,
    _lock: File,
}

impl Journal {
    fn path(dir: &Path) -> PathBuf {
        dir.join("journal")
    }

    /// Opens (or creates) the journal in `dir` and reads it back. When
    /// another process holds it, waits up to `wait` for it to let go.
    pub fn open(dir: &Path, wait: Duration) -> Result<(Self, Replay), JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("journal.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let deadline = Instant::now() + wait;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(JournalError::Locked(lock_path));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
            }
        }
        let path = Self::path(dir);
        // Append mode: every write lands at the end, also after a cut.
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).map_err(io(&path))?;
        let mut journal = Self {
            dir: dir.to_path_buf(),
            file,
            bytes: raw.len() as u64,
            _lock: lock,
        };
        if raw.len() < HEADER_LEN as usize {
            // New, or cut short while it was first written: nothing in it
            // was ever applied.
            journal.rewrite(Seq(0), &[])?;
            return Ok((journal, Replay::default()));
        }
        if &raw[..8] != MAGIC {
            return Err(JournalError::Foreign(path));
        }
        let base = Seq(u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes")));
        let (changes, good) = read_frames(&raw[HEADER_LEN as usize..]);
        let end = HEADER_LEN + good as u64;
        let dropped_bytes = raw.len() as u64 - end;
        if dropped_bytes > 0 {
            journal.file.set_len(end).map_err(io(&path))?;
            journal.file.sync_all().map_err(io(&path))?;
            journal.bytes = end;
        }
        Ok((
            journal,
            Replay {
                base,
                changes,
                dropped_bytes,
            },
        ))
    }

    /// Appends one batch and syncs it: once this returns, the batch
    /// survives a crash of the process or the machine.
    pub fn append(&mut self, changes: &[Change]) -> Result<(), JournalError> {
        if changes.is_empty() {
            return Ok(());
        }
        let frame = encode_frame(changes);
        let path = Self::path(&self.dir);
        let written = self
            .file
            .write_all(&frame)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A partial frame would hide every later one: cut it off.
            let _ = self.file.set_len(self.bytes);
            return Err(io(&path)(e));
        }
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// Replaces the journal with one that starts after the snapshot at
    /// `base` and holds `changes` (what that snapshot does not cover):
    /// written aside, synced, then renamed over the old one.
    pub fn rewrite(&mut self, base: Seq, changes: &[Change]) -> Result<(), JournalError> {
        let path = Self::path(&self.dir);
        let aside = self.dir.join("journal.new");
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
        std::fs::rename(&aside, &path).map_err(io(&path))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
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

    #[test]
    fn what_is_appended_is_read_back_and_a_torn_tail_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, replay) = Journal::open(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(replay.changes, []);
        journal.append(&[change(1, "a"), change(2, "b")]).unwrap();
        journal.append(&[change(3, "c")]).unwrap();
        let size = journal.bytes();
        drop(journal);
        // A frame cut short, as a crash mid-write leaves it.
        let path = dir.path().join("journal");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&encode_frame(&[change(4, "d")])[..20])
            .unwrap();
        drop(file);
        let (journal, replay) = Journal::open(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(
            replay.changes,
            [change(1, "a"), change(2, "b"), change(3, "c")]
        );
        assert_eq!(replay.dropped_bytes, 20);
        assert_eq!(journal.bytes(), size);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    }

    #[test]
    fn a_damaged_frame_ends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), Duration::ZERO).unwrap();
        journal.append(&[change(1, "a")]).unwrap();
        journal.append(&[change(2, "b")]).unwrap();
        drop(journal);
        let path = dir.path().join("journal");
        let mut raw = std::fs::read(&path).unwrap();
        let last = raw.len() - 3;
        raw[last] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
        let (_, replay) = Journal::open(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(replay.changes, [change(1, "a")]);
        assert!(replay.dropped_bytes > 0);
    }

    #[test]
    fn a_rewrite_keeps_only_what_the_snapshot_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), Duration::ZERO).unwrap();
        journal.append(&[change(1, "a"), change(2, "b")]).unwrap();
        journal.rewrite(Seq(2), &[change(3, "c")]).unwrap();
        journal.append(&[change(4, "d")]).unwrap();
        drop(journal);
        let (_, replay) = Journal::open(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(replay.base, Seq(2));
        assert_eq!(replay.changes, [change(3, "c"), change(4, "d")]);
        assert!(!dir.path().join("journal.new").exists());
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), Duration::ZERO).unwrap();
        let error = Journal::open(dir.path(), Duration::from_millis(50)).unwrap_err();
        assert!(matches!(error, JournalError::Locked(_)), "{error}");
        assert!(error.to_string().contains("same data_dir"), "{error}");
        drop(journal);
        Journal::open(dir.path(), Duration::ZERO).unwrap();
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("journal"), b"not a journal at all").unwrap();
        let error = Journal::open(dir.path(), Duration::ZERO).unwrap_err();
        assert!(matches!(error, JournalError::Foreign(_)), "{error}");
    }
}
