//! What `shortline-control` and `shortline-proxy` share, defined once so the
//! two cannot drift: the layered configuration loader (a TOML file, then
//! `SHORTLINE_<KEY>` variables, with one syntax for booleans, integers and
//! lists), the log set-up, the data directory's layout, the internal token,
//! the check of a listen address before start-up, and the country database.
//!
//! ```
//! use shortline_common::settings::{Kind, layered};
//!
//! #[derive(serde::Deserialize, Default)]
//! #[serde(default)]
//! struct Settings {
//!     threads: u32,
//!     capture: bool,
//! }
//!
//! let keys = [("threads", Kind::Integer), ("capture", Kind::Bool)];
//! let env = vec![
//!     ("SHORTLINE_THREADS".to_owned(), "4".to_owned()),
//!     ("SHORTLINE_CAPTURE".to_owned(), "yes".to_owned()),
//! ];
//! let settings: Settings = layered(None, &env, &keys).unwrap();
//! assert_eq!((settings.threads, settings.capture), (4, true));
//! ```

pub mod geo;
pub mod layout;
pub mod listen;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;
