//! The proxy's metrics: plain atomics, so recording on the redirect path
//! takes no lock and allocates nothing; rendered as Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1,
    1.0,
];

/// The answers the proxy counts, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Outcome {
    Redirect301,
    Redirect302,
    Redirect307,
    Redirect308,
    Preview,
    Flagged,
    NotFound,
    Gone,
    BadRequest,
    MethodNotAllowed,
    Health,
    /// Refused by the enumeration guard.
    Throttled,
    /// The lookup read a damaged block of the snapshot.
    Unavailable,
    /// A Host that is not one of the short domains (421).
    Misdirected,
    /// A plain request for a domain served over HTTPS, sent there.
    HttpsRedirect,
    /// `/` sent where its domain says.
    RootRedirect,
    /// An unknown code sent where its domain says.
    NotFoundRedirect,
    /// An expired or used-up link sent where its domain says.
    GoneRedirect,
    /// An ACME HTTP-01 challenge answered.
    AcmeChallenge,
}

/// Answers that count as a miss for the enumeration guard.
impl Outcome {
    #[must_use]
    pub fn is_miss(self) -> bool {
        matches!(self, Self::NotFound | Self::NotFoundRedirect)
    }
}

const OUTCOMES: [(Outcome, &str, &str); 19] = [
    (Outcome::Redirect301, "301", "redirect"),
    (Outcome::Redirect302, "302", "redirect"),
    (Outcome::Redirect307, "307", "redirect"),
    (Outcome::Redirect308, "308", "redirect"),
    (Outcome::Preview, "200", "preview"),
    (Outcome::Flagged, "200", "flagged"),
    (Outcome::NotFound, "404", "not_found"),
    (Outcome::Gone, "410", "gone"),
    (Outcome::BadRequest, "400", "bad_request"),
    (Outcome::MethodNotAllowed, "405", "method_not_allowed"),
    (Outcome::Health, "200", "health"),
    (Outcome::Throttled, "429", "throttled"),
    (Outcome::Unavailable, "503", "snapshot_damaged"),
    (Outcome::Misdirected, "421", "misdirected"),
    (Outcome::HttpsRedirect, "301", "https_redirect"),
    (Outcome::RootRedirect, "302", "root_redirect"),
    (Outcome::NotFoundRedirect, "302", "not_found_redirect"),
    (Outcome::GoneRedirect, "302", "gone_redirect"),
    (Outcome::AcmeChallenge, "200", "acme_challenge"),
];

/// Every metric of the proxy.
#[derive(Debug, Default)]
pub struct Metrics {
    answers: [AtomicU64; OUTCOMES.len()],
    latency_buckets: [AtomicU64; 12],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    pub clicks_queued: AtomicU64,
    pub clicks_shipped: AtomicU64,
    pub clicks_dropped: AtomicU64,
    pub click_batches_failed: AtomicU64,
    /// Clients blocked by the enumeration guard.
    pub clients_throttled: AtomicU64,
    /// Clients the guard forgot to make room for others.
    pub enumeration_evictions: AtomicU64,
    pub snapshot_sequence: AtomicU64,
    pub snapshot_created_unix_ms: AtomicU64,
    pub snapshot_links: AtomicU64,
    /// Delta segments installed over the base.
    pub snapshot_deltas: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub snapshots_rejected: AtomicU64,
    /// 1 while the installed snapshot has a damaged block.
    pub snapshot_damaged: AtomicU64,
    pub view_sequence: AtomicU64,
    pub overlay_entries: AtomicU64,
    pub changes_applied: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub journal_syncs: AtomicU64,
    pub journal_errors: AtomicU64,
    pub journal_replayed: AtomicU64,
    pub stream_connected: AtomicI64,
    pub stream_reconnects: AtomicU64,
    /// TLS handshakes completed, of them resumed, and failed (including
    /// timed out).
    pub tls_handshakes: AtomicU64,
    pub tls_resumed: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    /// Certificate sets loaded (start-up and reloads) and reloads refused.
    pub tls_loads: AtomicU64,
    pub tls_load_errors: AtomicU64,
    /// When the first of the served certificates expires (Unix seconds).
    pub tls_expires_first_unix: AtomicI64,
}

