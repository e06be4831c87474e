//! The click batcher: drains the ring into batches bounded by size and time
//! and ships them to the control plane, retrying with backoff while control
//! is down. A batch being retried stays in memory; new clicks wait in the ring,
//! which drops (and counts) what it cannot hold.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::clicks::{ClickEvent, ClickRing, backoff, encode_batch};
use crate::config::ProxyConfig;
use crate::drain::{Drain, DrainGuard};
use crate::metrics::Metrics;
use crate::sync::{HttpClient, http_client};

/// Ships click batches.
#[derive(Debug)]
pub struct Shipper {
    pub config: ProxyConfig,
    pub ring: Arc<ClickRing>,
    pub metrics: Arc<Metrics>,
    /// Identifies this process's batches to control for de-duplication.
    pub proxy_id: String,
    /// Open connections: the last shipment waits for them to close, so the
    /// clicks of requests answered during the stop go with it.
    pub drain: Arc<Drain>,
    /// Held until the last shipment is done (taken with [`Drain::task`]
    /// before the server runs).
    pub finished: std::sync::Mutex<Option<DrainGuard>>,
}

impl Shipper {
    async fn send(
        &self,
        client: &HttpClient,
        seq: u64,
        batch: &[ClickEvent],
    ) -> Result<(), String> {
        let token = self
            .config
            .resolve_internal_token()
            .ok_or_else(|| "no internal token".to_owned())?;
        let body = encode_batch(&self.proxy_id, seq, batch);
        let request =
            http::Request::post(format!("{}/internal/v1/clicks", self.config.control_base()))
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                .header(
                    http::header::CONTENT_TYPE,
                    shortline_store::clickwire::CONTENT_TYPE,
                )
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("control answered {}", response.status()))
        }
    }

    /// Sends one batch until it is accepted, until `deadline` passes, or (without
    /// a deadline) until shutdown begins. Returns whether it was accepted.
    async fn ship(
        &self,
        client: &HttpClient,
        seq: u64,
        batch: &[ClickEvent],
        deadline: Option<Instant>,
        shutdown: &ShutdownWatch,
    ) -> bool {
        let max = Duration::from_millis(self.config.click_retry_backoff_max_ms);
        let mut attempt = 0;
        loop {
            match self.send(client, seq, batch).await {
                Ok(()) => {
                    self.metrics
                        .clicks_shipped
                        .fetch_add(batch.len() as u64, Relaxed);
                    return true;
                }
                Err(e) => {
                    self.metrics.click_batches_failed.fetch_add(1, Relaxed);
                    if attempt % 20 == 0 {
                        tracing::warn!(error = %e, clicks = batch.len(), "click batch not accepted; retrying");
                    }
                }
            }
            let wait = backoff(attempt, max);
            attempt += 1;
            if deadline.is_some_and(|d| Instant::now() + wait > d)
                || (deadline.is_none() && *shutdown.borrow())
            {
                return false;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[async_trait]
impl BackgroundService for Shipper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = http_client();
        let flush = Duration::from_millis(self.config.click_flush_interval_ms);
        let mut batch = Vec::with_capacity(self.config.click_batch_max);
        let mut seq = 0u64;
        'running: loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(flush) => false,
                _ = shutdown.changed() => true,
            };
            if stopping {
                break;
            }
            loop {
                self.ring
                    .drain_into(&mut batch, self.config.click_batch_max);
                self.metrics
                    .clicks_queued
                    .store(self.ring.len() as u64, Relaxed);
                if batch.is_empty() {
                    break;
                }
                seq += 1;
                if !self.ship(&client, seq, &batch, None, &shutdown).await {
                    // Shutdown began while control was unreachable; the batch
                    // is kept for the final flush below.
                    break 'running;
                }
                batch.clear();
            }
        }
        // Requests in flight at the stop are answered and their clicks
        // queued: wait for their connections (within the grace period) so
        // the last shipment carries them.
        let grace = Duration::from_secs(self.config.grace_period_seconds);
        if tokio::time::timeout(grace, self.drain.connections_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = self.drain.connections(),
                "connections still open after the grace period; shipping what is queued"
            );
        }
        // SIGTERM: flush what is queued, within a bound. A batch kept from the
        // loop above is resent with its sequence, so control counts it once.
        let deadline = Instant::now() + Duration::from_millis(self.config.click_shutdown_flush_ms);
        loop {
            if batch.is_empty() {
                self.ring
                    .drain_into(&mut batch, self.config.click_batch_max);
                if batch.is_empty() {
                    break;
                }
                seq += 1;
            }
            if !self
                .ship(&client, seq, &batch, Some(deadline), &shutdown)
                .await
            {
                let lost = batch.len() + self.ring.len();
                self.metrics.clicks_dropped.fetch_add(lost as u64, Relaxed);
                tracing::error!(
                    clicks = lost,
                    "control unreachable at shutdown; queued clicks dropped"
                );
                break;
            }
            batch.clear();
        }
        tracing::info!("click batcher stopped");
        drop(self.finished.lock().map(|mut held| held.take()));
    }
}
