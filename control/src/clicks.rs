//! Click ingest: proxies post batches of click events; the counts are folded
//! in memory and added to the store's counters in one transaction per batch.
//! A proxy sends its batches one at a time with increasing `batch_seq`,
//! resending a batch until it is accepted; control keeps each proxy's highest
//! accepted sequence, updated in the same transaction as the counters, so a
//! batch resent after a lost acknowledgement is counted once.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::api::ApiJson;
use crate::error::ApiError;
use crate::links::clicks_key;
use crate::state::AppState;
use crate::store::{Space, StoreResult, Txn};

/// How long a silent proxy's last batch sequence is remembered.
pub const BATCH_ID_RETENTION_SECONDS: i64 = 86_400;
/// Longest proxy id.
const PROXY_ID_BYTES_MAX: usize = 64;

/// A click as proxies send it.
#[derive(Debug, Deserialize)]
pub struct Click {
    pub link_id: u64,
    pub at_unix_ms: u64,
    pub method: String,
    #[serde(default)]
    pub client_ip: Option<String>,
    #[serde(default)]
    pub referrer: String,
    #[serde(default)]
    pub user_agent: String,
}

/// A batch as proxies send it.
#[derive(Debug, Deserialize)]
pub struct Batch {
    pub proxy_id: String,
    pub batch_seq: u64,
    pub clicks: Vec<Click>,
}

/// What ingest did.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Ingested {
    pub accepted: usize,
    pub duplicate: bool,
}

/// Counter of a link's HEAD requests, kept apart from clicks.
#[must_use]
pub fn head_key(link_id: u64) -> Vec<u8> {
    let mut key = b"heads/".to_vec();
    key.extend_from_slice(&link_id.to_be_bytes());
    key
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

/// Counts per link: (GET clicks, HEAD requests).
#[must_use]
pub fn fold(clicks: &[Click]) -> HashMap<u64, (i64, i64)> {
    let mut counts: HashMap<u64, (i64, i64)> = HashMap::new();
    for click in clicks {
        let entry = counts.entry(click.link_id).or_default();
        if click.method.eq_ignore_ascii_case("HEAD") {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }
    counts
}

/// Adds a folded batch unless this proxy's sequence already covers it.
/// Returns whether it was new.
pub fn apply(
    txn: &mut dyn Txn,
    proxy_id: &str,
    batch_seq: u64,
    counts: &HashMap<u64, (i64, i64)>,
    now: i64,
) -> StoreResult<bool> {
    let (last, _) = txn
        .get(Space::IngestedBatches, proxy_id.as_bytes())?
        .map_or((0, 0), |v| decode_seen(&v));
    if batch_seq <= last {
        return Ok(false);
    }
    let mut seen = batch_seq.to_le_bytes().to_vec();
    seen.extend_from_slice(&now.to_le_bytes());
    txn.set(Space::IngestedBatches, proxy_id.as_bytes(), &seen)?;
    for (&link_id, &(gets, heads)) in counts {
        if gets != 0 {
            txn.add(Space::Counters, &clicks_key(link_id), gets)?;
        }
        if heads != 0 {
            txn.add(Space::Counters, &head_key(link_id), heads)?;
        }
    }
    Ok(true)
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
    ApiJson(batch): ApiJson<Batch>,
) -> Result<(StatusCode, Json<Ingested>), ApiError> {
    crate::publish::check_internal(&state, &headers)?;
    if batch.proxy_id.is_empty()
        || batch.proxy_id.len() > PROXY_ID_BYTES_MAX
        || batch.proxy_id.contains('\0')
    {
        return Err(ApiError::invalid(
            "proxy_id",
            format!("1 to {PROXY_ID_BYTES_MAX} bytes, no NUL"),
        ));
    }
    let accepted = batch.clicks.len();
    let counts = fold(&batch.clicks);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (proxy_id, batch_seq) = (batch.proxy_id, batch.batch_seq);
    let new = state
        .committer
        .write(move |txn| apply(txn, &proxy_id, batch_seq, &counts, now))
        .await?;
    if new {
        metrics::counter!("control_clicks_ingested_total").increment(accepted as u64);
    } else {
        metrics::counter!("control_click_batches_duplicate_total").increment(1);
    }
    Ok((
        StatusCode::OK,
        Json(Ingested {
            accepted,
            duplicate: !new,
        }),
    ))
}
