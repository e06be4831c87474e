//! Shortline's data plane: a Pingora server that answers `GET`/`HEAD /{code}`
//! from the live snapshot table and captures clicks without waiting.
//!
//! ```
//! use shortline_proxy::app::answer;
//! use shortline_store::{Code, LinkId, LinkRecord, LiveTable, Seq, Snapshot, Target, encode_snapshot};
//!
//! let record = LinkRecord::new(Code::parse("abc").unwrap(), Target::parse("https://example.com/").unwrap(), LinkId(1));
//! let table = LiveTable::new(Snapshot::from_bytes(encode_snapshot(Seq(1), [&record]).unwrap()).unwrap());
//! let view = table.load();
//! let mut buffer = Vec::new();
//! let reply = answer(&view, &http::Method::GET, b"/abc", 0, &mut buffer);
//! assert_eq!(reply.status, 302);
//! assert_eq!(reply.location, Some(&b"https://example.com/"[..]));
//! ```

pub mod answer;
pub mod app;
pub mod clicks;
mod codec;
pub mod config;
pub mod drain;
pub mod guard;
pub mod history;
pub mod journal;
pub mod metrics;
mod pages;
pub mod path;
pub mod shipper;
pub mod snapshots;
pub mod sync;
pub mod targeting;
pub mod tls;
pub mod upstream;
