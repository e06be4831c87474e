//! Click ingest: proxies post batches of click events, which the analytics
//! aggregator folds into its next flush; the request is answered once that
//! flush is durable. A proxy sends its batches one at a time with increasing
//! `batch_seq`, resending a batch until it is accepted; control keeps each
//! proxy's highest counted sequence, written in the flush that counts it, so
//! a batch resent after a lost acknowledgement is counted once.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use shortline_store::clickwire::{self, CONTENT_TYPE};

use crate::analytics::aggregate::Accepted;
use crate::db::{ReadTxn, Space, StoreResult, Txn};
use crate::error::ApiError;
use crate::state::AppState;

/// How long a silent proxy's last batch sequence is remembered.
pub const BATCH_ID_RETENTION_SECONDS: i64 = 86_400;

/// What ingest did.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Ingested {
    pub accepted: usize,
    pub duplicate: bool,
}

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

/// Internal routes for click ingest.
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/internal/v1/clicks", post(ingest))
        .with_state(state)
}

async fn ingest(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Ingested>), ApiError> {
    crate::publish::check_internal(&state, &headers)?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != CONTENT_TYPE {
        return Err(ApiError::UnsupportedMedia(format!(
            "click batches are {CONTENT_TYPE}"
        )));
    }
    let batch = match clickwire::decode(&body) {
        Ok(batch) => batch,
        Err(e) => {
            metrics::counter!("control_click_batches_rejected_total", "reason" => "invalid")
                .increment(1);
            return Err(ApiError::invalid("body", e.to_string()));
        }
    };
    if batch.proxy_id.is_empty() || batch.proxy_id.contains('\0') {
        metrics::counter!("control_click_batches_rejected_total", "reason" => "invalid")
            .increment(1);
        return Err(ApiError::invalid("proxy_id", "1 to 255 bytes, no NUL"));
    }
    let accepted = batch.clicks.len();
    let worker = Arc::clone(&state);
    let outcome = tokio::task::spawn_blocking(move || {
        let stored = worker
            .backend
            .read(|txn| stored_batch(txn, &batch.proxy_id))?;
        Ok::<_, crate::db::StoreError>(worker.analytics.accept(&batch, &body, stored))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let duplicate = match outcome {
        Accepted::Taken => {
            metrics::counter!("control_clicks_ingested_total").increment(accepted as u64);
            false
        }
        Accepted::Duplicate => {
            metrics::counter!("control_click_batches_duplicate_total").increment(1);
            true
        }
        Accepted::Busy => {
            metrics::counter!("control_click_batches_rejected_total", "reason" => "busy")
                .increment(1);
            return Err(ApiError::Unavailable(
                "too many clicks are waiting for the store; retry shortly".into(),
            ));
        }
        Accepted::Failed(e) => {
            metrics::counter!("control_click_batches_rejected_total", "reason" => "log")
                .increment(1);
            return Err(ApiError::Unavailable(format!("clicks not logged: {e}")));
        }
    };
    Ok((
        StatusCode::OK,
        Json(Ingested {
            accepted,
            duplicate,
        }),
    ))
}
