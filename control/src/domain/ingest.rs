//! Click ingest: proxies post batches of click events, which the analytics
//! aggregator folds into its next flush; the request is answered once that
//! flush is durable. A proxy sends its batches one at a time with increasing
//! `batch_seq`, resending a batch until it is accepted; control keeps each
//! proxy's highest counted sequence, written in the flush that counts it, so
//! a batch resent after a lost acknowledgement is counted once.

use crate::db::{ReadTxn, Space, StoreResult, Txn};

/// How long a silent proxy's last batch sequence is remembered.
pub const BATCH_ID_RETENTION_SECONDS: i64 = 86_400;

/// A proxy's record: highest accepted batch sequence and when it was seen.
fn decode_seen(value: &[u8]) -> (u64, i64) {
    let seq = value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    let at = value
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i64::from_le_bytes);
    (seq, at)
}

/// The highest batch sequence of `proxy_id` counted in the store.
pub fn stored_batch(txn: &dyn ReadTxn, proxy_id: &str) -> StoreResult<u64> {
    Ok(txn
        .get(Space::IngestedBatches, proxy_id.as_bytes())?
        .map_or(0, |v| decode_seen(&v).0))
}

/// Records that `batch_seq` of `proxy_id` is counted, in the transaction
/// that counts it. Sequences never go back.
pub fn record_batch(
    txn: &mut dyn Txn,
    proxy_id: &str,
    batch_seq: u64,
    now: i64,
) -> StoreResult<()> {
    let (last, _) = txn
        .get(Space::IngestedBatches, proxy_id.as_bytes())?
        .map_or((0, 0), |v| decode_seen(&v));
    let mut seen = batch_seq.max(last).to_le_bytes().to_vec();
    seen.extend_from_slice(&now.to_le_bytes());
    txn.set(Space::IngestedBatches, proxy_id.as_bytes(), &seen)
}

/// Forgets proxies silent for longer than the retention (one record per
/// proxy process, so there are few), up to `limit`. Returns how many.
pub fn prune_batch_ids(txn: &mut dyn Txn, now: i64, limit: usize) -> StoreResult<usize> {
    let mut removed = 0;
    for (key, value) in txn.range(Space::IngestedBatches, &[], &[0xff], limit)? {
        let (_, at) = decode_seen(&value);
        if at < now - BATCH_ID_RETENTION_SECONDS {
            txn.clear(Space::IngestedBatches, &key)?;
            removed += 1;
        }
    }
    Ok(removed)
}
