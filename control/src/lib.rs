//! Shortline's control plane: the sidecar that owns every write.
//!
//! It serves the admin REST API, authenticates callers, validates targets,
//! allocates codes, commits links to the metadata store with group commit, and
//! keeps proxies current through snapshots and a change stream.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = shortline_control::config::Config::load(None, &Default::default())?;
//! shortline_control::server::serve(config).await
//! # }
//! ```

pub mod abuse;
pub mod abuse_api;
pub mod analytics;
pub mod api;
pub mod auth;
pub mod clicks;
pub mod codes;
pub mod committer;
pub mod config;
pub mod db;
pub mod error;
pub mod links;
pub mod model;
pub mod publish;
pub mod server;
pub mod state;
pub mod stats_api;
pub mod up;
pub mod validate;
