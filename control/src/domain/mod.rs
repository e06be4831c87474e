//! The link shortener's rules, as functions over a store transaction.
//!
//! Every operation here takes a [`ReadTxn`](crate::db::ReadTxn) or a
//! [`Txn`](crate::db::Txn), checks every precondition before it writes, and
//! answers with an [`Outcome`]: the outer result is the store's own failure
//! (which aborts the transaction), the inner one a refusal of the request
//! (which leaves nothing behind, so the transaction it shares with other
//! requests under group commit still commits). Nothing here knows about
//! HTTP, threads or time beyond the `now` it is given.

pub mod acme;
pub mod auth;
pub mod blocklist;
pub mod codes;
pub mod domains;
pub mod ingest;
pub mod links;
pub mod reports;
pub mod threats;
pub mod users;
pub mod validate;
pub mod webhooks;

use crate::db::StoreResult;

/// Why the domain refuses a request. Each maps to one HTTP status in
/// `http::problem`, and its text is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field is malformed or not allowed (a blocked domain, a bad URL).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// No such link, key or report (or not the caller's).
    #[error("not found")]
    NotFound,
    /// The caller may not do this to an existing thing.
    #[error("{0}")]
    Forbidden(String),
    /// The request clashes with what is stored (a taken alias, a report
    /// already resolved).
    #[error("{field}: {reason}")]
    Conflict { field: String, reason: String },
    /// A bounded resource is used up (the code space, the moderation queue).
    #[error("{0}")]
    Exhausted(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn conflict(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Conflict {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// What a domain operation inside a transaction returns: the store's
/// failure outside, the request's refusal inside.
pub type Outcome<T> = StoreResult<Result<T, Error>>;
