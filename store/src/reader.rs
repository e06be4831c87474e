//! Opening snapshot files and looking codes up in them.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::Mmap;

use crate::error::OpenError;
use crate::extension;
use crate::format::{
    self, BaseId, DeltaOf, FLAG_FORWARD_QUERY, FLAG_HAS_EXPIRY, FLAG_HAS_EXTENSIONS,
    FLAG_REDIRECT_SHIFT, FLAG_STATUS_MASK, HEADER_SIZE, Header, RECORD_FIXED_SIZE, SLOT_SIZE,
    STATUS_DELETED,
};
use crate::record::{LinkId, LinkStatus, LinkView, Previous, RedirectStatus, Seq};

/// Where a snapshot's bytes live.
enum Backing {
    Map(Mmap),
    Heap(Box<[u8]>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Map(map) => map,
            Self::Heap(bytes) => bytes,
        }
    }
}

/// An open, checked, immutable snapshot.
///
/// Lookups borrow from the mapped file, take no lock and allocate nothing. A
/// file that passed [`Snapshot::open`] can still not make a lookup read out of
/// bounds: every offset taken from the file is checked before use.
///
/// Opening checks the header, the layout and the block checksum table, not
/// the blocks: a block is checked against its checksum the first time
/// anything reads it (a lookup, an iteration, [`Snapshot::verify`]), so
/// opening costs the same at a hundred million links as at one. A lookup
/// that would read a damaged block finds nothing, and the damage is kept
/// for [`Snapshot::damage`]; no answer ever comes from unchecked bytes.
pub struct Snapshot {
    backing: Backing,
    header: Header,
    /// Where the records start: the header's size.
    records_start: usize,
    blocks: Blocks,
    /// A delta's filter of its codes, once [`Snapshot::prepare_filter`] ran.
    filter: std::sync::OnceLock<crate::filter::Filter>,
}

/// What a segment holds for a code: its link, or, in a delta segment, that
/// it was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    Link(LinkView<'a>),
    Deleted(&'a [u8]),
}

impl<'a> Entry<'a> {
    #[must_use]
    pub fn code(&self) -> &'a [u8] {
        match self {
            Self::Link(view) => view.code,
            Self::Deleted(code) => code,
        }
    }

    /// The link, unless this is a tombstone.
    #[must_use]
    pub fn link(self) -> Option<LinkView<'a>> {
        match self {
            Self::Link(view) => Some(view),
            Self::Deleted(_) => None,
        }
    }
}

/// Which blocks have been checked against their checksums, and which failed.
struct Blocks {
    /// log2 of the block size; a version 1 file is one block (`63`), checked
    /// at open.
    shift: u32,
    count: u64,
    checked: Box<[AtomicU64]>,
    damaged: Box<[AtomicU64]>,
    /// Blocks not checked yet; when it reaches 0, `all` is set and lookups
    /// stop looking at the bits.
    unchecked: AtomicU64,
    all: AtomicBool,
    /// The first block found damaged, plus one; 0 while none is.
    first_damaged: AtomicU64,
}

impl Blocks {
    fn new(shift: u32, count: u64) -> Self {
        let words = count.div_ceil(64) as usize;
        let bits = || (0..words).map(|_| AtomicU64::new(0)).collect();
        Self {
            shift,
            count,
            checked: bits(),
            damaged: bits(),
            unchecked: AtomicU64::new(count),
            all: AtomicBool::new(count == 0),
            first_damaged: AtomicU64::new(0),
        }
    }

    /// Records `block` as checked.
    fn set_checked(&self, block: u64) {
        let bit = 1 << (block % 64);
        let before = self.checked[(block / 64) as usize].fetch_or(bit, Ordering::AcqRel);
        if before & bit == 0 && self.unchecked.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all.store(true, Ordering::Release);
        }
    }

    #[inline]
    fn bit(set: &[AtomicU64], block: u64) -> bool {
        set[(block / 64) as usize].load(Ordering::Acquire) & (1 << (block % 64)) != 0
    }

    fn set(set: &[AtomicU64], block: u64) {
        set[(block / 64) as usize].fetch_or(1 << (block % 64), Ordering::AcqRel);
    }

    fn checked_count(&self) -> u64 {
        self.checked
            .iter()
            .map(|w| u64::from(w.load(Ordering::Acquire).count_ones()))
            .sum()
    }
}

