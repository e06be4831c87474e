//! The snapshot table: Shortline's link table as the data plane sees it.
//!
//! The proxy answers every redirect from one immutable, memory-mapped file (a
//! [`Snapshot`]) plus a small overlay of changes newer than that file. Both are
//! held together in a [`LiveTable`], whose current [`View`] is swapped atomically:
//! readers never wait and never see a half-applied change.
//!
//! This crate has no async runtime, no network and no database. It is shared by
//! the proxy (which reads snapshots) and the control plane (which writes them).
//!
//! ```
//! use shortline_store::{Code, LinkId, LinkRecord, LiveTable, Seq, Snapshot, Target, write_snapshot};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("links.snap");
//! let record = LinkRecord::new(
//!     Code::parse("abc123")?,
//!     Target::parse("https://example.com/")?,
//!     LinkId(7),
//! );
//! write_snapshot(&path, Seq(1), [&record])?;
//!
//! let table = LiveTable::new(Snapshot::open(&path)?);
//! let view = table.load();
//! let link = view.get(b"abc123").expect("the code was written");
//! assert_eq!(link.target(), b"https://example.com/");
//! assert!(view.get(b"nope").is_none());
//! # Ok(())
//! # }
//! ```

pub mod clickwire;
mod code;
pub mod domain;
mod error;
mod extension;
pub mod files;
mod filter;
pub mod format;
mod live;
mod reader;
mod record;
pub mod routing;
#[cfg(feature = "serde")]
pub mod stream;
mod writer;

pub use code::{
    CODE_LEN_MAX, Code, CodeError, DOMAIN_LEN_MAX, KEY_LEN_MAX, TARGET_LEN_MAX, Target,
    TargetError, is_valid_code, is_valid_domain, is_valid_key,
};
pub use error::{OpenError, WriteError};
pub use format::{BaseId, DeltaOf};
pub use live::{Change, InstallError, LiveTable, Newer, View};
pub use reader::{BlockDamage, Entry, RecordIter, Snapshot, SnapshotInfo};
pub use record::{
    LinkId, LinkRecord, LinkStatus, LinkView, Previous, PreviousTarget, RedirectStatus, Resolution,
    Seq,
};
pub use writer::{SnapshotStats, SnapshotWriter, encode_delta, encode_snapshot, write_snapshot};
