//! Certificates from ACME (RFC 8555) as the store keeps them, so every
//! control process sharing the store (a sidecar per host on FoundationDB)
//! has each certificate and can write it out for its proxy: the account,
//! each domain's certificate and key, its renewal state, the lease that lets
//! one process at a time order for a domain, and the answers to HTTP-01
//! challenges, which proxies serve from their table (`~token` records).
//!
//! Every key is in the `Meta` space under `acme/`.

use serde::{Deserialize, Serialize};
use shortline_store::{LinkId, LinkRecord, Target};

use crate::db::{ReadTxn, Space, StoreError, StoreResult, Txn, prefix_end};
use crate::model::ChangeDoc;

const ACCOUNT_PREFIX: &str = "acme/account/";
const CERT_PREFIX: &str = "acme/cert/";
const STATUS_PREFIX: &str = "acme/status/";
const LEASE_PREFIX: &str = "acme/lease/";
const CHALLENGE_PREFIX: &str = "acme/challenge/";

/// Challenges kept at most (a handful are pending at any time).
const CHALLENGES_MAX: usize = 10_000;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertDoc {
    /// The leaf first, then its intermediates.
    pub chain_pem: String,
    pub key_pem: String,
    /// Unix seconds.
    pub not_after: i64,
    pub issued_at: i64,
}

/// How ordering a domain's certificate has gone lately.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Failed orders in a row.
    pub failures: u32,
    /// No order before this (Unix seconds).
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// Who may order a domain's certificate, until when.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    holder: String,
    until: i64,
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("ACME documents always serialise")
}

fn key(prefix: &str, name: &str) -> Vec<u8> {
    format!("{prefix}{name}").into_bytes()
}

/// The stored account for the ACME directory `url` (its credentials as the
/// client serialises them).
pub fn account(txn: &dyn ReadTxn, url: &str) -> StoreResult<Option<Vec<u8>>> {
    txn.get(Space::Meta, &key(ACCOUNT_PREFIX, url))
}

pub fn put_account(txn: &mut dyn Txn, url: &str, credentials: &[u8]) -> StoreResult<()> {
    txn.set(Space::Meta, &key(ACCOUNT_PREFIX, url), credentials)
}

/// A domain's certificate, if one was issued.
pub fn certificate(txn: &dyn ReadTxn, domain: &str) -> StoreResult<Option<CertDoc>> {
    txn.get(Space::Meta, &key(CERT_PREFIX, domain))?
        .map(|bytes| decode("ACME certificate", &bytes))
        .transpose()
}

/// Keeps a newly issued certificate and clears the domain's failures.
pub fn put_certificate(txn: &mut dyn Txn, domain: &str, cert: &CertDoc) -> StoreResult<()> {
    txn.set(Space::Meta, &key(CERT_PREFIX, domain), &encode(cert))?;
    txn.clear(Space::Meta, &key(STATUS_PREFIX, domain))
}

/// A domain's ordering state (default: never failed).
pub fn status(txn: &dyn ReadTxn, domain: &str) -> StoreResult<Status> {
    Ok(txn
        .get(Space::Meta, &key(STATUS_PREFIX, domain))?
        .map(|bytes| decode("ACME status", &bytes))
        .transpose()?
        .unwrap_or_default())
}

/// Records a failed order: the next attempt waits `retry_min` seconds,
/// doubled for each failure before, at most `retry_max`, or until the
/// server's `retry_after` when it gave one (a rate limit).
pub fn record_failure(
    txn: &mut dyn Txn,
    domain: &str,
    error: &str,
    now: i64,
    (retry_min, retry_max): (i64, i64),
    retry_after: Option<i64>,
) -> StoreResult<Status> {
    let mut status = status(txn, domain)?;
    status.failures = status.failures.saturating_add(1);
    let backoff = retry_min
        .saturating_mul(1_i64 << (status.failures - 1).min(30))
        .min(retry_max);
    status.next_attempt_at = retry_after.map_or(now + backoff, |at| at.max(now + backoff));
    status.last_error = Some(error.chars().take(1000).collect());
    txn.set(Space::Meta, &key(STATUS_PREFIX, domain), &encode(&status))?;
    Ok(status)
}

/// Takes the lease on ordering `domain`'s certificate for `seconds`, unless
/// another holder's lease is still running.
pub fn take_lease(
    txn: &mut dyn Txn,
    domain: &str,
    holder: &str,
    now: i64,
    seconds: i64,
) -> StoreResult<bool> {
    let at = key(LEASE_PREFIX, domain);
    if let Some(bytes) = txn.get(Space::Meta, &at)? {
        let lease: Lease = decode("ACME lease", &bytes)?;
        if lease.holder != holder && lease.until > now {
            return Ok(false);
        }
    }
    let lease = Lease {
        holder: holder.to_owned(),
        until: now + seconds,
    };
    txn.set(Space::Meta, &at, &encode(&lease))?;
    Ok(true)
}

/// Gives the lease back, if `holder` still has it.
pub fn release_lease(txn: &mut dyn Txn, domain: &str, holder: &str) -> StoreResult<()> {
    let at = key(LEASE_PREFIX, domain);
    if let Some(bytes) = txn.get(Space::Meta, &at)? {
        let lease: Lease = decode("ACME lease", &bytes)?;
        if lease.holder == holder {
            txn.clear(Space::Meta, &at)?;
        }
    }
    Ok(())
}