/// A block that does not match its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDamage {
    /// Its number, from 0 at the first byte after the header.
    pub block: u64,
    /// Its bytes in the file, `[start, end)`.
    pub start: u64,
    pub end: u64,
}

impl From<BlockDamage> for OpenError {
    fn from(d: BlockDamage) -> Self {
        Self::BlockChecksum {
            block: d.block,
            start: d.start,
            end: d.end,
        }
    }
}

/// A snapshot's header facts, for logs, metrics and the inspect command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub sequence: Seq,
    pub record_count: u64,
    pub slot_count: u64,
    pub file_size_bytes: u64,
    pub records_size_bytes: u64,
    pub created_at_unix_ms: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("info", &self.info())
            .finish()
    }
}

impl Snapshot {
    /// Maps the file at `path` and checks its header, layout and block
    /// checksum table; blocks are checked as they are first read (a version
    /// 1 file, which has no block checksums, is checked whole here).
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let io = |source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < HEADER_SIZE as u64 {
            return Err(OpenError::Truncated {
                len,
                expected: HEADER_SIZE as u64,
            });
        }
        // SAFETY: snapshot files are written once to a temporary name and
        // renamed into place; nothing in Shortline writes to or truncates a file
        // after that, so the mapped bytes do not change under us. Every read of
        // the map goes through bounds-checked slices.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::from_backing(Backing::Map(map))
    }

    /// [`Snapshot::open`], then every block checked: for a file about to
    /// replace a table that is serving, where damage must be found before.
    pub fn open_verified(path: &Path) -> Result<Self, OpenError> {
        let snapshot = Self::open(path)?;
        snapshot.verify()?;
        Ok(snapshot)
    }

    /// Checks and wraps snapshot bytes held in memory, every block included.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, OpenError> {
        let snapshot = Self::from_bytes_lazy(bytes)?;
        snapshot.verify()?;
        Ok(snapshot)
    }

    /// Wraps snapshot bytes held in memory like [`Snapshot::open`] does a
    /// file: blocks are checked as they are first read.
    pub fn from_bytes_lazy(bytes: Vec<u8>) -> Result<Self, OpenError> {
        Self::from_backing(Backing::Heap(bytes.into_boxed_slice()))
    }

    /// A snapshot with no links, covering nothing.
    #[must_use]
    pub fn empty() -> Self {
        let bytes = crate::writer::encode_snapshot(Seq(0), std::iter::empty::<crate::LinkRecord>())
            .expect("an empty snapshot always encodes");
        Self::from_bytes(bytes).expect("an empty snapshot always decodes")
    }

    fn from_backing(backing: Backing) -> Result<Self, OpenError> {
        let bytes = backing.bytes();
        let header = Header::decode(bytes)?;
        let blocks = if header.version == 1 {
            if format::checksum(&bytes[HEADER_SIZE..]) != header.checksum {
                return Err(OpenError::BodyChecksum);
            }
            let blocks = Blocks::new(63, 1);
            blocks.set_checked(0);
            blocks
        } else {
            let table = &bytes[header.checksums_offset as usize..];
            if format::checksum(table) != header.checksum {
                return Err(OpenError::ChecksumTable);
            }
            Blocks::new(header.block_size.trailing_zeros(), header.block_count())
        };
        Ok(Self {
            backing,
            records_start: header.size(),
            header,
            blocks,
            filter: std::sync::OnceLock::new(),
        })
    }

    /// Checks every block not checked yet. Idempotent; safe to run on one
    /// thread while others look codes up.
    pub fn verify(&self) -> Result<(), OpenError> {
        for block in 0..self.blocks.count {
            self.check_block(block)?;
        }
        Ok(())
    }

    /// The first block found damaged so far, if any.
    #[must_use]
    pub fn damage(&self) -> Option<BlockDamage> {
        match self.blocks.first_damaged.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.block_span(n - 1)),
        }
    }

    /// Blocks checked so far, and blocks in all.
    #[must_use]
    pub fn checked_blocks(&self) -> (u64, u64) {
        (self.blocks.checked_count(), self.blocks.count)
    }

    fn block_span(&self, block: u64) -> BlockDamage {
        let start = self.records_start as u64 + (block << self.blocks.shift);
        let end = (start.saturating_add(1 << self.blocks.shift)).min(self.header.checksums_offset);
        BlockDamage { block, start, end }
    }

    /// Checks one block against its checksum, once.
    fn check_block(&self, block: u64) -> Result<(), BlockDamage> {
        let blocks = &self.blocks;
        if Blocks::bit(&blocks.checked, block) {
            return Ok(());
        }
        let span = self.block_span(block);
        if Blocks::bit(&blocks.damaged, block) {
            return Err(span);
        }
        let bytes = self.backing.bytes();
        let at = self.header.checksums_offset as usize + block as usize * format::CHECKSUM_SIZE;
        let stored = u64::from_le_bytes(
            bytes[at..at + format::CHECKSUM_SIZE]
                .try_into()
                .expect("eight bytes"),
        );
        if format::checksum(&bytes[span.start as usize..span.end as usize]) == stored {
            blocks.set_checked(block);
            Ok(())
        } else {
            Blocks::set(&blocks.damaged, block);
            let _ = blocks.first_damaged.compare_exchange(
                0,
                block + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            Err(span)
        }
    }

    /// Checks file bytes `[start, end)` (after the header, before the block
    /// checksums, `start < end`) unless they are already.
    #[inline]
    fn readable(&self, start: usize, end: usize) -> Result<(), BlockDamage> {
        let first = ((start - self.records_start) as u64) >> self.blocks.shift;
        let last = ((end - 1 - self.records_start) as u64) >> self.blocks.shift;
        if first == last && Blocks::bit(&self.blocks.checked, first) {
            return Ok(());
        }
        (first..=last).try_for_each(|block| self.check_block(block))
    }

    /// The header's facts.
    #[must_use]
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            sequence: self.header.sequence,
            record_count: self.header.record_count,
            slot_count: self.header.slot_count,
            file_size_bytes: self.header.file_size,
            records_size_bytes: self.header.records_size,
            created_at_unix_ms: self.header.created_at_unix_ms,
        }
    }

    /// The last change sequence this snapshot includes.
    #[must_use]
    pub fn sequence(&self) -> Seq {
        self.header.sequence
    }

    /// Number of links.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.header.record_count
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.header.record_count == 0
    }

    fn records(&self) -> &[u8] {
        let start = self.records_start;
        &self.backing.bytes()[start..start + self.header.records_size as usize]
    }

    fn index(&self) -> &[u8] {
        let start = self.header.index_offset as usize;
        &self.backing.bytes()[start..self.header.checksums_offset as usize]
    }

    /// Decodes the record at `offset` in `records` (this snapshot's records
    /// region) once its bytes are checked, returning it and the offset after
    /// it; `Err(None)` when it does not decode, `Err(Some(_))` when its
    /// bytes are in a damaged block.
    #[inline]
    fn record_at<'a>(
        &self,
        records: &'a [u8],
        offset: usize,
    ) -> Result<(Entry<'a>, usize), Option<BlockDamage>> {
        let end = offset.checked_add(RECORD_FIXED_SIZE).ok_or(None)?;
        if end > records.len() {
            return Err(None);
        }
        let start = self.records_start;
        self.readable(start + offset, start + end)?;
        let code_len = records[offset] as usize;
        let target_len = u16::from_le_bytes([records[offset + 2], records[offset + 3]]) as usize;
        let mut record_end = end + code_len + target_len;
        if records[offset + 1] & FLAG_HAS_EXTENSIONS != 0 {
            // The extensions' length follows the target.
            let length_end = record_end + 2;
            if length_end > records.len() {
                return Err(None);
            }
            self.readable(start + offset, start + length_end)?;
            record_end = length_end
                + u16::from_le_bytes([records[record_end], records[record_end + 1]]) as usize;
        }
        if record_end > records.len() {
            return Err(None);
        }
        self.readable(start + offset, start + record_end)?;
        decode_record(records, offset).ok_or(None)
    }

    /// Looks `code` up. No lock, no allocation, no copy.
    #[inline(always)]
    #[must_use]
    pub fn get(&self, code: &[u8]) -> Option<LinkView<'_>> {
        self.find(code).and_then(Entry::link)
    }

    /// Looks `code` up, telling a tombstone (a delta segment's deleted code)
    /// from a code the segment does not mention.
    #[inline(always)]
    #[must_use]
    pub fn find(&self, code: &[u8]) -> Option<Entry<'_>> {
        self.find_hashed(code, format::hash_code(code, self.header.hash_seed))
    }

    /// [`Snapshot::find`] with the code's hash under [`Snapshot::hash_seed`]
    /// already computed: a delta segment shares its base's seed, so one
    /// hash serves every segment of a table.
    #[inline(always)]
    #[must_use]
    pub fn find_hashed(&self, code: &[u8], hash: u64) -> Option<Entry<'_>> {
        // Once every block is checked, lookups skip the per-block bits.
        if self.blocks.all.load(Ordering::Relaxed) {
            self.lookup::<false>(code, hash)
        } else {
            self.lookup_checking(code, hash)
        }
    }

    /// Checks every block, then builds the filter that lets a lookup pass
    /// this segment without probing its index when it does not hold the
    /// code (a delta's; for a base, only the check). Idempotent.
    pub fn prepare_filter(&self) -> Result<(), OpenError> {
        self.verify()?;
        if self.header.delta.is_none() || self.filter.get().is_some() {
            return Ok(());
        }
        let mut hashes = Vec::with_capacity(self.header.record_count as usize);
        for entry in self.entries() {
            hashes.push(format::hash_code(entry?.code(), self.header.hash_seed));
        }
        let _ = self
            .filter
            .set(crate::filter::Filter::new(hashes.len(), hashes.into_iter()));
        Ok(())
    }

    /// False when this segment certainly does not hold the code whose hash
    /// (under [`Snapshot::hash_seed`]) is `hash`; true when it may, or when
    /// it has no filter.
    #[inline]
    #[must_use]
    pub fn may_hold(&self, hash: u64) -> bool {
        self.filter.get().is_none_or(|filter| filter.may_hold(hash))
    }

    /// The seed of this segment's index hash.
    #[must_use]
    pub fn hash_seed(&self) -> u64 {
        self.header.hash_seed
    }

    /// For a delta segment, the base and parent it applies to; `None` for a base.
    #[must_use]
    pub fn delta_of(&self) -> Option<DeltaOf> {
        self.header.delta
    }

    /// The identity of the base this segment is or applies to.
    #[must_use]
    pub fn base_id(&self) -> BaseId {
        self.header.delta.map_or(
            BaseId {
                sequence: self.header.sequence,
                seed: self.header.hash_seed,
            },
            |delta| delta.base,
        )
    }

    /// The lookup while some blocks are unchecked, kept out of line and cold
    /// so that the common path is compiled as the lookup was before blocks
    /// were checked; what the remaining branch costs is in
    /// docs/BENCHMARKS.md.
    #[cold]
    #[inline(never)]
    fn lookup_checking(&self, code: &[u8], hash: u64) -> Option<Entry<'_>> {
        self.lookup::<true>(code, hash)
    }

    /// The lookup, checking each block it reads first when `CHECK`.
    #[inline(always)]
    fn lookup<const CHECK: bool>(&self, code: &[u8], hash: u64) -> Option<Entry<'_>> {
        let slot_count = self.header.slot_count;
        let index = self.index();
        let records = self.records();
        let mut i = format::home_slot(hash, slot_count) as usize;
        // Robin Hood order: once the probe is farther from home than the
        // resident is from its own, the code cannot be further on. The bound
        // also ends the loop on a hostile file whose slots are all full.
        let probes_max = slot_count.min(format::PROBE_DISTANCE_MAX + 1);
        for distance in 0..probes_max {
            let at = i * SLOT_SIZE;
            let bytes = index.get(at..at + SLOT_SIZE)?;
            if CHECK {
                let from = self.header.index_offset as usize + at;
                self.readable(from, from + SLOT_SIZE).ok()?;
            }
            let slot = u64::from_le_bytes(bytes.try_into().ok()?);
            if slot == 0 || format::slot_distance(slot) < distance {
                return None;
            }
            if format::slot_tag_matches(slot, hash) {
                let offset = format::slot_record_offset(slot) as usize;
                let found = if CHECK {
                    self.record_at(records, offset).ok()
                } else {
                    decode_record(records, offset)
                };
                if let Some((entry, _)) = found
                    && entry.code() == code
                {
                    return Some(entry);
                }
            }
            i += 1;
            if i as u64 == slot_count {
                i = 0;
            }
        }
        None
    }

    /// Iterates over every link in file order (a delta's tombstones left out).
    pub fn iter(&self) -> impl Iterator<Item = Result<LinkView<'_>, OpenError>> + '_ {
        self.entries()
            .filter_map(|entry| entry.map(Entry::link).transpose())
    }

    /// Iterates over every entry in file order, tombstones included.
    #[must_use]
    pub fn entries(&self) -> RecordIter<'_> {
        RecordIter {
            snapshot: self,
            records: self.records(),
            offset: 0,
            remaining: self.header.record_count,
        }
    }

    /// Decodes every record and checks that each is reachable through the index
    /// and well formed. Slower than [`Snapshot::open`]; for the inspect command
    /// and tests.
    pub fn verify_records(&self) -> Result<u64, OpenError> {
        let mut count = 0u64;
        for entry in self.entries() {
            let entry = entry?;
            let valid = match entry {
                Entry::Link(view) => crate::code::check_target_bytes(view.target).is_ok(),
                Entry::Deleted(_) => self.header.delta.is_some(),
            };
            if !valid || !crate::is_valid_key(entry.code()) {
                return Err(OpenError::Layout("record holds a bad code or target"));
            }
            if self.find(entry.code()) != Some(entry) {
                return Err(OpenError::Layout("record not reachable through the index"));
            }
            count += 1;
        }
        Ok(count)
    }
}

