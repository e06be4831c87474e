//! The proxies' internal endpoints: the change stream
//! (`GET /internal/v1/changes?after=SEQ`), the list of snapshot segments
//! and the segment files. They need the
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
    STREAM_BUFFER_MESSAGES, current_chain, set_aside, snapshot_file_name, snapshot_files,
    stream_changes,
};
use shortline_store::files::is_segment_name;

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
    send_checked(&state, path.ok_or(ApiError::NotFound)?).await
}

/// The segments a proxy needs for control's table: the base and the chain
/// of deltas over it.
pub(super) async fn segments(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_internal(&state, &headers)?;
    let dir = state.config.snapshot_dir();
    let manifest = tokio::task::spawn_blocking(move || current_chain(&dir).map(|c| c.manifest()))
        .await?
        .ok_or(ApiError::Unavailable(
            "no snapshot has been built yet".into(),
        ))?;
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(manifest)).into_response())
}

/// One segment file by the name the manifest gives.
pub(super) async fn segment_file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(file): ApiPath<String>,
) -> Result<Response, ApiError> {
    check_internal(&state, &headers)?;
    // Only names this build writes: never a path.
    if !is_segment_name(&file) {
        return Err(ApiError::invalid(
            "file",
            "a segment file name from GET /internal/v1/segments",
        ));
    }
    send_checked(&state, state.config.snapshot_dir().join(file)).await
}

/// Sends a segment file once every block of it checks. A proxy installs
/// what it downloads in place of what it serves; a damaged file is moved
/// aside rather than sent, and the segments are announced again: the
/// builder writes new ones at its next tick, or segments already on disk
/// cover the same changes (a base and a delta over it, say), which the
/// builder, seeing nothing new, would never announce by itself.
async fn send_checked(state: &AppState, path: std::path::PathBuf) -> Result<Response, ApiError> {
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
            set_aside(&path, &e);
            state.snapshot.send_modify(|_| {});
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
