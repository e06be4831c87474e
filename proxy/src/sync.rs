//! Staying current: the change-stream subscription and snapshot downloads,
//! with every change made durable in the journal ([`crate::journal`])
//! before it is applied, so a restart with control down serves every link
//! served before it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use shortline_store::{Change, LiveTable, Seq};

use crate::clicks::backoff;
use crate::config::ProxyConfig;
use crate::journal::{Journal, JournalError};
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
    // Idle connections are dropped well before control's idle timeout
    // (control_idle_timeout_ms, 60 s by default) closes them, so a request
    // is never sent on a connection control is closing.
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(20))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}

/// Whether the table has caught up with control since start-up: the
/// redirect listener answers nothing before, so a restarted or upgraded
/// proxy never answers older than what was answered before it.
#[derive(Debug, Default)]
pub struct CaughtUp {
    done: AtomicBool,
    notify: tokio::sync::Notify,
}

impl CaughtUp {
    /// One that is set from the start.
    #[must_use]
    pub fn already() -> Self {
        Self {
            done: AtomicBool::new(true),
            notify: tokio::sync::Notify::new(),
        }
    }

    pub fn set(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    #[must_use]
    pub fn is_set(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Waits until set, or `longest`; after that it counts as set, and the
    /// table is served as it stands.
    pub async fn wait(&self, longest: Duration) {
        let notified = self.notify.notified();
        if self.is_set() {
            return;
        }
        if tokio::time::timeout(longest, notified).await.is_err()
            && !self.done.swap(true, Ordering::AcqRel)
        {
            tracing::warn!(
                waited_ms = longest.as_millis() as u64,
                "control has not brought the table up to date; answering from it as it stands"
            );
            self.notify.notify_waiters();
        }
    }
}

/// The subscription and snapshot loading, as a Pingora background service.
#[derive(Debug)]
pub struct Subscriber {
    pub config: ProxyConfig,
    pub table: Arc<LiveTable>,
    pub metrics: Arc<Metrics>,
    pub applier: Arc<Applier>,
    pub caught_up: Arc<CaughtUp>,
    /// Reported when the snapshot serving is found damaged.
    pub damage: Arc<snapshots::Damage>,
}

/// Applies changes to the table only once the journal holds them, and keeps
/// the journal short as snapshots cover it.
#[derive(Debug)]
pub struct Applier {
    config: ProxyConfig,
    table: Arc<LiveTable>,
    metrics: Arc<Metrics>,
    journal: std::sync::Mutex<Journal>,
}

impl Applier {
    #[must_use]
    pub fn new(
        config: ProxyConfig,
        table: Arc<LiveTable>,
        metrics: Arc<Metrics>,
        journal: Journal,
    ) -> Self {
        metrics.journal_bytes.store(journal.bytes(), Relaxed);
        Self {
            config,
            table,
            metrics,
            journal: std::sync::Mutex::new(journal),
        }
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `changes` durable, then applies them. Blocks on the sync.
    pub fn commit(&self, changes: &[Change]) -> Result<(), JournalError> {
        let mut journal = self.journal();
        if let Err(e) = journal.append(changes) {
            self.metrics.journal_errors.fetch_add(1, Relaxed);
            return Err(e);
        }
        self.metrics.journal_syncs.fetch_add(1, Relaxed);
        self.metrics
            .changes_applied
            .fetch_add(changes.len() as u64, Relaxed);
        self.table.apply(changes.iter().cloned());
        if journal.bytes() > self.config.journal_bytes_max {
            // Control's snapshots have not covered it for a long while:
            // write the view as a snapshot of this proxy's own.
            if let Err(e) = self.persist_view(&mut journal) {
                tracing::error!(error = %e, "cannot compact the journal; it keeps growing");
            }
        }
        self.metrics.journal_bytes.store(journal.bytes(), Relaxed);
        Ok(())
    }

    /// After the snapshot at `seq` (in `file`) is installed: keeps a copy in
    /// `proxy-cache/`, rewrites the journal to hold only what the snapshot
    /// does not, and adopts the journals of processes that have ended
    /// since (the old process of an upgrade).
    pub fn covered(&self, seq: Seq, file: &std::path::Path) -> anyhow::Result<()> {
        let mut journal = self.journal();
        let adopted = journal.adopt_ended()?;
        if !adopted.is_empty() {
            self.table.apply(adopted);
        }
        let view = self.table.load_full();
        if view.snapshot().sequence() != seq {
            // A newer one was installed meanwhile; it is handled on its own.
            return Ok(());
        }
        let dir = self.config.cache_dir();
        let cached = dir.join(snapshots::file_name(seq));
        if !cached.exists() {
            // A hard link shares the file with control's folder (where
            // control may prune it); a copy where that is not possible.
            if std::fs::hard_link(file, &cached).is_err() {
                let aside = cached.with_extension("copy");
                std::fs::copy(file, &aside)?;
                std::fs::File::open(&aside)?.sync_all()?;
                std::fs::rename(&aside, &cached)?;
            }
            crate::journal::sync_dir(&dir)?;
        }
        journal.rewrite(seq, &view.overlay_changes())?;
        self.metrics.journal_bytes.store(journal.bytes(), Relaxed);
        snapshots::prune(&dir, self.config.snapshot_keep);
        Ok(())
    }

    /// Writes the whole view as a snapshot in `proxy-cache/` and empties
    /// the journal it covers.
    fn persist_view(&self, journal: &mut Journal) -> anyhow::Result<Seq> {
        let view = self.table.load_full();
        let seq = view.sequence();
        let dir = self.config.cache_dir();
        let mut writer =
            shortline_store::SnapshotWriter::create(&dir.join(snapshots::file_name(seq)), seq)?;
        for record in view.records() {
            writer.push(&record?)?;
        }
        let links = writer.len();
        writer.finish()?;
        crate::journal::sync_dir(&dir)?;
        journal.rewrite(seq, &[])?;
        snapshots::prune(&dir, self.config.snapshot_keep);
        tracing::info!(
            seq = seq.0,
            links,
            "wrote the live view as a snapshot; journal emptied"
        );
        Ok(seq)
    }
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
    #[error("the snapshot serving is damaged; following again to fetch a good copy")]
    Damaged,
    #[error("no internal token: set internal_token or share the control plane's data_dir")]
    NoToken,
    #[error("cannot write the journal; changes are not applied until it can be: {0}")]
    Journal(#[from] JournalError),
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
        let (installed, damaged) = {
            let view = self.table.load();
            (
                view.snapshot().sequence(),
                view.snapshot().damage().is_some(),
            )
        };
        // A damaged table is replaced by a good copy of the same sequence too.
        if seq < installed || (seq == installed && !damaged) {
            return Ok(());
        }
        let shared = self
            .config
            .control_snapshot_dir()
            .join(snapshots::file_name(seq));
        let cache = self.config.cache_dir().join(snapshots::file_name(seq));
        // The shared file may be the very one found damaged (the cache holds
        // a hard link to it): then it is downloaded instead.
        let path = if shared.is_file() && !damaged {
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
        let opening = path.clone();
        let opened =
            tokio::task::spawn_blocking(move || snapshots::open_checked(&opening, &metrics))
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
        let applier = Arc::clone(&self.applier);
        match tokio::task::spawn_blocking(move || applier.covered(seq, &path)).await {
            Ok(Ok(())) => {}
            // The journal still holds every change; it is only longer.
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot shorten the journal"),
            Err(e) => tracing::warn!(error = %e, "journal task failed"),
        }
        Ok(())
    }

    /// Makes a batch durable and applies it; empties `batch`.
    async fn commit(&self, batch: &mut Vec<Change>) -> Result<(), JournalError> {
        if batch.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(batch);
        let applier = Arc::clone(&self.applier);
        let committed = tokio::task::spawn_blocking(move || applier.commit(&changes))
            .await
            .unwrap_or_else(|e| {
                Err(JournalError::Io {
                    path: "journal".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        self.update_view_metrics();
        committed
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
        // A damaged table follows from the start: control's first message
        // then names its newest snapshot, which replaces the damaged one.
        let after = {
            let view = self.table.load();
            if view.snapshot().damage().is_some() {
                Seq(0)
            } else {
                view.sequence()
            }
        };
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
                () = self.damage.reported() => return Err(SyncError::Damaged),
            };
            let Some(frame) = frame else {
                return Err(SyncError::Ended);
            };
            let frame = frame.map_err(|e| SyncError::Http(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            lines.push(&data);
            // Every change that has arrived goes to the journal in one
            // write and one sync (group commit): while a sync runs, the
            // next changes gather in the stream.
            let mut batch = Vec::new();
            let mut heartbeat = None;
            while let Some(message) = lines
                .next_message()
                .map_err(|e| SyncError::Message(e.to_string()))?
            {
                match message {
                    Message::Changes { changes } => batch.extend(changes),
                    Message::Snapshot { seq, required } => {
                        self.commit(&mut batch).await?;
                        match self.load_snapshot(client, &token, seq).await {
                            Ok(()) => {}
                            Err(e) if required => return Err(e),
                            Err(e) => tracing::warn!(error = %e, "optional snapshot not loaded"),
                        }
                    }
                    Message::Heartbeat { seq } => heartbeat = Some(seq),
                }
            }
            self.commit(&mut batch).await?;
            // Control says it has sent everything up to `seq`.
            if let Some(seq) = heartbeat
                && self.table.load().sequence() >= seq
            {
                self.caught_up.set();
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
