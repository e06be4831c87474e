//! The snapshot file's byte layout. `docs/snapshot-format.md` describes the
//! same layout for people; the constants here are the source of truth.
//!
//! ```text
//! [header: 128 bytes][records: packed, variable size][pad to 8][index: slot_count x u64]
//! [block checksums: block_count x u64]
//! ```
//!
//! Everything between the header and the block checksums is covered block by
//! block (`block_size` bytes each, the last one shorter), so a reader checks
//! a block when it first touches it instead of the whole file at open.
//! Version 1 files (no block checksums, one checksum over the whole body)
//! are still read.
//!
//! All integers are little-endian and read with `from_le_bytes`, so nothing in
//! the file needs to be aligned and no byte pattern is undefined behaviour.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::error::OpenError;
use crate::record::Seq;

/// The first eight bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"SHRTLNK\0";
/// The layout version this build writes for a base (a whole table).
/// Version 4 is version 2 with record extensions (flag bit 7 of a record);
/// a build that reads only up to 3 refuses it rather than misread a record.
pub const FORMAT_VERSION: u32 = 4;
/// The layout version of a delta segment: the changes to a base since a
/// parent segment, with deleted codes as tombstones. Its header is
/// [`DELTA_HEADER_SIZE`] bytes. Version 5 is version 3 with record
/// extensions.
pub const DELTA_FORMAT_VERSION: u32 = 5;

/// Whether a layout version is a delta segment's (3, 5) or a base's (1, 2, 4).
#[must_use]
pub const fn is_delta_version(version: u32) -> bool {
    version == 3 || version == 5
}
/// The oldest layout version this build reads.
pub const FORMAT_VERSION_MIN: u32 = 1;
/// Bytes per checksummed block in the files this build writes.
pub const BLOCK_SIZE: u64 = 64 * 1024;
/// The block sizes a reader accepts: powers of two in this range.
pub const BLOCK_SIZE_MIN: u64 = 4 * 1024;
pub const BLOCK_SIZE_MAX: u64 = 1 << 30;
/// Size of one block checksum.
pub const CHECKSUM_SIZE: usize = 8;
/// Size of the fixed header (versions 1 and 2), and of the part every
/// version shares.
pub const HEADER_SIZE: usize = 128;
/// Size of a delta segment's header: the shared part, then which base and
/// parent segment the delta applies to.
pub const DELTA_HEADER_SIZE: usize = 160;
/// Size of a record's fixed part, before the code and target bytes.
pub const RECORD_FIXED_SIZE: usize = 20;
/// Size of one index slot.
pub const SLOT_SIZE: usize = 8;
/// Index slots per record, as a fraction: 4/3 slots per record keeps the load
/// factor at 0.75, short probe runs and under 11 bytes of index per link.
pub const SLOTS_PER_RECORD_NUMERATOR: u64 = 4;
pub const SLOTS_PER_RECORD_DENOMINATOR: u64 = 3;
/// Record offsets are stored in the low 40 bits of a slot (a 1 TiB region).
pub const RECORD_OFFSET_MAX: u64 = (1 << 40) - 2;
/// The longest Robin Hood probe distance a slot can record.
pub const PROBE_DISTANCE_MAX: u64 = 255;

const SLOT_OFFSET_MASK: u64 = (1 << 40) - 1;
const SLOT_DISTANCE_SHIFT: u32 = 40;
const HEADER_CHECKSUM_OFFSET: usize = 120;

const _: () = assert!(HEADER_SIZE.is_multiple_of(SLOT_SIZE));
const _: () = assert!(HEADER_CHECKSUM_OFFSET + 8 == HEADER_SIZE);
const _: () = assert!(crate::code::KEY_LEN_MAX <= u8::MAX as usize);
const _: () = assert!(crate::code::TARGET_LEN_MAX <= u16::MAX as usize);

