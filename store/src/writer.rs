//! Building snapshot files.

use std::borrow::Borrow;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::WriteError;
use crate::format::{
    self, FLAG_FORWARD_QUERY, FLAG_HAS_EXPIRY, FLAG_REDIRECT_SHIFT, HEADER_SIZE, Header,
    RECORD_FIXED_SIZE, RECORD_OFFSET_MAX,
};
use crate::record::{LinkRecord, Seq};

/// What a finished write produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStats {
    pub record_count: u64,
    pub file_size_bytes: u64,
    /// Bytes spent on code and target text.
    pub payload_bytes: u64,
}

impl SnapshotStats {
    /// Bytes per link beyond its code and target, header amortised in.
    #[must_use]
    pub fn overhead_bytes_per_link(&self) -> f64 {
        if self.record_count == 0 {
            return 0.0;
        }
        (self.file_size_bytes - self.payload_bytes) as f64 / self.record_count as f64
    }
}

/// Writes `records` as a snapshot covering `sequence` to `path`.
///
/// The file is built in memory (memory is bounded by the output's size), written
/// to a temporary file beside `path`, fsynced, renamed over `path` and the
/// directory fsynced, so a reader sees either the old file or the whole new one.
/// Codes must be unique.
pub fn write_snapshot<I>(
    path: &Path,
    sequence: Seq,
    records: I,
) -> Result<SnapshotStats, WriteError>
where
    I: IntoIterator,
    I::Item: Borrow<LinkRecord>,
{
    let built = build_with_fresh_seeds(sequence, records)?;
    persist(path, &built)?;
    Ok(built.stats)
}

struct Built {
    header: [u8; HEADER_SIZE],
    body: Vec<u8>,
    stats: SnapshotStats,
}

fn build(sequence: Seq, seed: u64, records: &[&LinkRecord]) -> Result<Built, WriteError> {
    // Size everything first, so the file is built in one allocation.
    let record_bytes =
        |r: &LinkRecord| RECORD_FIXED_SIZE + r.code.as_bytes().len() + r.target.as_str().len();
    let records_size: u64 = records.iter().map(|r| record_bytes(r) as u64).sum();
    if records_size > RECORD_OFFSET_MAX {
        return Err(WriteError::TooLarge {
            limit: RECORD_OFFSET_MAX,
        });
    }
    let record_count = records.len() as u64;
    let slot_count = format::slot_count_for(record_count);
    let index_offset = format::align_up(HEADER_SIZE as u64 + records_size);
    let file_size = index_offset + slot_count * format::SLOT_SIZE as u64;
    let mut body = Vec::with_capacity((file_size - HEADER_SIZE as u64) as usize);
    // (hash, offset) per record; the index is built once the records are laid down.
    let mut entries: Vec<(u64, u64)> = Vec::with_capacity(records.len());
    let mut payload_bytes = 0u64;
    for record in records {
        entries.push((
            format::hash_code(record.code.as_bytes(), seed),
            body.len() as u64,
        ));
        encode_record(&mut body, record);
        payload_bytes += (record_bytes(record) - RECORD_FIXED_SIZE) as u64;
    }
    assert_eq!(
        body.len() as u64,
        records_size,
        "records were sized exactly"
    );
    body.resize((index_offset - HEADER_SIZE as u64) as usize, 0);
    let slots = build_index(&body, &mut entries, slot_count)?;
    for slot in &slots {
        body.extend_from_slice(&slot.to_le_bytes());
    }
    assert_eq!(
        HEADER_SIZE as u64 + body.len() as u64,
        file_size,
        "the file was sized exactly"
    );
    let header = Header {
        sequence,
        record_count,
        slot_count,
        records_size,
        index_offset,
        file_size,
        hash_seed: seed,
        created_at_unix_ms: unix_ms(),
        body_checksum: format::body_checksum(&body),
    };
    let encoded = header.encode();
    // Check the format at both ends: what we are about to write must decode.
    assert_eq!(
        Header::decode_for_length(&encoded, file_size).ok(),
        Some(header),
        "encoded header must decode"
    );
    Ok(Built {
        header: encoded,
        body,
        stats: SnapshotStats {
            record_count,
            file_size_bytes: file_size,
            payload_bytes,
        },
    })
}

