//! Staying current: the change-stream subscription, snapshot downloads, and
//! persisting the live view so a restart with control down serves every link
//! served before it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use shortline_store::{LiveTable, Seq};

use crate::clicks::backoff;
use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::snapshots;

use shortline_store::stream::{LineReader, Message};

/// The HTTP client used to reach control.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[must_use]
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The subscription and snapshot loading, as a Pingora background service.
#[derive(Debug)]
pub struct Subscriber {
    pub config: ProxyConfig,
    pub table: Arc<LiveTable>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{0}")]
    Http(String),
    #[error("control answered {0}")]
    Status(u16),
    #[error("stream went silent")]
    Idle,
    #[error("stream ended")]
    Ended,
    #[error("bad message: {0}")]
    Message(String),
    #[error("snapshot {0} could not be loaded")]
    Snapshot(u64),
    #[error("no internal token: set internal_token or share the control plane's data_dir")]
    NoToken,
}

impl Subscriber {
    fn update_view_metrics(&self) {
        let view = self.table.load();
        self.metrics.view_sequence.store(view.sequence().0, Relaxed);
        self.metrics
            .overlay_entries
            .store(view.overlay_len() as u64, Relaxed);
    }

    /// Loads the snapshot covering `seq`: from the shared folder, else downloaded.
    async fn load_snapshot(
        &self,
        client: &HttpClient,
        token: &str,
        seq: Seq,
    ) -> Result<(), SyncError> {
        let installed = self.table.load().snapshot().sequence();
        if seq <= installed {
            return Ok(());
        }
        let shared = self
            .config
            .control_snapshot_dir()
            .join(snapshots::file_name(seq));
        let cache = self.config.cache_dir().join(snapshots::file_name(seq));
        let path = if shared.is_file() {
            shared
        } else {
            let url = format!(
                "{}/internal/v1/snapshots/{}",
                self.config.control_base(),
                seq.0
            );
            let bytes = get_bytes(client, &url, token).await?;
            let cache_dir = self.config.cache_dir();
            let tmp = cache.with_extension("download");
            let target = cache.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::create_dir_all(&cache_dir)?;
                std::fs::write(&tmp, &bytes)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &target)
            })
            .await
            .map_err(|e| SyncError::Http(e.to_string()))?
            .map_err(|e| SyncError::Http(format!("cannot store snapshot: {e}")))?;
            cache
        };
        let metrics = Arc::clone(&self.metrics);
        let opened = tokio::task::spawn_blocking(move || snapshots::open_checked(&path, &metrics))
            .await
            .map_err(|e| SyncError::Http(e.to_string()))?;
        let Some(snapshot) = opened else {
            return Err(SyncError::Snapshot(seq.0));
        };
        if snapshot.sequence() != seq {
            self.metrics.snapshots_rejected.fetch_add(1, Relaxed);
            tracing::error!(
                expected = seq.0,
                found = snapshot.sequence().0,
                "snapshot file covers the wrong sequence; refused"
            );
            return Err(SyncError::Snapshot(seq.0));
        }
        snapshots::note_installed(&snapshot, &self.metrics);
        match self.table.install(snapshot) {
            Ok(_) => tracing::info!(seq = seq.0, "installed snapshot"),
            Err(e) => tracing::debug!(error = %e, "snapshot not installed"),
        }
        self.update_view_metrics();
        Ok(())
    }

    fn handle(&self, message: Message) -> Option<(Seq, bool)> {
        match message {
            Message::Changes { changes } => {
                self.metrics
                    .changes_applied
                    .fetch_add(changes.len() as u64, Relaxed);
                self.table.apply(changes);
                self.update_view_metrics();
                None
            }
            Message::Snapshot { seq, required } => Some((seq, required)),
            Message::Heartbeat { seq } => {
                tracing::trace!(seq = seq.0, "heartbeat");
                None
            }
        }
    }

    /// One connection: streams until it fails or shutdown.
    async fn follow(
        &self,
        client: &HttpClient,
        shutdown: &mut ShutdownWatch,
    ) -> Result<(), SyncError> {
        let token = self
            .config
            .resolve_internal_token()
            .ok_or(SyncError::NoToken)?;
        let after = self.table.load().sequence();
        let url = format!(
            "{}/internal/v1/changes?after={}",
            self.config.control_base(),
            after.0
        );
        let response = get(client, &url, &token).await?;
        self.metrics.stream_connected.store(1, Relaxed);
        tracing::info!(after = after.0, "following the change stream");
        let mut body = response.into_body();
        let mut lines = LineReader::default();
        let idle = Duration::from_millis(self.config.stream_idle_timeout_ms);
        loop {
            let frame = tokio::select! {
                frame = tokio::time::timeout(idle, body.frame()) => frame.map_err(|_| SyncError::Idle)?,
                _ = shutdown.changed() => return Ok(()),
            };
            let Some(frame) = frame else {
                return Err(SyncError::Ended);
            };
            let frame = frame.map_err(|e| SyncError::Http(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            lines.push(&data);
            while let Some(message) = lines
                .next_message()
                .map_err(|e| SyncError::Message(e.to_string()))?
            {
                if let Some((seq, required)) = self.handle(message) {
                    match self.load_snapshot(client, &token, seq).await {
                        Ok(()) => {}
                        Err(e) if required => return Err(e),
                        Err(e) => tracing::warn!(error = %e, "optional snapshot not loaded"),
                    }
                }
            }
        }
    }
}

/// `GET url` with the internal token; a non-2xx answer is an error.
async fn get(
    client: &HttpClient,
    url: &str,
    token: &str,
) -> Result<http::Response<hyper::body::Incoming>, SyncError> {
    let request = http::Request::get(url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| SyncError::Http(e.to_string()))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| SyncError::Http(e.to_string()))?;
    if !response.status().is_success() {
        return Err(SyncError::Status(response.status().as_u16()));
    }
    Ok(response)
}

