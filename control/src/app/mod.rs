//! The process: opening the store, binding the listeners, starting the
//! background tasks, serving until a signal ([`server`]), and `up`, which
//! runs the control plane and a proxy together ([`up`]).

mod bulk;
pub mod formats;
pub mod import;
mod rows;
pub mod server;
pub mod up;