fn encode_record(out: &mut Vec<u8>, record: &LinkRecord) {
    let code = record.code.as_bytes();
    let target = record.target.as_str().as_bytes();
    let mut flags = record.status as u8 | (record.redirect.to_bits() << FLAG_REDIRECT_SHIFT);
    if record.forward_query {
        flags |= FLAG_FORWARD_QUERY;
    }
    if record.expires_at.is_some() {
        flags |= FLAG_HAS_EXPIRY;
    }
    out.push(code.len() as u8);
    out.push(flags);
    out.extend_from_slice(&(target.len() as u16).to_le_bytes());
    out.extend_from_slice(&record.link_id.0.to_le_bytes());
    out.extend_from_slice(&record.expires_at.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(code);
    out.extend_from_slice(target);
}

/// The code bytes of the record at `offset` in a records region this module wrote.
fn code_at(records: &[u8], offset: u64) -> &[u8] {
    let at = offset as usize;
    let len = records[at] as usize;
    &records[at + RECORD_FIXED_SIZE..at + RECORD_FIXED_SIZE + len]
}

/// Builds the Robin Hood index. Entries are sorted by home slot (then hash)
/// and laid down in that order: each goes to its home slot or just after the
/// previous entry, whichever is later. That is exactly the Robin Hood layout
/// (along any probe run, homes never decrease), it touches the index
/// sequentially, and a duplicate code sorts next to its twin.
fn build_index(
    records: &[u8],
    entries: &mut [(u64, u64)],
    slot_count: u64,
) -> Result<Vec<u64>, WriteError> {
    let home = |hash: u64| format::home_slot(hash, slot_count);
    entries.sort_unstable_by_key(|&(hash, _)| (home(hash), hash));
    for pair in entries.windows(2) {
        let ((a_hash, a_offset), (b_hash, b_offset)) = (pair[0], pair[1]);
        if a_hash == b_hash && code_at(records, a_offset) == code_at(records, b_offset) {
            return Err(WriteError::DuplicateCode(
                String::from_utf8_lossy(code_at(records, a_offset)).into_owned(),
            ));
        }
    }
    let mut slots = vec![0u64; slot_count as usize];
    // Entries pushed past the last slot wrap to the start; they are placed
    // afterwards, before the first entries' runs begin.
    let mut wrapped: Vec<(u64, u64, u64)> = Vec::new();
    let mut next_free = 0u64;
    for &(hash, offset) in entries.iter() {
        let position = home(hash).max(next_free);
        let distance = position - home(hash);
        if position >= slot_count {
            wrapped.push((hash, offset, distance));
            continue;
        }
        if distance > format::PROBE_DISTANCE_MAX {
            return Err(WriteError::Clustered);
        }
        slots[position as usize] = format::encode_slot(hash, distance, offset);
        next_free = position + 1;
    }
    // Wrapped entries belong before everything whose home is at the start, so
    // shift those runs right, Robin Hood style, as they are inserted.
    for (hash, offset, distance) in wrapped {
        insert_robin_hood(&mut slots, hash, offset, distance)?;
    }
    Ok(slots)
}

/// Inserts one entry `distance` slots past its home (wrapping), displacing
/// residents nearer their homes.
fn insert_robin_hood(
    slots: &mut [u64],
    hash: u64,
    offset: u64,
    distance: u64,
) -> Result<(), WriteError> {
    let len = slots.len();
    let (mut carried_hash_tag, mut carried_offset, mut carried_distance) = (hash, offset, distance);
    let mut i = ((format::home_slot(hash, len as u64) + distance) % len as u64) as usize;
    loop {
        if carried_distance > format::PROBE_DISTANCE_MAX {
            return Err(WriteError::Clustered);
        }
        let resident = slots[i];
        if resident == 0 {
            slots[i] = format::encode_slot(carried_hash_tag, carried_distance, carried_offset);
            return Ok(());
        }
        let resident_distance = format::slot_distance(resident);
        if resident_distance < carried_distance {
            slots[i] = format::encode_slot(carried_hash_tag, carried_distance, carried_offset);
            // Only the tag survives in a slot; it is all a later slot needs.
            carried_hash_tag = resident >> 48;
            carried_offset = format::slot_record_offset(resident);
            carried_distance = resident_distance;
        }
        i = if i + 1 == len { 0 } else { i + 1 };
        carried_distance += 1;
    }
}

fn persist(path: &Path, built: &Built) -> Result<(), WriteError> {
    let io = |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = temporary_path(path);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(&built.header)?;
        file.write_all(&built.body)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp.{}.{}", std::process::id(), unix_ns()));
    path.with_file_name(name)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// A per-file hash seed, so no fixed set of codes collides in every snapshot.
fn hash_seed() -> u64 {
    let stack = 0u8;
    let address = &stack as *const u8 as u64;
    xxhash_rust::xxh3::xxh3_64(&[unix_ns().to_le_bytes(), address.to_le_bytes()].concat())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Builds with a fresh hash seed, retrying with another seed in the
/// astronomically unlikely case that a probe distance overflows its byte.
fn build_with_fresh_seeds<I>(sequence: Seq, records: I) -> Result<Built, WriteError>
where
    I: IntoIterator,
    I::Item: Borrow<LinkRecord>,
{
    let owned: Vec<I::Item> = records.into_iter().collect();
    let records: Vec<&LinkRecord> = owned.iter().map(Borrow::borrow).collect();
    let mut attempt = 0;
    loop {
        match build(sequence, hash_seed() ^ attempt, &records) {
            Err(WriteError::Clustered) if attempt < 3 => attempt += 1,
            other => return other,
        }
    }
}

/// Encodes a snapshot into memory instead of a file, for tests, fuzzing and
/// shipping a snapshot over the network.
pub fn encode_snapshot<I>(sequence: Seq, records: I) -> Result<Vec<u8>, WriteError>
where
    I: IntoIterator,
    I::Item: Borrow<LinkRecord>,
{
    let built = build_with_fresh_seeds(sequence, records)?;
    let mut bytes = built.header.to_vec();
    bytes.extend_from_slice(&built.body);
    Ok(bytes)
}