/// The table record that answers the challenge `token`.
pub fn challenge_record(token: &str, key_authorization: &str) -> StoreResult<LinkRecord> {
    let bad = |e: String| StoreError::Corrupt(format!("ACME challenge {token:?}: {e}"));
    let key = shortline_store::domain::challenge_key(token).map_err(|e| bad(e.to_string()))?;
    let target = Target::parse(key_authorization).map_err(|e| bad(e.to_string()))?;
    Ok(LinkRecord::new(key, target, LinkId(0)))
}

/// Publishes the answer to an HTTP-01 challenge to every proxy.
pub fn set_challenge(txn: &mut dyn Txn, token: &str, key_authorization: &str) -> StoreResult<()> {
    let record = challenge_record(token, key_authorization)?;
    txn.set(
        Space::Meta,
        &key(CHALLENGE_PREFIX, token),
        key_authorization.as_bytes(),
    )?;
    txn.log_change(
        &ChangeDoc {
            code: record.code.clone(),
            record: Some(record),
            event: None,
        }
        .encode(),
    )
}

/// Withdraws a challenge's answer.
pub fn clear_challenge(txn: &mut dyn Txn, token: &str) -> StoreResult<()> {
    let at = key(CHALLENGE_PREFIX, token);
    if txn.get(Space::Meta, &at)?.is_none() {
        return Ok(());
    }
    txn.clear(Space::Meta, &at)?;
    let code = shortline_store::domain::challenge_key(token)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    txn.log_change(
        &ChangeDoc {
            code,
            record: None,
            event: None,
        }
        .encode(),
    )
}

/// Every challenge being answered, as `(token, key authorization)`, for
/// the snapshot builder.
pub fn challenges(txn: &dyn ReadTxn) -> StoreResult<Vec<(String, String)>> {
    let prefix = CHALLENGE_PREFIX.as_bytes();
    Ok(txn
        .range(Space::Meta, prefix, &prefix_end(prefix), CHALLENGES_MAX)?
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::db::Backend;
    use crate::db::redb::RedbBackend;

    fn write<T>(backend: &dyn Backend, mut body: impl FnMut(&mut dyn Txn) -> StoreResult<T>) -> T {
        let mut out = None;
        backend
            .write(&mut |txn| {
                out = Some(body(txn)?);
                Ok(())
            })
            .unwrap();
        out.unwrap()
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_longest_wait_or_the_servers_word() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(RedbBackend::open(dir.path()).unwrap());
        let fail = |now, retry_after| {
            write(&*backend, |txn| {
                record_failure(txn, "a.test", "boom", now, (60, 300), retry_after)
            })
        };
        assert_eq!(fail(1_000, None).next_attempt_at, 1_060);
        assert_eq!(fail(1_000, None).next_attempt_at, 1_120);
        assert_eq!(fail(1_000, None).next_attempt_at, 1_240);
        assert_eq!(fail(1_000, None).next_attempt_at, 1_300, "capped");
        let limited = fail(1_000, Some(90_000));
        assert_eq!((limited.next_attempt_at, limited.failures), (90_000, 5));
        let cert = CertDoc {
            chain_pem: "c".into(),
            key_pem: "k".into(),
            not_after: 9,
            issued_at: 1,
        };
        write(&*backend, |txn| put_certificate(txn, "a.test", &cert));
        let status = backend.read(|txn| status(txn, "a.test")).unwrap();
        assert_eq!(status, Status::default(), "an issue clears the failures");
    }

    #[test]
    fn one_holder_at_a_time_until_the_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(RedbBackend::open(dir.path()).unwrap());
        let take =
            |holder: &str, now| write(&*backend, |txn| take_lease(txn, "a.test", holder, now, 600));
        assert!(take("one", 1_000));
        assert!(!take("two", 1_100));
        assert!(take("one", 1_100), "the holder renews");
        assert!(take("two", 1_701), "an expired lease is taken over");
        write(&*backend, |txn| release_lease(txn, "a.test", "one"));
        assert!(!take("one", 1_702), "only the holder releases");
        write(&*backend, |txn| release_lease(txn, "a.test", "two"));
        assert!(take("one", 1_703));
    }

    #[test]
    fn challenges_are_published_and_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(RedbBackend::open(dir.path()).unwrap());
        write(&*backend, |txn| set_challenge(txn, "tok_1", "tok_1.thumb"));
        let listed = backend.read(|txn| challenges(txn)).unwrap();
        assert_eq!(listed, [("tok_1".to_owned(), "tok_1.thumb".to_owned())]);
        write(&*backend, |txn| clear_challenge(txn, "tok_1"));
        write(&*backend, |txn| clear_challenge(txn, "tok_1"));
        assert!(backend.read(|txn| challenges(txn)).unwrap().is_empty());
        let changes = backend
            .read(|txn| txn.changes_after(shortline_store::Seq(0), 10))
            .unwrap();
        assert_eq!(
            changes.len(),
            2,
            "one change each way, none for a second clear"
        );
        assert!(challenge_record("bad token", "x").is_err());
    }
}