/// Decodes the record at `offset`, returning it and the offset after it.
#[inline]
fn decode_record(records: &[u8], offset: usize) -> Option<(Entry<'_>, usize)> {
    let fixed = records.get(offset..offset.checked_add(RECORD_FIXED_SIZE)?)?;
    let code_len = fixed[0] as usize;
    let flags = fixed[1];
    let target_len = u16::from_le_bytes([fixed[2], fixed[3]]) as usize;
    let link_id = u64::from_le_bytes(fixed[4..12].try_into().ok()?);
    let expires_at = i64::from_le_bytes(fixed[12..20].try_into().ok()?);
    let code_start = offset + RECORD_FIXED_SIZE;
    let target_start = code_start + code_len;
    let end = target_start + target_len;
    let code = records.get(code_start..target_start)?;
    let target = records.get(target_start..end)?;
    if flags & FLAG_STATUS_MASK == STATUS_DELETED {
        return (target_len == 0 && flags & FLAG_HAS_EXTENSIONS == 0)
            .then_some((Entry::Deleted(code), end));
    }
    let mut changed_at = None;
    let mut routing = None;
    let mut extensions: &[u8] = &[];
    let end = if flags & FLAG_HAS_EXTENSIONS == 0 {
        end
    } else {
        let length = records.get(end..end + 2)?;
        let items_start = end + 2;
        let items_end = items_start + u16::from_le_bytes([length[0], length[1]]) as usize;
        let all = records.get(items_start..items_end)?;
        extensions = all;
        let mut items = all;
        while !items.is_empty() {
            let (tag, value, rest) = extension::next(items)?;
            if tag == extension::CHANGED_AT {
                changed_at = Some(i64::from_le_bytes(value.try_into().ok()?));
            } else if tag == extension::ROUTING {
                routing = Some(value);
            }
            items = rest;
        }
        items_end
    };
    let view = LinkView {
        code,
        target,
        link_id: LinkId(link_id),
        status: LinkStatus::from_bits(flags & FLAG_STATUS_MASK)?,
        redirect: RedirectStatus::from_bits(flags >> FLAG_REDIRECT_SHIFT),
        expires_at: (flags & FLAG_HAS_EXPIRY != 0).then_some(expires_at),
        forward_query: flags & FLAG_FORWARD_QUERY != 0,
        changed_at,
        previous: Previous::Encoded(extensions),
        routing,
    };
    Some((Entry::Link(view), end))
}

