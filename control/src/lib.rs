//! Shortline's control plane: the sidecar that owns every write.
//!
//! It serves the admin REST API, authenticates callers, validates targets,
//! allocates codes, commits links to the metadata store with group commit, and
//! keeps proxies current through snapshots and a change stream.
//!
//! The modules are layers, and a module only uses the layers below it (a
//! test in `tests/layers.rs` checks this):
//!
//! | layer | modules | what it holds |
//! |-------|---------|---------------|
//! | app | [`app`] | the process: start-up, listeners, shutdown, `up` |
//! | http | [`http`] | the only axum code: routes, extractors, problem documents |
//! | tasks | [`tasks`] | background loops and multi-transaction walks: snapshots, the change stream, expiry, abuse sweeps |
//! | state | [`state`] | the shared services one process holds: rate limits, id leases, the key cache |
//! | analytics | [`analytics`] | click folding, the click log, stats queries |
//! | commit | [`commit`] | group commit: one thread, one transaction per batch of writes |
//! | domain | [`domain`] | the rules, as functions over one transaction |
//! | base | [`db`], [`model`], [`config`] | the store interface and key schema, stored documents, settings |
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = shortline_control::config::Config::load(None, &Default::default())?;
//! shortline_control::app::server::serve(config).await
//! # }
//! ```

pub mod analytics;
pub mod app;
pub mod commit;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod model;
pub mod state;
pub mod tasks;