/// Flag bits in a record's second byte.
pub(crate) const FLAG_STATUS_MASK: u8 = 0b0000_0111;
pub(crate) const FLAG_REDIRECT_SHIFT: u8 = 3;
pub(crate) const FLAG_FORWARD_QUERY: u8 = 0b0010_0000;
pub(crate) const FLAG_HAS_EXPIRY: u8 = 0b0100_0000;
/// Set when the record's target is followed by extensions: a `u16` length,
/// then items of a tag byte, a `u16` length and that many bytes. Readers
/// skip tags they do not know. Versions 4 and 5 only.
pub(crate) const FLAG_HAS_EXTENSIONS: u8 = 0b1000_0000;
/// The status bits of a tombstone: a code deleted since the parent segment.
/// Only delta segments hold them; their target is empty.
pub(crate) const STATUS_DELETED: u8 = 5;

/// What a delta segment applies to: a base, named by its sequence and hash
/// seed (a base rebuilt at the same sequence has another seed), and the
/// segment it follows (the base itself, or a delta over it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeltaOf {
    pub base: BaseId,
    /// The sequence this delta starts after: the base's or an earlier delta's.
    pub parent: Seq,
}

/// A base's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BaseId {
    pub sequence: Seq,
    pub seed: u64,
}

impl std::fmt::Display for BaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (seed {:016x})", self.sequence.0, self.seed)
    }
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// [`FORMAT_VERSION_MIN`] to [`FORMAT_VERSION`].
    pub version: u32,
    pub sequence: Seq,
    pub record_count: u64,
    pub slot_count: u64,
    pub records_size: u64,
    pub index_offset: u64,
    pub file_size: u64,
    pub hash_seed: u64,
    pub created_at_unix_ms: u64,
    /// Version 2: XXH3-64 of the block checksum table. Version 1: XXH3-64
    /// of every byte after the header.
    pub checksum: u64,
    /// Version 2: bytes per checksummed block. Version 1: 0.
    pub block_size: u64,
    /// Where the block checksum table starts, right after the index.
    /// Version 1: `file_size` (there is no table).
    pub checksums_offset: u64,
    /// Version 3: what the delta applies to. `None` for a base.
    pub delta: Option<DeltaOf>,
}

/// XXH3-64 of a header's bytes but its checksum field.
fn header_checksum(bytes: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&bytes[..HEADER_CHECKSUM_OFFSET]);
    hasher.update(&bytes[HEADER_SIZE..]);
    hasher.digest()
}

/// A header's size for its version.
#[must_use]
pub fn header_size(version: u32) -> usize {
    if is_delta_version(version) {
        DELTA_HEADER_SIZE
    } else {
        HEADER_SIZE
    }
}

