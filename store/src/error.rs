//! Error values for opening and writing snapshot files.

use std::path::PathBuf;

/// Why a snapshot could not be opened. A corrupt, truncated or foreign file is
/// always one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot read snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot is truncated: {len} bytes, expected {expected}")]
    Truncated { len: u64, expected: u64 },
    #[error("not a shortline snapshot (bad magic)")]
    Foreign,
    #[error(
        "snapshot format version {found} is not supported (this build reads versions 1 to {supported})"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("snapshot header checksum mismatch")]
    HeaderChecksum,
    #[error("snapshot body checksum mismatch: the file is corrupt")]
    BodyChecksum,
    #[error("snapshot block checksum table mismatch: the file is corrupt")]
    ChecksumTable,
    #[error(
        "snapshot block {block} (bytes {start} to {end}) does not match its checksum: the file is corrupt"
    )]
    BlockChecksum { block: u64, start: u64, end: u64 },
    #[error("snapshot layout is inconsistent: {0}")]
    Layout(&'static str),
}

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("code {0:?} appears twice")]
    DuplicateCode(String),
    #[error("snapshot would exceed the format's limit of {limit} record bytes")]
    TooLarge { limit: u64 },
    #[error("code {0:?} is a tombstone, which only a delta segment may hold")]
    TombstoneInBase(String),
    #[error("cannot read a segment being merged: {0}")]
    Read(#[from] OpenError),
    #[error("index probe distance overflowed with every seed tried")]
    Clustered,
}
