//! The index, health checks and the online backup.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::extract::{Auth, Shared, read, require_admin};
use super::problem::AppResult;
use super::problem::{ApiError, Problem};

/// Writes into a channel in chunks, from a blocking thread, for a streamed body.
struct ChunkWriter {
    buffer: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
}

impl ChunkWriter {
    const CHUNK: usize = 256 * 1024;
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= Self::CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buffer));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

#[utoipa::path(get, path = "/api/v1/backup", security(("bearer" = [])),
    responses((status = 200, description = "a consistent copy of the embedded store as newline-delimited JSON (docs/OPERATIONS.md); restore with `shortline-control restore`", content_type = "application/x-ndjson", body = String),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn backup(State(state): Shared, Auth(principal): Auth) -> AppResult<Response> {
    require_admin(&principal)?;
    if state.backend.shared() {
        return Err(ApiError::Conflict {
            field: "store_backend".into(),
            reason: "this store is FoundationDB: back it up with fdbbackup".into(),
        });
    }
    let key = std::fs::read(state.config.data_dir.join("permutation.key"))
        .map_err(|e| ApiError::Internal(format!("cannot read permutation.key: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let backend = Arc::clone(&state.backend);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            buffer: Vec::with_capacity(ChunkWriter::CHUNK),
            tx: tx.clone(),
        };
        // Streams as it reads, so the body must run once: the embedded
        // store (the only one backed up here) never runs a read again.
        let result = backend.read(|txn| {
            let records = crate::db::backup::export(txn, &key, &mut out)?;
            tracing::info!(records, "backup streamed");
            Ok(())
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "backup failed; the client gets a cut-off file");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// Where to go from the root: what this server is and where its API lives.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Index {
    /// Always `shortline-control`.
    pub name: &'static str,
    pub version: &'static str,
    /// The admin REST API's base path.
    pub api: &'static str,
    /// The OpenAPI document.
    pub openapi: &'static str,
    /// Where short links are served.
    pub short_links: String,
    /// How to authenticate.
    pub authentication: &'static str,
}

#[utoipa::path(get, path = "/api/v1", responses((status = 200, body = Index, description = "what this server is and where its API lives")))]
pub(super) async fn index(State(state): Shared) -> Json<Index> {
    Json(Index {
        name: "shortline-control",
        version: env!("CARGO_PKG_VERSION"),
        api: "/api/v1",
        openapi: "/api/v1/openapi.json",
        short_links: state.config.public_url.clone(),
        authentication: "Authorization: Bearer <API key>; `shortline-control up` prints the first admin key",
    })
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process is up")))]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "the store answers"), (status = 503, body = Problem)))]
pub(super) async fn readyz(State(state): Shared) -> AppResult<&'static str> {
    // Any failure is "not ready"; what failed is logged, not sent.
    read(&state, |txn| txn.last_seq().map(|_| ()))
        .await
        .map_err(|e| {
            tracing::warn!(error = ?e, "readiness check failed");
            ApiError::Unavailable("the store does not answer".into())
        })?;
    Ok("ready\n")
}