impl Metrics {
    /// Counts one answer and its latency.
    #[inline]
    pub fn record(&self, outcome: Outcome, elapsed_ns: u64) {
        self.answers[outcome as usize].fetch_add(1, Relaxed);
        let seconds = elapsed_ns as f64 * 1e-9;
        if let Some(bucket) = LATENCY_BUCKETS_SECONDS.iter().position(|&b| seconds <= b) {
            self.latency_buckets[bucket].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns.fetch_add(elapsed_ns, Relaxed);
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP proxy_requests_total Answers by HTTP status and kind.\n# TYPE proxy_requests_total counter\n");
        for (outcome, status, kind) in OUTCOMES {
            let value = self.answers[outcome as usize].load(Relaxed);
            let _ = writeln!(
                out,
                "proxy_requests_total{{status=\"{status}\",kind=\"{kind}\"}} {value}"
            );
        }
        out.push_str(
            "# HELP proxy_request_duration_seconds Time from parsed request to written response.\n",
        );
        out.push_str("# TYPE proxy_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "proxy_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "proxy_request_duration_seconds_sum {}",
            self.latency_sum_ns.load(Relaxed) as f64 * 1e-9
        );
        let _ = writeln!(out, "proxy_request_duration_seconds_count {count}");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let created = self.snapshot_created_unix_ms.load(Relaxed);
        let age = if created == 0 {
            0.0
        } else {
            now_ms.saturating_sub(created) as f64 / 1e3
        };
        let gauges: [(&str, &str, &str, f64); 29] = [
            (
                "proxy_clicks_queued",
                "gauge",
                "Click events waiting in the ring.",
                self.clicks_queued.load(Relaxed) as f64,
            ),
            (
                "proxy_clicks_shipped_total",
                "counter",
                "Click events accepted by control.",
                self.clicks_shipped.load(Relaxed) as f64,
            ),
            (
                "proxy_clicks_dropped_total",
                "counter",
                "Click events dropped because the ring was full.",
                self.clicks_dropped.load(Relaxed) as f64,
            ),
            (
                "proxy_click_batches_failed_total",
                "counter",
                "Click batch sends that failed and were retried.",
                self.click_batches_failed.load(Relaxed) as f64,
            ),
            (
                "proxy_clients_throttled_total",
                "counter",
                "Clients refused for a while for asking for too many unknown codes.",
                self.clients_throttled.load(Relaxed) as f64,
            ),
            (
                "proxy_enumeration_evictions_total",
                "counter",
                "Clients the enumeration guard forgot to make room for others (its table is full: many clients are missing at once).",
                self.enumeration_evictions.load(Relaxed) as f64,
            ),
            (
                "proxy_snapshot_sequence",
                "gauge",
                "Change sequence covered by the installed segments (the base and its deltas).",
                self.snapshot_sequence.load(Relaxed) as f64,
            ),
            (
                "proxy_snapshot_age_seconds",
                "gauge",
                "Age of the newest installed segment file (the base or its newest delta).",
                age,
            ),
            (
                "proxy_snapshot_links",
                "gauge",
                "Links in the installed base.",
                self.snapshot_links.load(Relaxed) as f64,
            ),
            (
                "proxy_snapshot_deltas",
                "gauge",
                "Delta segments installed over the base.",
                self.snapshot_deltas.load(Relaxed) as f64,
            ),
            (
                "proxy_snapshots_installed_total",
                "counter",
                "Segments installed (bases and deltas).",
                self.snapshots_installed.load(Relaxed) as f64,
            ),
            (
                "proxy_snapshots_rejected_total",
                "counter",
                "Segment files refused as corrupt, truncated, foreign, from another base or out of order.",
                self.snapshots_rejected.load(Relaxed) as f64,
            ),
            (
                "proxy_snapshot_damaged",
                "gauge",
                "1 while the installed snapshot has a block that fails its checksum (lookups reading it answer 503 until a good copy is installed).",
                self.snapshot_damaged.load(Relaxed) as f64,
            ),
            (
                "proxy_view_sequence",
                "gauge",
                "Newest change applied.",
                self.view_sequence.load(Relaxed) as f64,
            ),
            (
                "proxy_overlay_entries",
                "gauge",
                "Codes whose newest state is in the overlay.",
                self.overlay_entries.load(Relaxed) as f64,
            ),
            (
                "proxy_changes_applied_total",
                "counter",
                "Changes received from control.",
                self.changes_applied.load(Relaxed) as f64,
            ),
            (
                "proxy_journal_bytes",
                "gauge",
                "Size of the journal of changes not yet in a snapshot.",
                self.journal_bytes.load(Relaxed) as f64,
            ),
            (
                "proxy_journal_syncs_total",
                "counter",
                "Batches of changes written and synced before being applied.",
                self.journal_syncs.load(Relaxed) as f64,
            ),
            (
                "proxy_journal_errors_total",
                "counter",
                "Batches that could not be written to the journal (and were not applied).",
                self.journal_errors.load(Relaxed) as f64,
            ),
            (
                "proxy_journal_replayed_changes",
                "gauge",
                "Changes replayed from the journal at start-up.",
                self.journal_replayed.load(Relaxed) as f64,
            ),
            (
                "proxy_stream_connected",
                "gauge",
                "1 while the change stream is connected.",
                self.stream_connected.load(Relaxed) as f64,
            ),
            (
                "proxy_stream_reconnects_total",
                "counter",
                "Change stream connection attempts after the first.",
                self.stream_reconnects.load(Relaxed) as f64,
            ),
            (
                "proxy_tls_handshakes_total",
                "counter",
                "TLS handshakes completed on the HTTPS listener.",
                self.tls_handshakes.load(Relaxed) as f64,
            ),
            (
                "proxy_tls_resumed_total",
                "counter",
                "TLS handshakes that resumed a session (ticket or cache).",
                self.tls_resumed.load(Relaxed) as f64,
            ),
            (
                "proxy_tls_handshake_failures_total",
                "counter",
                "TLS handshakes that failed or timed out.",
                self.tls_handshake_failures.load(Relaxed) as f64,
            ),
            (
                "proxy_tls_certificate_loads_total",
                "counter",
                "Certificate sets read and put in force (start-up and changes).",
                self.tls_loads.load(Relaxed) as f64,
            ),
            (
                "proxy_tls_certificate_load_errors_total",
                "counter",
                "Changed certificate directories refused; the set in force stays.",
                self.tls_load_errors.load(Relaxed) as f64,
            ),
            (
                "proxy_tls_certificate_expiry_seconds",
                "gauge",
                "Seconds until the first served certificate expires (0 without HTTPS).",
                match self.tls_expires_first_unix.load(Relaxed) {
                    0 => 0.0,
                    at => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64());
                        at as f64 - now
                    }
                },
            ),
            ("proxy_up", "gauge", "1 while the proxy runs.", 1.0),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let metrics = Metrics::default();
        metrics.record(Outcome::Redirect302, 20_000);
        metrics.record(Outcome::NotFound, 2_000_000_000);
        let text = metrics.render();
        assert!(
            text.contains("proxy_requests_total{status=\"302\",kind=\"redirect\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("proxy_requests_total{status=\"404\",kind=\"not_found\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("proxy_request_duration_seconds_bucket{le=\"0.000025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("proxy_request_duration_seconds_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
    }
}
