//! `POST /internal/v1/clicks`: proxies' click batches, answered once the
//! flush that counts them is durable (see [`crate::domain::ingest`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use shortline_store::clickwire::{self, CONTENT_TYPE};

use super::problem::ApiError;
use crate::analytics::aggregate::Accepted;
use crate::state::AppState;

/// What ingest did.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Ingested {
    pub accepted: usize,
    pub duplicate: bool,
}

pub(super) async fn ingest(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Ingested>), ApiError> {
    super::extract::check_internal(&state, &headers)?;
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
    if batch.proxy_id().is_empty() || batch.proxy_id().contains('\0') {
        metrics::counter!("control_click_batches_rejected_total", "reason" => "invalid")
            .increment(1);
        return Err(ApiError::invalid("proxy_id", "1 to 255 bytes, no NUL"));
    }
    let accepted = batch.clicks().len();
    let worker = Arc::clone(&state);
    let outcome = tokio::task::spawn_blocking(move || {
        let stored = worker
            .backend
            .read(|txn| crate::domain::ingest::stored_batch(txn, batch.proxy_id()))?;
        Ok::<_, crate::db::StoreError>(worker.analytics.accept(&batch, &body, stored))
    })
    .await??;
    let duplicate = counted(outcome, accepted)?;
    Ok((
        StatusCode::OK,
        Json(Ingested {
            accepted,
            duplicate,
        }),
    ))
}

/// Whether a batch was a duplicate, or why it was refused. The click log's
/// own error is for the operator's log, never for the client.
fn counted(outcome: Accepted, accepted: usize) -> Result<bool, ApiError> {
    match outcome {
        Accepted::Taken => {}
        Accepted::Duplicate => {
            metrics::counter!("control_click_batches_duplicate_total").increment(1);
            return Ok(true);
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
            tracing::error!(error = %e, "click batch not logged");
            return Err(ApiError::Unavailable(
                "clicks could not be logged; retry shortly".into(),
            ));
        }
    }
    metrics::counter!("control_clicks_ingested_total").increment(accepted as u64);
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_click_log_failure_is_logged_not_sent() {
        let error = counted(
            Accepted::Failed(
                "No space left on device (os error 28) at /srv/secret/clicks/000042.log".into(),
            ),
            1,
        )
        .unwrap_err();
        let detail = error.problem().detail;
        assert_eq!(detail, "clicks could not be logged; retry shortly");
        assert_eq!(error.problem().status, 503);
        assert!(!counted(Accepted::Taken, 3).unwrap());
        assert!(counted(Accepted::Duplicate, 3).unwrap());
    }
}