impl Header {
    /// Bytes of header, where the records start.
    #[must_use]
    pub fn size(&self) -> usize {
        header_size(self.version)
    }

    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let size = self.size();
        let mut out = vec![0u8; size];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&(size as u32).to_le_bytes());
        let mut fields = vec![
            self.sequence.0,
            self.record_count,
            self.slot_count,
            size as u64,
            self.records_size,
            self.index_offset,
            self.file_size,
            self.hash_seed,
            self.created_at_unix_ms,
            self.checksum,
        ];
        if self.version >= 2 {
            fields.extend([self.block_size, self.checksums_offset]);
        }
        if let Some(delta) = self.delta {
            // Offset 112: the kind (1, a delta); 128 onwards: what it applies to.
            fields.push(1);
            fields.push(0);
            fields.extend([delta.base.sequence.0, delta.base.seed, delta.parent.0, 0]);
        }
        for (i, value) in fields.iter().enumerate() {
            let at = 16 + i * 8;
            if at != HEADER_CHECKSUM_OFFSET {
                out[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        let checksum = header_checksum(&out);
        out[HEADER_CHECKSUM_OFFSET..HEADER_SIZE].copy_from_slice(&checksum.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, OpenError> {
        Self::decode_for_length(bytes, bytes.len() as u64)
    }

    pub fn decode_for_length(bytes: &[u8], file_len: u64) -> Result<Self, OpenError> {
        if bytes.len() < HEADER_SIZE {
            return Err(OpenError::Truncated {
                len: bytes.len() as u64,
                expected: HEADER_SIZE as u64,
            });
        }
        if bytes[0..8] != MAGIC {
            return Err(OpenError::Foreign);
        }
        let version = read_u32(bytes, 8);
        if !(FORMAT_VERSION_MIN..=DELTA_FORMAT_VERSION).contains(&version) {
            return Err(OpenError::UnsupportedVersion {
                found: version,
                supported: DELTA_FORMAT_VERSION,
            });
        }
        let size = header_size(version);
        if bytes.len() < size {
            return Err(OpenError::Truncated {
                len: bytes.len() as u64,
                expected: size as u64,
            });
        }
        let stored_checksum = read_u64(bytes, HEADER_CHECKSUM_OFFSET);
        if header_checksum(&bytes[..size]) != stored_checksum {
            return Err(OpenError::HeaderChecksum);
        }
        if read_u32(bytes, 12) as usize != size || read_u64(bytes, 40) != size as u64 {
            return Err(OpenError::Layout("header size"));
        }
        let delta = if is_delta_version(version) {
            if read_u64(bytes, 112) != 1 {
                return Err(OpenError::Layout("unknown segment kind"));
            }
            Some(DeltaOf {
                base: BaseId {
                    sequence: Seq(read_u64(bytes, 128)),
                    seed: read_u64(bytes, 136),
                },
                parent: Seq(read_u64(bytes, 144)),
            })
        } else {
            None
        };
        let file_size = read_u64(bytes, 64);
        let (block_size, checksums_offset) = if version >= 2 {
            (read_u64(bytes, 96), read_u64(bytes, 104))
        } else {
            (0, file_size)
        };
        let header = Self {
            version,
            sequence: Seq(read_u64(bytes, 16)),
            record_count: read_u64(bytes, 24),
            slot_count: read_u64(bytes, 32),
            records_size: read_u64(bytes, 48),
            index_offset: read_u64(bytes, 56),
            file_size,
            hash_seed: read_u64(bytes, 72),
            created_at_unix_ms: read_u64(bytes, 80),
            checksum: read_u64(bytes, 88),
            block_size,
            checksums_offset,
            delta,
        };
        header.check_layout(file_len)?;
        Ok(header)
    }

    /// Number of checksummed blocks (version 2; 0 in version 1).
    #[must_use]
    pub fn block_count(&self) -> u64 {
        if self.block_size == 0 {
            return 0;
        }
        (self.checksums_offset - self.size() as u64).div_ceil(self.block_size)
    }

    fn check_layout(&self, file_len: u64) -> Result<(), OpenError> {
        if file_len != self.file_size {
            return Err(if file_len < self.file_size {
                OpenError::Truncated {
                    len: file_len,
                    expected: self.file_size,
                }
            } else {
                OpenError::Layout("file is longer than its header says")
            });
        }
        if let Some(delta) = self.delta
            && (delta.parent >= self.sequence || delta.parent < delta.base.sequence)
        {
            return Err(OpenError::Layout(
                "a delta must follow its parent and start at or after its base",
            ));
        }
        let records_end = (self.size() as u64)
            .checked_add(self.records_size)
            .ok_or(OpenError::Layout("records size overflows"))?;
        if self.index_offset != align_up(records_end) {
            return Err(OpenError::Layout("index does not follow the records"));
        }
        let index_size = self
            .slot_count
            .checked_mul(SLOT_SIZE as u64)
            .ok_or(OpenError::Layout("slot count overflows"))?;
        if self.index_offset.checked_add(index_size) != Some(self.checksums_offset) {
            return Err(OpenError::Layout(
                "index does not end where the header says",
            ));
        }
        if self.version >= 2 {
            if !self.block_size.is_power_of_two()
                || !(BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&self.block_size)
            {
                return Err(OpenError::Layout("block size out of range"));
            }
            let table = self.block_count() * CHECKSUM_SIZE as u64;
            if self.checksums_offset.checked_add(table) != Some(self.file_size) {
                return Err(OpenError::Layout("block checksums do not end the file"));
            }
        }
        if self.slot_count <= self.record_count {
            return Err(OpenError::Layout("index has no free slot"));
        }
        if self.records_size > RECORD_OFFSET_MAX {
            return Err(OpenError::Layout("records region too large"));
        }
        if self.record_count > self.records_size / RECORD_FIXED_SIZE as u64 {
            return Err(OpenError::Layout("more records than the region can hold"));
        }
        Ok(())
    }
}

/// XXH3-64 of `bytes`: the body checksum of version 1, the checksum of a
/// block and of the block checksum table in version 2.
#[must_use]
pub fn checksum(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// The block checksum table of `body` (every byte after the header, up to
/// the table), as stored: one little-endian XXH3-64 per `block_size` bytes.
#[must_use]
pub fn block_checksums(body: &[u8], block_size: u64) -> Vec<u8> {
    body.chunks(block_size as usize)
        .flat_map(|block| checksum(block).to_le_bytes())
        .collect()
}

#[must_use]
pub fn slot_count_for(record_count: u64) -> u64 {
    (record_count * SLOTS_PER_RECORD_NUMERATOR).div_ceil(SLOTS_PER_RECORD_DENOMINATOR) + 1
}

/// Rounds up to the slot size, so the index starts aligned for fast reads.
#[must_use]
pub fn align_up(offset: u64) -> u64 {
    offset.div_ceil(SLOT_SIZE as u64) * SLOT_SIZE as u64
}

/// The hash of a code, as used by the index.
#[inline]
#[must_use]
pub fn hash_code(code: &[u8], seed: u64) -> u64 {
    xxh3_64_with_seed(code, seed)
}

/// The slot a hash starts probing from: a multiply-shift range reduction,
/// which uses the hash's high bits.
#[inline]
#[must_use]
pub fn home_slot(hash: u64, slot_count: u64) -> u64 {
    ((u128::from(hash) * u128::from(slot_count)) >> 64) as u64
}

/// Packs a 16-bit tag from the hash's low bits (the home slot uses the high
/// bits, so the two are independent), the entry's probe distance from its
/// home slot, and its record offset.
#[inline]
#[must_use]
pub fn encode_slot(hash: u64, distance: u64, record_offset: u64) -> u64 {
    debug_assert!(record_offset <= RECORD_OFFSET_MAX);
    debug_assert!(distance <= PROBE_DISTANCE_MAX);
    (hash << 48) | (distance << SLOT_DISTANCE_SHIFT) | (record_offset + 1)
}

/// How far an occupied slot's entry sits from its home slot.
#[inline]
#[must_use]
pub fn slot_distance(slot: u64) -> u64 {
    (slot >> SLOT_DISTANCE_SHIFT) & 0xff
}

/// Whether an occupied slot's tag matches a hash.
#[inline]
#[must_use]
pub fn slot_tag_matches(slot: u64, hash: u64) -> bool {
    (slot >> 48) == (hash & 0xffff)
}

/// The record offset stored in an occupied slot.
#[inline]
#[must_use]
pub fn slot_record_offset(slot: u64) -> u64 {
    // A damaged slot may hold a tag with no offset: it wraps to an offset
    // no records region has, which the bounds checks refuse.
    (slot & SLOT_OFFSET_MASK).wrapping_sub(1)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: FORMAT_VERSION,
            sequence: Seq(9),
            record_count: 0,
            slot_count: 1,
            records_size: 0,
            index_offset: HEADER_SIZE as u64,
            file_size: HEADER_SIZE as u64 + 16,
            hash_seed: 42,
            created_at_unix_ms: 1,
            checksum: 5,
            block_size: BLOCK_SIZE,
            checksums_offset: HEADER_SIZE as u64 + 8,
            delta: None,
        }
    }

    #[test]
    fn header_round_trips() {
        let header = sample();
        let mut file = header.encode().to_vec();
        file.extend_from_slice(&[0; 16]);
        assert_eq!(Header::decode(&file).unwrap(), header);
        assert_eq!(header.block_count(), 1);
        let v1 = Header {
            version: 1,
            block_size: 0,
            checksums_offset: HEADER_SIZE as u64 + 8,
            file_size: HEADER_SIZE as u64 + 8,
            ..header
        };
        let mut file = v1.encode().to_vec();
        file.extend_from_slice(&[0; 8]);
        assert_eq!(Header::decode(&file).unwrap(), v1);
        assert_eq!(v1.block_count(), 0);
        let delta = Header {
            version: DELTA_FORMAT_VERSION,
            index_offset: DELTA_HEADER_SIZE as u64,
            checksums_offset: DELTA_HEADER_SIZE as u64 + 8,
            file_size: DELTA_HEADER_SIZE as u64 + 16,
            delta: Some(DeltaOf {
                base: BaseId {
                    sequence: Seq(3),
                    seed: 77,
                },
                parent: Seq(5),
            }),
            ..header
        };
        let mut file = delta.encode();
        assert_eq!(file.len(), DELTA_HEADER_SIZE);
        file.extend_from_slice(&[0; 16]);
        assert_eq!(Header::decode(&file).unwrap(), delta);
        let mut flipped = file.clone();
        flipped[140] ^= 1;
        assert!(
            matches!(Header::decode(&flipped), Err(OpenError::HeaderChecksum)),
            "the checksum covers what the delta applies to"
        );
        let backwards = Header {
            delta: Some(DeltaOf {
                base: BaseId {
                    sequence: Seq(3),
                    seed: 77,
                },
                parent: Seq(9),
            }),
            ..delta
        };
        let mut file = backwards.encode();
        file.extend_from_slice(&[0; 16]);
        assert!(matches!(Header::decode(&file), Err(OpenError::Layout(_))));
    }

    #[test]
    fn header_checks_magic_version_and_checksum() {
        let mut file = sample().encode().to_vec();
        file.extend_from_slice(&[0; 16]);
        let mut foreign = file.clone();
        foreign[0] = b'X';
        assert!(matches!(Header::decode(&foreign), Err(OpenError::Foreign)));
        let mut version = file.clone();
        version[8] = 6;
        assert!(matches!(
            Header::decode(&version),
            Err(OpenError::UnsupportedVersion { found: 6, .. })
        ));
        let mut flipped = file.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            Header::decode(&flipped),
            Err(OpenError::HeaderChecksum)
        ));
        assert!(matches!(
            Header::decode(&file[..file.len() - 1]),
            Err(OpenError::Truncated { .. })
        ));
    }

    #[test]
    fn slots_carry_tag_and_offset() {
        let hash = 0xdead_beef_1234_5678;
        let slot = encode_slot(hash, 9, 77);
        assert!(slot_tag_matches(slot, hash));
        assert!(!slot_tag_matches(slot, hash ^ 1));
        assert_eq!(slot_record_offset(slot), 77);
        assert_eq!(slot_distance(slot), 9);
        let far = encode_slot(u64::MAX, PROBE_DISTANCE_MAX, RECORD_OFFSET_MAX);
        assert_eq!(slot_distance(far), PROBE_DISTANCE_MAX);
        assert_eq!(slot_record_offset(far), RECORD_OFFSET_MAX);
        assert!(slot_tag_matches(far, u64::MAX));
        assert_ne!(encode_slot(hash, 0, 0), 0, "an occupied slot is never zero");
    }
}
