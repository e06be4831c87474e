//! Click capture: a bounded lock-free ring between the redirect path and a
//! batcher that ships batches to the control plane.
//!
//! The redirect path only pushes a fixed-size event into the ring; if the ring
//! is full the event is dropped and counted, and the redirect never waits.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crossbeam::queue::ArrayQueue;

use crate::metrics::Metrics;

/// Bytes of the referrer kept per event.
pub const REFERRER_BYTES_MAX: usize = 128;
/// Bytes of the user agent kept per event.
pub const USER_AGENT_BYTES_MAX: usize = 192;

/// A click, inline and fixed-size so capturing one allocates nothing.
#[derive(Clone)]
pub struct ClickEvent {
    pub link_id: u64,
    pub at_unix_ms: u64,
    pub head: bool,
    pub client: Option<IpAddr>,
    /// Where a link with rules or a split sent the click
    /// ([`shortline_store::routing::route_code`]); 0 for a plain link.
    pub route: u8,
    referrer: [u8; REFERRER_BYTES_MAX],
    referrer_len: u8,
    user_agent: [u8; USER_AGENT_BYTES_MAX],
    user_agent_len: u8,
}

impl std::fmt::Debug for ClickEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickEvent")
            .field("link_id", &self.link_id)
            .field("at_unix_ms", &self.at_unix_ms)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

fn copy_truncated<const N: usize>(from: &[u8]) -> ([u8; N], u8) {
    let mut out = [0u8; N];
    let len = from.len().min(N).min(u8::MAX as usize);
    out[..len].copy_from_slice(&from[..len]);
    (out, len as u8)
}

impl ClickEvent {
    #[must_use]
    pub fn new(
        link_id: u64,
        at_unix_ms: u64,
        head: bool,
        client: Option<IpAddr>,
        referrer: &[u8],
        user_agent: &[u8],
    ) -> Self {
        let (referrer, referrer_len) = copy_truncated::<REFERRER_BYTES_MAX>(referrer);
        let (user_agent, user_agent_len) = copy_truncated::<USER_AGENT_BYTES_MAX>(user_agent);
        Self {
            link_id,
            at_unix_ms,
            head,
            client,
            route: 0,
            referrer,
            referrer_len,
            user_agent,
            user_agent_len,
        }
    }

    #[must_use]
    pub fn referrer(&self) -> &[u8] {
        &self.referrer[..self.referrer_len as usize]
    }

    #[must_use]
    pub fn user_agent(&self) -> &[u8] {
        &self.user_agent[..self.user_agent_len as usize]
    }
}

/// The ring.
#[derive(Debug)]
pub struct ClickRing {
    queue: ArrayQueue<ClickEvent>,
    metrics: Arc<Metrics>,
}

impl ClickRing {
    #[must_use]
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            queue: ArrayQueue::new(capacity),
            metrics,
        }
    }

    /// Queues a click, or drops and counts it when the ring is full.
    #[inline]
    pub fn push(&self, event: ClickEvent) {
        if self.queue.push(event).is_err() {
            self.metrics.clicks_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Moves up to `max` events into `out`.
    pub fn drain_into(&self, out: &mut Vec<ClickEvent>, max: usize) {
        while out.len() < max {
            match self.queue.pop() {
                Some(event) => out.push(event),
                None => break,
            }
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Encodes a batch in the click wire format
/// ([`shortline_store::clickwire`]): user agents and referrers are sent once
/// per batch, however many clicks share them.
#[must_use]
pub fn encode_batch(proxy_id: &str, batch_seq: u64, events: &[ClickEvent]) -> Vec<u8> {
    let mut encoder = shortline_store::clickwire::Encoder::new();
    for e in events {
        encoder.push_routed(
            e.link_id,
            e.at_unix_ms,
            e.head,
            e.client,
            e.route,
            e.user_agent(),
            e.referrer(),
        );
    }
    encoder.finish(proxy_id, batch_seq)
}

/// Exponential backoff, capped.
#[must_use]
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(50);
    base.saturating_mul(1u32 << attempt.min(16)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_drops_and_counts() {
        let metrics = Arc::new(Metrics::default());
        let ring = ClickRing::new(2, Arc::clone(&metrics));
        for i in 0..5 {
            ring.push(ClickEvent::new(i, 0, false, None, b"", b""));
        }
        assert_eq!(ring.len(), 2);
        assert_eq!(metrics.clicks_dropped.load(Relaxed), 3);
        let mut out = Vec::new();
        ring.drain_into(&mut out, 10);
        assert_eq!(out.iter().map(|e| e.link_id).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn long_headers_are_truncated_not_refused() {
        let long = vec![b'a'; 1000];
        let event = ClickEvent::new(1, 2, true, None, &long, &long);
        assert_eq!(event.referrer().len(), REFERRER_BYTES_MAX);
        assert_eq!(event.user_agent().len(), USER_AGENT_BYTES_MAX);
        let batch = shortline_store::clickwire::decode(&encode_batch("p", 7, &[event])).unwrap();
        assert!(batch.clicks()[0].head);
        assert_eq!(batch.batch_seq(), 7);
        assert_eq!(batch.agent(&batch.clicks()[0]).len(), USER_AGENT_BYTES_MAX);
        assert_eq!(
            backoff(0, Duration::from_secs(1)),
            Duration::from_millis(50)
        );
        assert_eq!(backoff(30, Duration::from_secs(1)), Duration::from_secs(1));
    }
}
