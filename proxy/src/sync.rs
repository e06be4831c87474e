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
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use shortline_store::stream::Manifest;
use shortline_store::{Change, LiveTable, Seq, Snapshot};

use crate::clicks::backoff;
use crate::config::ProxyConfig;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::snapshots;

use shortline_store::stream::{LineReader, Message};

pub use crate::upstream::{HttpClient, http_client};

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

    /// After the segments covering `seq` are installed (new ones in
    /// `files`): keeps a copy of each in `proxy-cache/`, rewrites the
    /// journal to hold only what the segments do not, and adopts the
    /// journals of processes that have ended since (the old process of an
    /// upgrade).
    pub fn covered(&self, seq: Seq, files: &[std::path::PathBuf]) -> anyhow::Result<()> {
        let mut journal = self.journal();
        let adopted = journal.adopt_ended()?;
        if !adopted.is_empty() {
            self.table.apply(adopted);
        }
        let view = self.table.load_full();
        if view.covered() != seq {
            // Newer segments were installed meanwhile; they are handled on their own.
            return Ok(());
        }
        let dir = self.config.cache_dir();
        for file in files {
            let Some(name) = file.file_name() else {
                continue;
            };
            let cached = dir.join(name);
            if cached.exists() {
                continue;
            }
            // A hard link shares the file with control's folder (where
            // control may prune it); a copy where that is not possible.
            if std::fs::hard_link(file, &cached).is_err() {
                let aside = cached.with_extension("copy");
                std::fs::copy(file, &aside)?;
                std::fs::File::open(&aside)?.sync_all()?;
                std::fs::rename(&aside, &cached)?;
            }
        }
        crate::journal::sync_dir(&dir)?;
        journal.rewrite(seq, &view.overlay_changes())?;
        self.metrics.journal_bytes.store(journal.bytes(), Relaxed);
        snapshots::prune(&dir, self.config.snapshot_keep, &view);
        Ok(())
    }

    /// Writes what the view holds beyond its base (its deltas and overlay,
    /// each code once) as one delta segment in `proxy-cache/`, installs it
    /// and empties the journal it covers: the cost follows the changes, not
    /// the table.
    fn persist_view(&self, journal: &mut Journal) -> anyhow::Result<Seq> {
        let view = self.table.load_full();
        let seq = view.sequence();
        if seq <= view.covered() {
            return Ok(seq);
        }
        let dir = self.config.cache_dir();
        let (path, stats) = view.write_newer_than_base(&dir, seq)?;
        let codes = stats.record_count;
        crate::journal::sync_dir(&dir)?;
        self.table.install(
            snapshots::open_checked(&path, &self.metrics).ok_or_else(|| {
                anyhow::anyhow!("the delta just written does not open: {}", path.display())
            })?,
        )?;
        let view = self.table.load_full();
        journal.rewrite(view.covered(), &view.overlay_changes())?;
        snapshots::note_installed(&view, 1, &self.metrics);
        snapshots::prune(&dir, self.config.snapshot_keep, &view);
        tracing::info!(
            seq = seq.0,
            codes,
            "wrote the changes since the base as a delta segment; journal emptied"
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

    /// Moves the table to control's segments once they cover `seq`: the
    /// segments already held are kept (a base's pages are not touched to
    /// add a delta), and each one lacking is read from the shared folder or
    /// downloaded, then checked whole. However far behind, that is at most
    /// one base and the deltas over it.
    async fn load_segments(
        &self,
        client: &HttpClient,
        token: &str,
        seq: Seq,
    ) -> Result<(), SyncError> {
        let view = self.table.load_full();
        let damaged = view.damage().is_some();
        // A damaged table is replaced by good copies at the same sequence too.
        if seq < view.covered() || (seq == view.covered() && !damaged) {
            return Ok(());
        }
        let url = format!("{}/internal/v1/segments", self.config.control_base());
        let manifest: Manifest = serde_json::from_slice(&get_bytes(client, &url, token).await?)
            .map_err(|e| SyncError::Message(format!("segment list: {e}")))?;
        // From the list to serving: reading or downloading what is lacking,
        // checking it whole, and the swap.
        let started = std::time::Instant::now();
        let held = |segment: &Arc<Snapshot>| segment.damage().is_none();
        let mut fetched = Vec::new();
        let base = if view.base().base_id() == manifest.base_id() && held(view.base()) {
            Arc::clone(view.base())
        } else {
            let (base, path) = self.fetch(client, token, &manifest.base.file).await?;
            if base.delta_of().is_some() || base.base_id() != manifest.base_id() {
                return Err(self.refuse(&manifest.base.file, "is not the base control listed"));
            }
            fetched.push(path);
            Arc::new(base)
        };
        let mut deltas = Vec::with_capacity(manifest.deltas.len());
        for listed in &manifest.deltas {
            let of = shortline_store::DeltaOf {
                base: manifest.base_id(),
                parent: listed.parent,
            };
            let mine = view
                .deltas()
                .iter()
                .find(|d| d.delta_of() == Some(of) && d.sequence() == listed.sequence && held(d));
            if let Some(mine) = mine {
                deltas.push(Arc::clone(mine));
                continue;
            }
            let (delta, path) = self.fetch(client, token, &listed.file).await?;
            if delta.delta_of() != Some(of) || delta.sequence() != listed.sequence {
                return Err(self.refuse(&listed.file, "is not the delta control listed"));
            }
            fetched.push(path);
            deltas.push(Arc::new(delta));
        }
        let installed = match self.table.install_chain(base, deltas) {
            Ok(_) => true,
            Err(e @ shortline_store::InstallError::Older { .. }) => {
                // This proxy covers more already (a delta of its own).
                tracing::debug!(error = %e, "segments not installed");
                false
            }
            Err(e) => {
                self.metrics.snapshots_rejected.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "refusing control's segments; keeping the current table");
                return Err(SyncError::Snapshot(seq.0));
            }
        };
        let view = self.table.load_full();
        if installed {
            tracing::info!(
                seq = view.covered().0,
                base = view.base().sequence().0,
                deltas = view.deltas().len(),
                fetched = fetched.len(),
                install_us = started.elapsed().as_micros() as u64,
                "installed segments"
            );
        }
        snapshots::note_installed(&view, fetched.len() as u64, &self.metrics);
        self.update_view_metrics();
        let applier = Arc::clone(&self.applier);
        let covered = view.covered();
        drop(view);
        match tokio::task::spawn_blocking(move || applier.covered(covered, &fetched)).await {
            Ok(Ok(())) => {}
            // The journal still holds every change; it is only longer.
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot shorten the journal"),
            Err(e) => tracing::warn!(error = %e, "journal task failed"),
        }
        Ok(())
    }

    /// Counts and logs a segment file that is not what control listed.
    fn refuse(&self, file: &str, why: &str) -> SyncError {
        self.metrics.snapshots_rejected.fetch_add(1, Relaxed);
        tracing::error!(file, "segment file {why}; refused");
        SyncError::Message(format!("segment file {file} {why}"))
    }

    /// One segment file by name, checked whole: from the shared folder
    /// when it is there and good, else downloaded into `proxy-cache/`.
    async fn fetch(
        &self,
        client: &HttpClient,
        token: &str,
        file: &str,
    ) -> Result<(Snapshot, std::path::PathBuf), SyncError> {
        if !shortline_store::files::is_segment_name(file) {
            return Err(SyncError::Message(format!(
                "control listed a segment named {file:?}, which is not a segment file name"
            )));
        }
        let shared = self.config.control_snapshot_dir().join(file);
        if shared.is_file() {
            let metrics = Arc::clone(&self.metrics);
            let opening = shared.clone();
            let opened =
                tokio::task::spawn_blocking(move || snapshots::open_checked(&opening, &metrics))
                    .await
                    .map_err(|e| SyncError::Http(e.to_string()))?;
            // The shared file may be the very one found damaged (the cache
            // holds a hard link to it): then it is downloaded instead.
            if let Some(segment) = opened {
                return Ok((segment, shared));
            }
        }
        let url = format!("{}/internal/v1/segments/{file}", self.config.control_base());
        let bytes = get_bytes(client, &url, token).await?;
        let cache_dir = self.config.cache_dir();
        let target = cache_dir.join(file);
        let tmp = target.with_extension("download");
        let path = target.clone();
        let metrics = Arc::clone(&self.metrics);
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Snapshot>> {
            std::fs::create_dir_all(&cache_dir)?;
            std::fs::write(&tmp, &bytes)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            Ok(snapshots::open_checked(&target, &metrics))
        })
        .await
        .map_err(|e| SyncError::Http(e.to_string()))?
        .map_err(|e| SyncError::Http(format!("cannot store segment {file}: {e}")))?;
        let segment = opened.ok_or_else(|| {
            SyncError::Message(format!("downloaded segment {file} does not open; refused"))
        })?;
        Ok((segment, path))
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
            if view.damage().is_some() {
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
                        match self.load_segments(client, &token, seq).await {
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
