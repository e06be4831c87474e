//! Building snapshot files.

use std::borrow::Borrow;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::code::Code;
use crate::error::WriteError;
use crate::extension;
use crate::format::{
    self, DeltaOf, FLAG_FORWARD_QUERY, FLAG_HAS_EXPIRY, FLAG_HAS_EXTENSIONS, FLAG_REDIRECT_SHIFT,
    Header, RECORD_FIXED_SIZE, RECORD_OFFSET_MAX, STATUS_DELETED,
};
use crate::record::{LinkRecord, Seq};
use xxhash_rust::xxh3::Xxh3;

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

/// Writes `records` as a snapshot covering `sequence` to `path`, through a
/// [`SnapshotWriter`]. Codes must be unique.
pub fn write_snapshot<I>(
    path: &Path,
    sequence: Seq,
    records: I,
) -> Result<SnapshotStats, WriteError>
where
    I: IntoIterator,
    I::Item: Borrow<LinkRecord>,
{
    let mut writer = SnapshotWriter::create(path, sequence)?;
    for record in records {
        writer.push(record.borrow())?;
    }
    writer.finish()
}

/// Encodes a snapshot into memory instead of a file, for tests, fuzzing and
/// shipping a snapshot over the network.
pub fn encode_snapshot<I>(sequence: Seq, records: I) -> Result<Vec<u8>, WriteError>
where
    I: IntoIterator,
    I::Item: Borrow<LinkRecord>,
{
    let mut build = Build::new(sequence, None, MemorySink::new(None));
    for record in records {
        build.push(record.borrow())?;
    }
    let (sink, _) = build.finish()?;
    Ok(sink.bytes)
}

/// Encodes a delta segment into memory: each code's state after the
/// changes since `of.parent`, `None` for a deleted code. Codes must be unique.
pub fn encode_delta<'a, I>(sequence: Seq, of: DeltaOf, entries: I) -> Result<Vec<u8>, WriteError>
where
    I: IntoIterator<Item = (&'a Code, Option<&'a LinkRecord>)>,
{
    let mut build = Build::new(sequence, Some(of), MemorySink::new(Some(of)));
    for (code, record) in entries {
        build.push_entry(code, record)?;
    }
    let (sink, _) = build.finish()?;
    Ok(sink.bytes)
}

/// Bytes gathered before each write to the file.
const WRITE_BUFFER: usize = 32 << 20;

/// Writes a snapshot file one record at a time, in any order.
///
/// Records go to a temporary file beside the target as they are pushed;
/// memory holds only 16 bytes per link (its hash and offset) and, while the
/// index is built, its 10.7 bytes of index, so a table of a hundred million
/// links is written in under 3 GB whatever its targets. [`finish`] writes
/// the index, the block checksums and the header, fsyncs, renames the file
/// over the target and fsyncs the directory, so a reader sees either the old
/// file or the whole new one. Dropped unfinished, it removes its temporary
/// file.
///
/// [`finish`]: SnapshotWriter::finish
pub struct SnapshotWriter {
    build: Build<FileSink>,
}

impl std::fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("path", &self.build.sink.path)
            .field("records", &self.build.entries.len())
            .finish_non_exhaustive()
    }
}

impl SnapshotWriter {
    /// Starts a snapshot (a base: the whole table) covering `sequence`, to
    /// be renamed to `path`.
    pub fn create(path: &Path, sequence: Seq) -> Result<Self, WriteError> {
        Self::create_segment(path, sequence, None)
    }

    /// Starts a delta segment: the changes to the base `of.base` after
    /// `of.parent`, up to `sequence`. Push each changed code's state once,
    /// with [`SnapshotWriter::push`] or [`SnapshotWriter::push_deleted`].
    pub fn create_delta(path: &Path, sequence: Seq, of: DeltaOf) -> Result<Self, WriteError> {
        Self::create_segment(path, sequence, Some(of))
    }

    fn create_segment(
        path: &Path,
        sequence: Seq,
        delta: Option<DeltaOf>,
    ) -> Result<Self, WriteError> {
        let tmp = temporary_path(path);
        let io = |source| WriteError::Io {
            path: tmp.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&vec![0; header_size(delta)]).map_err(io)?;
        let sink = FileSink {
            path: path.to_path_buf(),
            tmp: tmp.clone(),
            // Few, large writes for a file of gigabytes.
            out: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            map: None,
            header_size: header_size(delta),
        };
        Ok(Self {
            build: Build::new(sequence, delta, sink),
        })
    }

