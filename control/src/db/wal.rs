//! A segmented write-ahead log: a record is appended and synced before what
//! it describes is acknowledged, and is kept until the store holds its
//! effect durably.
//!
//! Two logs use it: the click log (`data_dir/clicks-wal/`, one record per
//! accepted click batch, kept by the analytics aggregator) and the embedded
//! store's redo log (`data_dir/store-log/`, one record per write
//! transaction, see [`super::redb`]).
//!
//! Records go to numbered segment files `<kind>-<n>.wal`, each record framed
//! as `len:u32 checksum:u64(xxh3 of payload) payload`. The owner starts a new
//! segment when it begins making the records so far durable elsewhere, stores
//! the highest segment that covers in the same durable write, and prunes the
//! covered segments after it. At start-up, segments above the stored mark are
//! replayed. A torn record at the end of the newest segment (a crash
//! mid-append, never acknowledged) is ignored; a bad checksum anywhere else
//! stops start-up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

const HEADER: usize = 12;

/// Why the log cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log i/o failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("write-ahead log segment {0} is corrupt at byte {1}")]
    Corrupt(PathBuf, u64),
}

/// Records to replay: (segment, payload), oldest first.
pub type Replay = Vec<(u64, Vec<u8>)>;

/// An open log.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    kind: &'static str,
    segment: u64,
    file: File,
    /// Bytes appended to the current segment.
    bytes: u64,
}

fn segment_name(kind: &str, n: u64) -> String {
    format!("{kind}-{n:020}.wal")
}

/// Segment numbers of `kind` in `dir`, ascending.
fn segments(dir: &Path, kind: &str) -> std::io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix(kind)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(".wal"))
            .and_then(|n| n.parse().ok())
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

impl Wal {
    /// Opens the log of `kind` (the segment files' prefix) in `dir` and
    /// returns the records of segments above `through`, oldest first, for
    /// replay. Appends go to a new segment.
    pub fn open(dir: &Path, kind: &'static str, through: u64) -> Result<(Self, Replay), WalError> {
        std::fs::create_dir_all(dir)?;
        let existing = segments(dir, kind)?;
        let mut replay = Vec::new();
        let newest = existing.last().copied();
        for &n in &existing {
            if n <= through {
                std::fs::remove_file(dir.join(segment_name(kind, n)))?;
                continue;
            }
            let path = dir.join(segment_name(kind, n));
            let (records, valid) = read_segment(&path, Some(n) == newest)?;
            if valid < std::fs::metadata(&path)?.len() {
                // Cut the torn tail so a later start does not meet it in
                // what is then an older segment.
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(valid)?;
                file.sync_all()?;
            }
            for record in records {
                replay.push((n, record));
            }
        }
        let segment = newest.unwrap_or(through).max(through) + 1;
        let file = create(dir, kind, segment)?;
        Ok((
            Self {
                dir: dir.to_owned(),
                kind,
                segment,
                file,
                bytes: 0,
            },
            replay,
        ))
    }

    /// The segment appends go to now.
    #[must_use]
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Appends a record and syncs it.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(
            &u32::try_from(payload.len())
                .map_err(std::io::Error::other)?
                .to_le_bytes(),
        );
        frame.extend_from_slice(&xxh3_64(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        self.file.write_all(&frame)?;
        self.bytes += frame.len() as u64;
        self.file.sync_data()
    }

    /// Bytes appended to the current segment.
    #[must_use]
    pub fn segment_bytes(&self) -> u64 {
        self.bytes
    }

    /// Starts a new segment; returns the one just finished.
    pub fn rotate(&mut self) -> std::io::Result<u64> {
        let finished = self.segment;
        self.file = create(&self.dir, self.kind, finished + 1)?;
        self.segment = finished + 1;
        self.bytes = 0;
        Ok(finished)
    }

    /// Deletes segments at or below `through` (counted in the store).
    pub fn prune(&self, through: u64) -> std::io::Result<()> {
        for n in segments(&self.dir, self.kind)? {
            if n <= through && n != self.segment {
                std::fs::remove_file(self.dir.join(segment_name(self.kind, n)))?;
            }
        }
        Ok(())
    }
}

fn create(dir: &Path, kind: &str, segment: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(segment_name(kind, segment)))?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// The records of a segment and the length of its valid part.
fn read_segment(path: &Path, newest: bool) -> Result<(Vec<Vec<u8>>, u64), WalError> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let torn = || {
            if newest {
                Ok(())
            } else {
                Err(WalError::Corrupt(path.to_owned(), at as u64))
            }
        };
        let Some(header) = bytes.get(at..at + HEADER) else {
            torn()?;
            break;
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let sum = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            torn()?;
            break;
        };
        if xxh3_64(payload) != sum {
            // A torn final record: its append never returned, so it was
            // never acknowledged.
            if newest && at + HEADER + len == bytes.len() {
                break;
            }
            return Err(WalError::Corrupt(path.to_owned(), at as u64));
        }
        records.push(payload.to_vec());
        at += HEADER + len;
    }
    Ok((records, at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_replay_until_counted_and_torn_tails_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, replay) = Wal::open(dir.path(), "clicks", 0).unwrap();
        assert!(replay.is_empty());
        wal.append(b"one").unwrap();
        let first = wal.rotate().unwrap();
        wal.append(b"two").unwrap();
        wal.append(b"three").unwrap();
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), "clicks", 0).unwrap();
        let payloads: Vec<&[u8]> = replay.iter().map(|(_, p)| p.as_slice()).collect();
        assert_eq!(payloads, [&b"one"[..], b"two", b"three"]);
        // Once the first segment is counted it is not replayed.
        let (wal, replay) = Wal::open(dir.path(), "clicks", first).unwrap();
        assert_eq!(replay.len(), 2);
        let newest = wal.segment() - 1;
        drop(wal);
        // A torn append at the end of the newest segment is dropped...
        let path = dir.path().join(segment_name("clicks", newest + 1));
        std::fs::write(&path, [9u8, 0, 0, 0, 1, 2]).unwrap();
        let (wal, replay) = Wal::open(dir.path(), "clicks", first).unwrap();
        assert_eq!(replay.len(), 2);
        drop(wal);
        // ...but damage in an older segment is an error that names it.
        let older = dir.path().join(segment_name("clicks", first + 1));
        let mut bytes = std::fs::read(&older).unwrap();
        bytes[HEADER] ^= 1;
        std::fs::write(&older, bytes).unwrap();
        let err = Wal::open(dir.path(), "clicks", first).unwrap_err();
        assert!(matches!(err, WalError::Corrupt(..)), "{err}");
    }
}
