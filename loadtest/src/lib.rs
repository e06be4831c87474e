//! A verifying load tester for Shortline.
//!
//! Goose's scenario model (weighted transactions, users, ramp-up, a run time)
//! on a lean hyper engine: one task per connection with HTTP/1.1 keep-alive.
//! Every redirect's status and `Location` is checked against the link it
//! asked for, and every create's and stats read's answer against what was
//! asked; any error or mismatch makes the run fail, and the first failures
//! are printed in full.
//!
//! ```
//! use shortline_loadtest::scenario::{Scenario, Transaction, parse_weights, schedule};
//!
//! let weights = parse_weights("redirect-zipf:100,create:1").unwrap();
//! assert_eq!(weights, Scenario::Mixed.weights());
//! assert_eq!(schedule(&weights).len(), 101);
//! assert!(Transaction::Create.needs_control());
//! ```

pub mod conn;
pub mod failures;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod seed;
pub mod soak;
pub mod worker;
