//! The proxies' internal endpoints: the change stream
//! (`GET /internal/v1/changes?after=SEQ`) and snapshot files. They need the
//! internal token and are absent from the OpenAPI document.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shortline_store::Seq;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::problem::ApiError;
use crate::state::AppState;

use super::extract::{ApiPath, check_internal};
use crate::tasks::publish::{
    STREAM_BUFFER_MESSAGES, snapshot_file_name, snapshot_files, stream_changes,
};

#[derive(Debug, Deserialize)]
pub(super) struct ChangesParams {
    after: u64,
}

pub(super) async fn changes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<ChangesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_internal(&state, &headers)?;
    let Query(params) = params.map_err(|e| ApiError::invalid("after", e.body_text()))?;
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(STREAM_BUFFER_MESSAGES);
    tokio::spawn(stream_changes(state, Seq(params.after), tx));
    metrics::gauge!("control_stream_subscribers").increment(1.0);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

pub(super) async fn snapshot_file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(seq): ApiPath<String>,
) -> Result<Response, ApiError> {
    check_internal(&state, &headers)?;
    let dir = state.config.snapshot_dir();
    let path = if seq == "latest" {
        snapshot_files(&dir).first().map(|(_, p)| p.clone())
    } else {
        let seq: u64 = seq
            .parse()
            .map_err(|_| ApiError::invalid("seq", "a sequence number or latest"))?;
        Some(dir.join(snapshot_file_name(Seq(seq))))
    };
    let path = path.ok_or(ApiError::NotFound)?;
    // A proxy installs what it downloads in place of what it serves; a
    // damaged file is moved aside (so the builder writes a new one at its
    // next tick and announces it) rather than sent.
    let checking = path.clone();
    let checked =
        tokio::task::spawn_blocking(move || shortline_store::Snapshot::open_verified(&checking))
            .await?;
    match checked {
        Ok(_) => {}
        Err(shortline_store::OpenError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(ApiError::NotFound);
        }
        Err(e) => {
            let mut aside = path.clone().into_os_string();
            aside.push(".damaged");
            let moved = std::fs::rename(&path, &aside);
            metrics::counter!("control_snapshots_damaged_total").increment(1);
            tracing::error!(
                path = %path.display(),
                error = %e,
                moved_aside = moved.is_ok(),
                "a snapshot file is damaged; it is not sent, and a new one is built"
            );
            return Err(ApiError::Unavailable(
                "that snapshot file is damaged; a new one is being built".into(),
            ));
        }
    }
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ApiError::NotFound),
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}