    /// Appends a tombstone: `code` was deleted since the parent segment.
    /// Only a delta segment holds them.
    pub fn push_deleted(&mut self, code: &Code) -> Result<(), WriteError> {
        self.build.push_entry(code, None)
    }

    /// Appends a code's state in a delta: its record, or with `None` a
    /// tombstone.
    pub fn push_change(
        &mut self,
        code: &Code,
        record: Option<&LinkRecord>,
    ) -> Result<(), WriteError> {
        self.build.push_entry(code, record)
    }

    /// Appends one record. Duplicate codes are found at [`SnapshotWriter::finish`].
    pub fn push(&mut self, record: &LinkRecord) -> Result<(), WriteError> {
        self.build.push(record)
    }

    /// Records pushed so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.build.entries.len() as u64
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.build.entries.is_empty()
    }

    /// Writes the index, the block checksums and the header, and puts the
    /// file in place durably.
    pub fn finish(self) -> Result<SnapshotStats, WriteError> {
        let (mut sink, stats) = self.build.finish()?;
        sink.commit()?;
        Ok(stats)
    }
}

/// Where a build's bytes go: the file's bytes after the header, appended,
/// then the header at the start.
trait Sink {
    fn append(&mut self, bytes: &[u8]) -> Result<(), WriteError>;
    /// Every byte after the header appended so far.
    fn body(&mut self) -> Result<&[u8], WriteError>;
    fn write_header(&mut self, header: &[u8]) -> Result<(), WriteError>;
}

/// Bytes of header a segment starts with.
fn header_size(delta: Option<DeltaOf>) -> usize {
    format::header_size(if delta.is_some() {
        format::DELTA_FORMAT_VERSION
    } else {
        format::FORMAT_VERSION
    })
}

struct MemorySink {
    bytes: Vec<u8>,
    header_size: usize,
}

impl MemorySink {
    fn new(delta: Option<DeltaOf>) -> Self {
        Self {
            bytes: vec![0; header_size(delta)],
            header_size: header_size(delta),
        }
    }
}