/// Iterator over a snapshot's records; yields an error and stops at the first
/// record that does not decode.
#[derive(Debug)]
pub struct RecordIter<'a> {
    snapshot: &'a Snapshot,
    records: &'a [u8],
    offset: usize,
    remaining: u64,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Entry<'a>, OpenError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        match self.snapshot.record_at(self.records, self.offset) {
            Ok((view, next)) => {
                self.remaining -= 1;
                self.offset = next;
                Some(Ok(view))
            }
            Err(damage) => {
                self.remaining = 0;
                Some(Err(damage.map_or(
                    OpenError::Layout("record does not decode"),
                    OpenError::from,
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Code, LinkRecord, Target, encode_snapshot};

    fn record(code: &str, id: u64) -> LinkRecord {
        LinkRecord::new(
            Code::parse(code).unwrap(),
            Target::parse(&format!("https://example.com/{code}")).unwrap(),
            LinkId(id),
        )
    }

    #[test]
    fn finds_what_was_written_and_nothing_else() {
        let records: Vec<_> = (0..1000).map(|i| record(&format!("c{i}"), i)).collect();
        let snapshot = Snapshot::from_bytes(encode_snapshot(Seq(3), &records).unwrap()).unwrap();
        assert_eq!(snapshot.len(), 1000);
        assert_eq!(snapshot.sequence(), Seq(3));
        for r in &records {
            assert_eq!(snapshot.get(r.code.as_bytes()), Some(r.view()));
        }
        assert_eq!(snapshot.get(b"c1000"), None);
        assert_eq!(snapshot.get(b""), None);
        assert_eq!(snapshot.verify_records().unwrap(), 1000);
    }

    #[test]
    fn every_size_reaches_every_record_including_wrapped_runs() {
        for n in 0..300u64 {
            let records: Vec<_> = (0..n).map(|i| record(&format!("w{i}"), i)).collect();
            let snapshot =
                Snapshot::from_bytes(encode_snapshot(Seq(1), &records).unwrap()).unwrap();
            assert_eq!(snapshot.verify_records().unwrap(), n, "n = {n}");
            assert!(snapshot.get(b"absent").is_none());
        }
    }

    #[test]
    fn empty_snapshot_answers_nothing() {
        let snapshot = Snapshot::empty();
        assert!(snapshot.is_empty());
        assert_eq!(snapshot.get(b"a"), None);
        assert_eq!(snapshot.iter().count(), 0);
    }

    #[test]
    fn duplicate_codes_are_refused() {
        let err = encode_snapshot(Seq(1), [record("a", 1), record("a", 2)]).unwrap_err();
        assert!(matches!(err, crate::WriteError::DuplicateCode(code) if code == "a"));
    }

    #[test]
    fn every_field_round_trips() {
        let mut r = record("x-Y_9", u64::MAX);
        r.status = LinkStatus::Exhausted;
        r.redirect = RedirectStatus::Permanent;
        r.expires_at = Some(-5);
        r.forward_query = true;
        r.changed_at = Some(1_700_000_000);
        r.previous = ["https://a.example/", "https://b.example/"]
            .iter()
            .enumerate()
            .map(|(i, t)| crate::PreviousTarget {
                until: 1_600_000_000 + i64::try_from(i).unwrap(),
                target: Target::parse(t).unwrap(),
            })
            .collect();
        let split = crate::routing::Routing {
            rules: vec![crate::routing::Rule {
                when: crate::routing::Conditions {
                    os: crate::routing::os::IOS,
                    ..Default::default()
                },
                target: Target::parse("https://apps.example/").unwrap(),
            }],
            variants: Vec::new(),
            sticky: false,
        };
        r.routing = crate::routing::Encoded::new(&split);
        let snapshot = Snapshot::from_bytes(encode_snapshot(Seq(1), [&r]).unwrap()).unwrap();
        let found = snapshot.get(b"x-Y_9").unwrap();
        assert_eq!(found, r.view());
        assert_eq!(found.to_record(), Some(r));
    }

    #[test]
    fn routing_takes_the_room_before_previous_targets() {
        let mut r = record("ruled", 1);
        let rules = (0..crate::routing::RULES_MAX)
            .map(|i| crate::routing::Rule {
                when: crate::routing::Conditions {
                    from: Some(i as i64),
                    ..Default::default()
                },
                target: Target::parse(&format!("https://r.example/{i}/{}", "y".repeat(900)))
                    .unwrap(),
            })
            .collect();
        let routing = crate::routing::Routing {
            rules,
            variants: Vec::new(),
            sticky: false,
        };
        routing.check().unwrap();
        r.routing = crate::routing::Encoded::new(&routing);
        r.previous = (0..12)
            .map(|i| crate::PreviousTarget {
                until: i,
                target: Target::parse(&format!("https://e.example/{i}/{}", "x".repeat(8000)))
                    .unwrap(),
            })
            .collect();
        let snapshot = Snapshot::from_bytes(encode_snapshot(Seq(1), [&r]).unwrap()).unwrap();
        let found = snapshot.get(b"ruled").unwrap();
        assert_eq!(
            found.routing,
            r.routing.as_ref().map(crate::routing::Encoded::as_bytes)
        );
        let kept = found.previous.iter().count();
        assert!((1..12).contains(&kept), "{kept} previous targets kept");
    }

    #[test]
    fn previous_targets_keep_the_newest_that_fit() {
        let mut r = record("long", 1);
        r.previous = (0..12)
            .map(|i| crate::PreviousTarget {
                until: i,
                target: Target::parse(&format!("https://e.example/{i}/{}", "x".repeat(8000)))
                    .unwrap(),
            })
            .collect();
        let snapshot = Snapshot::from_bytes(encode_snapshot(Seq(1), [&r]).unwrap()).unwrap();
        let kept: Vec<i64> = snapshot
            .get(b"long")
            .unwrap()
            .previous
            .iter()
            .map(|(until, _)| until)
            .collect();
        assert_eq!(kept, (4..12).collect::<Vec<_>>(), "the newest eight fit");
    }

    #[test]
    fn records_with_and_without_extensions_sit_side_by_side() {
        let records: Vec<_> = (0..500)
            .map(|i| {
                let mut r = record(&format!("e{i}"), i);
                r.changed_at = (i % 3 == 0).then_some(i64::try_from(i).unwrap() * 1000);
                r
            })
            .collect();
        let snapshot = Snapshot::from_bytes(encode_snapshot(Seq(2), &records).unwrap()).unwrap();
        for r in &records {
            assert_eq!(snapshot.get(r.code.as_bytes()), Some(r.view()));
        }
        // Walking the records steps over each one's extensions.
        assert_eq!(snapshot.verify_records().unwrap(), 500);
    }

    #[test]
    fn an_unknown_extension_is_skipped_and_a_short_one_refused() {
        let mut records = Vec::new();
        let mut r = record("ext", 7);
        r.changed_at = Some(42);
        crate::writer::encode_record_for_test(&mut records, &r);
        // Put an item of an unknown tag before the known one.
        let items_at = RECORD_FIXED_SIZE + 3 + r.target.as_str().len();
        let unknown = [9, 3, 0, b'a', b'b', b'c'];
        let length = u16::from_le_bytes([records[items_at], records[items_at + 1]]);
        let grown = length + unknown.len() as u16;
        records[items_at..items_at + 2].copy_from_slice(&grown.to_le_bytes());
        records.splice(items_at + 2..items_at + 2, unknown);
        let (entry, end) = decode_record(&records, 0).unwrap();
        assert_eq!(end, records.len());
        let Entry::Link(view) = entry else {
            panic!("a link")
        };
        assert_eq!(view.changed_at, Some(42));
        // An item longer than the extensions holds is not a record.
        records[items_at + 2 + 1] = 200;
        assert!(decode_record(&records, 0).is_none());
    }
}