async fn get_bytes(client: &HttpClient, url: &str, token: &str) -> Result<Bytes, SyncError> {
    let response = get(client, url, token).await?;
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| SyncError::Http(e.to_string()))?
        .to_bytes())
}

#[async_trait]
impl BackgroundService for Subscriber {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = http_client();
        let max = Duration::from_millis(self.config.reconnect_backoff_max_ms);
        let mut attempt = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let result = self.follow(&client, &mut shutdown).await;
            if self.metrics.stream_connected.swap(0, Relaxed) == 1 {
                // It streamed: the next failure starts a fresh backoff.
                attempt = 0;
            }
            match result {
                Ok(()) => return,
                Err(e) => {
                    if attempt.is_multiple_of(20) {
                        tracing::warn!(error = %e, "change stream unavailable; serving the current table and retrying");
                    }
                    self.metrics.stream_reconnects.fetch_add(1, Relaxed);
                }
            }
            let wait = backoff(attempt, max);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Writes the live view to `proxy-cache/` whenever it holds changes newer
/// than every snapshot file, so a restart with control down loses nothing.
#[derive(Debug)]
pub struct Persister {
    pub config: ProxyConfig,
    pub table: Arc<LiveTable>,
    /// Held until the last persist at shutdown is written (taken with
    /// [`crate::drain::Drain::task`] before the server runs).
    pub finished: std::sync::Mutex<Option<crate::drain::DrainGuard>>,
}

impl Persister {
    /// Persists now if needed; returns the sequence written.
    pub fn persist(&self, last: Seq) -> anyhow::Result<Option<Seq>> {
        let view = self.table.load_full();
        let seq = view.sequence();
        if view.overlay_len() == 0 || seq <= last {
            return Ok(None);
        }
        let dir = self.config.cache_dir();
        std::fs::create_dir_all(&dir)?;
        let records = view.to_records();
        shortline_store::write_snapshot(&dir.join(snapshots::file_name(seq)), seq, &records)?;
        snapshots::prune(&dir, self.config.snapshot_keep);
        tracing::debug!(
            seq = seq.0,
            links = records.len(),
            "persisted the live view"
        );
        Ok(Some(seq))
    }
}

#[async_trait]
impl BackgroundService for Persister {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let interval = Duration::from_millis(self.config.persist_interval_ms);
        let mut last = Seq(0);
        loop {
            let stop = tokio::select! {
                () = tokio::time::sleep(interval) => false,
                _ = shutdown.changed() => true,
            };
            let me = Persister {
                config: self.config.clone(),
                table: Arc::clone(&self.table),
                finished: std::sync::Mutex::new(None),
            };
            match tokio::task::spawn_blocking(move || me.persist(last)).await {
                Ok(Ok(Some(seq))) => last = seq,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot persist the live view"),
                Err(e) => tracing::error!(error = %e, "persist task failed"),
            }
            if stop {
                drop(self.finished.lock().map(|mut held| held.take()));
                return;
            }
        }
    }
}