impl Sink for MemorySink {
    fn append(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn body(&mut self) -> Result<&[u8], WriteError> {
        Ok(&self.bytes[self.header_size..])
    }

    fn write_header(&mut self, header: &[u8]) -> Result<(), WriteError> {
        self.bytes[..header.len()].copy_from_slice(header);
        Ok(())
    }
}

struct FileSink {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    /// The file as written so far, mapped to read the codes back when the
    /// index is built.
    map: Option<memmap2::Mmap>,
    header_size: usize,
}

/// An I/O error at `path`, for `map_err`.
fn io_at(path: &Path) -> impl Fn(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FileSink {
    /// The open file and the temporary path (for errors).
    fn out(&mut self) -> (&mut BufWriter<File>, &Path) {
        (
            self.out.as_mut().expect("the file is open until commit"),
            &self.tmp,
        )
    }

    /// fsyncs the file, renames it over the target and fsyncs the
    /// directory; removes the temporary file if any of it fails.
    fn commit(&mut self) -> Result<(), WriteError> {
        self.map = None;
        let out = self.out.take().expect("committed once");
        let result = out
            .into_inner()
            .map_err(|e| io_at(&self.tmp)(e.into_error()))
            .and_then(|file| file.sync_all().map_err(io_at(&self.tmp)))
            .and_then(|()| fs::rename(&self.tmp, &self.path).map_err(io_at(&self.path)))
            .and_then(|()| sync_parent(&self.path).map_err(io_at(&self.path)));
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.map = None;
            self.out = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Sink for FileSink {
    fn append(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.map = None;
        let (out, tmp) = self.out();
        out.write_all(bytes).map_err(io_at(tmp))
    }

    fn body(&mut self) -> Result<&[u8], WriteError> {
        if self.map.is_none() {
            let (out, tmp) = self.out();
            out.flush().map_err(io_at(tmp))?;
            let file = out.get_ref();
            // SAFETY: the temporary file is this writer's own (created with
            // `create_new`, never handed out); nothing writes to it while
            // the map lives, since every append drops the map first.
            let map = unsafe { memmap2::Mmap::map(file) }.map_err(io_at(tmp))?;
            self.map = Some(map);
        }
        Ok(&self.map.as_ref().expect("mapped above")[self.header_size..])
    }

    fn write_header(&mut self, header: &[u8]) -> Result<(), WriteError> {
        self.map = None;
        let (out, tmp) = self.out();
        out.flush()
            .and_then(|()| out.get_mut().write_all_at(header, 0))
            .map_err(io_at(tmp))
    }
}

/// XXH3-64 of every `block_size` bytes appended, as the stored table.
struct BlockSums {
    block_size: u64,
    filled: u64,
    hasher: Xxh3,
    table: Vec<u8>,
}

impl BlockSums {
    fn new(block_size: u64) -> Self {
        Self {
            block_size,
            filled: 0,
            hasher: Xxh3::new(),
            table: Vec::new(),
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (self.block_size - self.filled) as usize;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.hasher.update(now);
            self.filled += now.len() as u64;
            if self.filled == self.block_size {
                self.table
                    .extend_from_slice(&self.hasher.digest().to_le_bytes());
                self.hasher = Xxh3::new();
                self.filled = 0;
            }
            bytes = rest;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.table
                .extend_from_slice(&self.hasher.digest().to_le_bytes());
        }
        self.table
    }
}

/// One snapshot being built: records appended to the sink as they come,
/// their hashes and offsets kept for the index.
struct Build<S: Sink> {
    sink: S,
    sequence: Seq,
    delta: Option<DeltaOf>,
    seed: u64,
    /// (hash, offset) per record.
    entries: Vec<(u64, u64)>,
    records_size: u64,
    payload_bytes: u64,
    sums: BlockSums,
    scratch: Vec<u8>,
}

impl<S: Sink> Build<S> {
    fn new(sequence: Seq, delta: Option<DeltaOf>, sink: S) -> Self {
        Self {
            sink,
            sequence,
            delta,
            // A delta hashes with its base's seed, so a lookup through a
            // base and its deltas hashes the code once.
            seed: delta.map_or_else(hash_seed, |of| of.base.seed),
            entries: Vec::new(),
            records_size: 0,
            payload_bytes: 0,
            sums: BlockSums::new(format::BLOCK_SIZE),
            scratch: Vec::with_capacity(256),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.sums.update(bytes);
        self.sink.append(bytes)
    }

    fn push(&mut self, record: &LinkRecord) -> Result<(), WriteError> {
        self.push_entry(&record.code, Some(record))
    }

    /// Appends a record, or with `None` (a delta only) a tombstone.
    fn push_entry(&mut self, code: &Code, record: Option<&LinkRecord>) -> Result<(), WriteError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        match record {
            Some(record) => encode_record(&mut scratch, record),
            None if self.delta.is_some() => encode_tombstone(&mut scratch, code),
            None => {
                self.scratch = scratch;
                return Err(WriteError::TombstoneInBase(code.as_str().to_owned()));
            }
        }
        let size = scratch.len() as u64;
        if self.records_size + size > RECORD_OFFSET_MAX {
            return Err(WriteError::TooLarge {
                limit: RECORD_OFFSET_MAX,
            });
        }
        self.entries.push((
            format::hash_code(code.as_bytes(), self.seed),
            self.records_size,
        ));
        let appended = self.append(&scratch);
        self.records_size += size;
        self.payload_bytes += size - RECORD_FIXED_SIZE as u64;
        self.scratch = scratch;
        appended
    }

    fn finish(mut self) -> Result<(S, SnapshotStats), WriteError> {
        let record_count = self.entries.len() as u64;
        let slot_count = format::slot_count_for(record_count);
        let records_start = header_size(self.delta) as u64;
        let index_offset = format::align_up(records_start + self.records_size);
        let pad = index_offset - records_start - self.records_size;
        self.append(&vec![0; pad as usize])?;
        let slots = self.index(slot_count)?;
        let mut chunk = Vec::with_capacity(1 << 16);
        for slots in slots.chunks(8192) {
            chunk.clear();
            for slot in slots {
                chunk.extend_from_slice(&slot.to_le_bytes());
            }
            self.append(&chunk)?;
        }
        drop(slots);
        let checksums_offset = index_offset + slot_count * format::SLOT_SIZE as u64;
        let table = std::mem::replace(&mut self.sums, BlockSums::new(1)).finish();
        self.sink.append(&table)?;
        let file_size = checksums_offset + table.len() as u64;
        let header = Header {
            version: if self.delta.is_some() {
                format::DELTA_FORMAT_VERSION
            } else {
                format::FORMAT_VERSION
            },
            sequence: self.sequence,
            record_count,
            slot_count,
            records_size: self.records_size,
            index_offset,
            file_size,
            hash_seed: self.seed,
            created_at_unix_ms: unix_ms(),
            checksum: format::checksum(&table),
            block_size: format::BLOCK_SIZE,
            checksums_offset,
            delta: self.delta,
        };
        let encoded = header.encode();
        // Check the format at both ends: what we are about to write must decode.
        assert_eq!(
            Header::decode_for_length(&encoded, file_size).ok(),
            Some(header),
            "encoded header must decode"
        );
        self.sink.write_header(&encoded)?;
        let stats = SnapshotStats {
            record_count,
            file_size_bytes: file_size,
            payload_bytes: self.payload_bytes,
        };
        Ok((self.sink, stats))
    }

    /// The index slots, with a fresh seed (every code hashed again from
    /// the records written) in the astronomically unlikely case that a
    /// probe distance overflows its byte.
    fn index(&mut self, slot_count: u64) -> Result<Vec<u64>, WriteError> {
        let mut attempt = 0;
        loop {
            let records = &self.sink.body()?[..self.records_size as usize];
            match build_index(records, &mut self.entries, slot_count) {
                Err(WriteError::Clustered) if attempt < 3 => {
                    attempt += 1;
                    self.seed = hash_seed() ^ attempt;
                    for (hash, offset) in &mut self.entries {
                        *hash = format::hash_code(code_at(records, *offset), self.seed);
                    }
                }
                other => return other,
            }
        }
    }
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
    let flags_at = out.len();
    out.push(flags);
    out.extend_from_slice(&(target.len() as u16).to_le_bytes());
    out.extend_from_slice(&record.link_id.0.to_le_bytes());
    out.extend_from_slice(&record.expires_at.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(code);
    out.extend_from_slice(target);
    if record.changed_at.is_none() && record.previous.is_empty() && record.routing.is_none() {
        return;
    }
    out[flags_at] |= FLAG_HAS_EXTENSIONS;
    let length_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let item = |out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]| {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        out.push(tag);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        for part in parts {
            out.extend_from_slice(part);
        }
    };
    if let Some(at) = record.changed_at {
        item(out, extension::CHANGED_AT, &[&at.to_le_bytes()]);
    }
    // Within `routing::ENCODED_MAX`, so it always fits; previous targets
    // take the room left.
    if let Some(routing) = &record.routing {
        item(out, extension::ROUTING, &[routing.as_bytes()]);
    }
    // Oldest first; when they would not all fit, the newest are kept.
    let mut room = EXTENSIONS_MAX - (out.len() - length_at - 2);
    let kept = record
        .previous
        .iter()
        .rev()
        .take_while(|p| {
            let size = 3 + 8 + p.target.as_str().len();
            room.checked_sub(size).map(|left| room = left).is_some()
        })
        .count();
    for previous in &record.previous[record.previous.len() - kept..] {
        item(
            out,
            extension::PREVIOUS_TARGET,
            &[
                &previous.until.to_le_bytes(),
                previous.target.as_str().as_bytes(),
            ],
        );
    }
    let length = u16::try_from(out.len() - length_at - 2).expect("kept within EXTENSIONS_MAX");
    out[length_at..length_at + 2].copy_from_slice(&length.to_le_bytes());
}

/// The most bytes of extensions a record holds (its length is a `u16`).
const EXTENSIONS_MAX: usize = u16::MAX as usize;

/// [`encode_record`], for the reader's tests.
#[cfg(test)]
pub(crate) fn encode_record_for_test(out: &mut Vec<u8>, record: &LinkRecord) {
    encode_record(out, record);
}

fn encode_tombstone(out: &mut Vec<u8>, code: &Code) {
    let code = code.as_bytes();
    out.push(code.len() as u8);
    out.push(STATUS_DELETED);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(code);
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
