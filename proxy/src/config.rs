//! The proxy's settings: a TOML file, then `SHORTLINE_<KEY>` variables, then
//! flags. It shares `SHORTLINE_DATA_DIR`, `SHORTLINE_CONTROL_LISTEN` and
//! `SHORTLINE_PROXY_LISTEN` with the control plane, so one environment
//! starts either binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Deserialize;
use shortline_common::layout::DataDir;
pub use shortline_common::settings::LogFormat;
use shortline_common::settings::{self, Kind, range};

/// Every setting, with its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Shared with the control plane: its `snapshots/` folder is read here,
    /// and the proxy keeps its own copies in `proxy-cache/`.
    pub data_dir: PathBuf,
    /// Where browsers connect.
    pub proxy_listen: SocketAddr,
    /// Prometheus metrics and health, on a separate listener.
    pub proxy_metrics_listen: SocketAddr,
    /// The control plane's address, as it listens.
    pub control_listen: SocketAddr,
    /// Overrides the control plane's base URL (for a remote control plane).
    pub control_url: Option<String>,
    /// The internal token; read from the data directory when unset.
    pub internal_token: Option<String>,
    /// Worker threads of the redirect listener.
    pub proxy_threads: usize,
    /// Keep-alive idle timeout of client connections.
    pub keepalive_timeout_seconds: u64,
    /// Longest wait for a request's headers.
    pub read_timeout_ms: u64,
    /// Longest wait to write a response.
    pub write_timeout_ms: u64,
    /// Requests served on one connection before it is closed.
    pub keepalive_requests_max: u32,
    /// Largest request header section accepted; larger ones get 431.
    pub request_headers_bytes_max: usize,
    /// Whether clicks are captured and shipped to control.
    pub click_capture: bool,
    /// Take the client address (for countries) from the last
    /// `X-Forwarded-For` entry; only behind a load balancer that sets it.
    pub trust_forwarded_for: bool,
    /// A MaxMind-format country database (the control plane's
    /// `geoip_database`), for targeting rules with countries; without
    /// one, such rules never hold.
    pub geoip_database: Option<PathBuf>,
    /// Unknown codes (404s) one client may ask for per window before it is
    /// refused with 429; 0 turns the enumeration guard off.
    pub enumeration_misses_max: u32,
    pub enumeration_window_seconds: u64,
    /// How long a client that walked codes is refused.
    pub enumeration_block_seconds: u64,
    /// Clients the enumeration guard tracks at once, in a table of fixed
    /// size; past it, the least recently active are forgotten.
    pub enumeration_clients_max: usize,
    /// IPv6 clients are counted by this many leading bits (a /64 is one host).
    pub enumeration_ipv6_prefix_bits: u8,
    /// Click events held between the redirect path and the batcher.
    pub click_ring_capacity: usize,
    /// Most click events per batch sent to control.
    pub click_batch_max: usize,
    /// Longest a click waits before its batch is sent.
    pub click_flush_interval_ms: u64,
    /// Longest wait between retries of a failed batch.
    pub click_retry_backoff_max_ms: u64,
    /// Longest a shutdown waits to ship queued clicks.
    pub click_shutdown_flush_ms: u64,
    /// Longest wait between attempts to reach the control plane.
    pub reconnect_backoff_max_ms: u64,
    /// A stream silent for this long is considered dead (control heartbeats every second).
    pub stream_idle_timeout_ms: u64,
    /// At start-up, longest the proxy waits for control to bring its table
    /// up to date before it answers from the table as it stands.
    pub catch_up_wait_ms: u64,
    /// Journal size past which the proxy writes its view as a snapshot of
    /// its own and empties the journal (control's snapshots normally keep
    /// it far smaller).
    pub journal_bytes_max: u64,
    /// Snapshot files kept in `proxy-cache/`.
    pub snapshot_keep: usize,
    /// Seconds to finish in-flight requests after SIGTERM or an upgrade.
    pub grace_period_seconds: u64,
    /// Log format: text or json.
    pub log_format: LogFormat,
    /// Where browsers connect over HTTPS; none (the default) serves plain
    /// HTTP only.
    pub proxy_tls_listen: Option<SocketAddr>,
    /// Certificates and keys for HTTPS (`NAME.crt` with `NAME.key`);
    /// `data_dir/tls/` when unset.
    pub proxy_tls_dir: Option<PathBuf>,
    /// How often the certificate directory is read again for changes.
    pub proxy_tls_reload_ms: u64,
    /// What a request for a host that is not a short domain gets: served
    /// as the default domain (`default`) or 421 (`misdirected`).
    pub proxy_unknown_host: crate::answer::UnknownHost,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            proxy_listen: ([0, 0, 0, 0], 8080).into(),
            proxy_metrics_listen: ([127, 0, 0, 1], 8082).into(),
            control_listen: ([127, 0, 0, 1], 8081).into(),
            control_url: None,
            internal_token: None,
            proxy_threads: 2,
            keepalive_timeout_seconds: 60,
            read_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            keepalive_requests_max: 10_000,
            request_headers_bytes_max: 16 * 1024,
            click_capture: true,
            enumeration_misses_max: 100,
            enumeration_window_seconds: 10,
            enumeration_block_seconds: 60,
            enumeration_clients_max: 65_536,
            enumeration_ipv6_prefix_bits: 64,
            trust_forwarded_for: false,
            geoip_database: None,
            click_ring_capacity: 1 << 16,
            click_batch_max: 16_384,
            click_flush_interval_ms: 200,
            click_retry_backoff_max_ms: 5000,
            click_shutdown_flush_ms: 3000,
            reconnect_backoff_max_ms: 2000,
            stream_idle_timeout_ms: 5000,
            catch_up_wait_ms: 2000,
            journal_bytes_max: 64 << 20,
            snapshot_keep: 2,
            grace_period_seconds: 5,
            log_format: LogFormat::Text,
            proxy_tls_listen: None,
            proxy_tls_dir: None,
            proxy_tls_reload_ms: 2000,
            proxy_unknown_host: crate::answer::UnknownHost::Default,
        }
    }
}

const KEYS: &[(&str, Kind)] = &[
    ("data_dir", Kind::Text),
    ("proxy_listen", Kind::Text),
    ("proxy_metrics_listen", Kind::Text),
    ("control_listen", Kind::Text),
    ("control_url", Kind::Text),
    ("internal_token", Kind::Text),
    ("proxy_threads", Kind::Integer),
    ("keepalive_timeout_seconds", Kind::Integer),
    ("read_timeout_ms", Kind::Integer),
    ("write_timeout_ms", Kind::Integer),
    ("keepalive_requests_max", Kind::Integer),
    ("request_headers_bytes_max", Kind::Integer),
    ("click_capture", Kind::Bool),
    ("enumeration_misses_max", Kind::Integer),
    ("enumeration_window_seconds", Kind::Integer),
    ("enumeration_block_seconds", Kind::Integer),
    ("enumeration_clients_max", Kind::Integer),
    ("enumeration_ipv6_prefix_bits", Kind::Integer),
    ("trust_forwarded_for", Kind::Bool),
    ("geoip_database", Kind::Text),
    ("click_ring_capacity", Kind::Integer),
    ("click_batch_max", Kind::Integer),
    ("click_flush_interval_ms", Kind::Integer),
    ("click_retry_backoff_max_ms", Kind::Integer),
    ("click_shutdown_flush_ms", Kind::Integer),
    ("reconnect_backoff_max_ms", Kind::Integer),
    ("stream_idle_timeout_ms", Kind::Integer),
    ("catch_up_wait_ms", Kind::Integer),
    ("journal_bytes_max", Kind::Integer),
    ("snapshot_keep", Kind::Integer),
    ("grace_period_seconds", Kind::Integer),
    ("log_format", Kind::Text),
    ("proxy_tls_listen", Kind::Text),
    ("proxy_tls_dir", Kind::Text),
    ("proxy_tls_reload_ms", Kind::Integer),
    ("proxy_unknown_host", Kind::Text),
];

impl ProxyConfig {
    /// Loads the file (if any), then the environment, and checks the result.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// [`ProxyConfig::load`] with the environment given.
    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Self> {
        let config: Self = settings::layered(file, env, KEYS)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        range("proxy_threads", self.proxy_threads as u64, 1, 1024)?;
        range(
            "keepalive_timeout_seconds",
            self.keepalive_timeout_seconds,
            1,
            3600,
        )?;
        range("read_timeout_ms", self.read_timeout_ms, 100, 600_000)?;
        range("write_timeout_ms", self.write_timeout_ms, 100, 600_000)?;
        range(
            "keepalive_requests_max",
            u64::from(self.keepalive_requests_max),
            1,
            10_000_000,
        )?;
        range(
            "click_ring_capacity",
            self.click_ring_capacity as u64,
            16,
            1 << 26,
        )?;
        range("click_batch_max", self.click_batch_max as u64, 1, 1 << 20)?;
        range(
            "enumeration_misses_max",
            u64::from(self.enumeration_misses_max),
            0,
            1_000_000,
        )?;
        range(
            "enumeration_window_seconds",
            self.enumeration_window_seconds,
            1,
            86_400,
        )?;
        range(
            "enumeration_block_seconds",
            self.enumeration_block_seconds,
            1,
            86_400,
        )?;
        range(
            "enumeration_clients_max",
            self.enumeration_clients_max as u64,
            16,
            1 << 24,
        )?;
        range(
            "enumeration_ipv6_prefix_bits",
            u64::from(self.enumeration_ipv6_prefix_bits),
            16,
            128,
        )?;
        range(
            "click_flush_interval_ms",
            self.click_flush_interval_ms,
            1,
            60_000,
        )?;
        range(
            "click_retry_backoff_max_ms",
            self.click_retry_backoff_max_ms,
            10,
            600_000,
        )?;
        range(
            "click_shutdown_flush_ms",
            self.click_shutdown_flush_ms,
            0,
            600_000,
        )?;
        range(
            "reconnect_backoff_max_ms",
            self.reconnect_backoff_max_ms,
            10,
            600_000,
        )?;
        range(
            "stream_idle_timeout_ms",
            self.stream_idle_timeout_ms,
            1500,
            600_000,
        )?;
        range(
            "journal_bytes_max",
            self.journal_bytes_max,
            1 << 16,
            1 << 36,
        )?;
        range("catch_up_wait_ms", self.catch_up_wait_ms, 0, 600_000)?;
        range("snapshot_keep", self.snapshot_keep as u64, 1, 100)?;
        range("grace_period_seconds", self.grace_period_seconds, 0, 3600)?;
        range(
            "proxy_tls_reload_ms",
            self.proxy_tls_reload_ms,
            100,
            3_600_000,
        )?;
        if self
            .control_url
            .as_ref()
            .is_some_and(|url| !url.starts_with("http://"))
        {
            bail!("bad configuration: control_url must be an http:// URL");
        }
        Ok(())
    }

    /// The control plane's base URL.
    #[must_use]
    pub fn control_base(&self) -> String {
        if let Some(url) = &self.control_url {
            return url.trim_end_matches('/').to_owned();
        }
        let mut addr = self.control_listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// The data directory's layout.
    #[must_use]
    pub fn layout(&self) -> DataDir {
        DataDir::new(&self.data_dir)
    }

    /// The control plane's snapshot folder (shared on one host).
    #[must_use]
    pub fn control_snapshot_dir(&self) -> PathBuf {
        self.layout().snapshots()
    }

    /// The certificate directory of the HTTPS listener.
    #[must_use]
    pub fn tls_dir(&self) -> PathBuf {
        self.proxy_tls_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls"))
    }

    /// The proxy's own snapshot folder.
    #[must_use]
    pub fn cache_dir(&self) -> PathBuf {
        self.layout().proxy_cache()
    }

    /// The internal token: configured, or the control plane's file in the data directory.
    pub fn resolve_internal_token(&self) -> Option<String> {
        if let Some(token) = &self.internal_token {
            return Some(token.clone());
        }
        self.layout().internal_token()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_variables_and_bad_values() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let config = ProxyConfig::load_from(
            None,
            &env(&[
                ("SHORTLINE_CONTROL_LISTEN", "0.0.0.0:9001"),
                ("SHORTLINE_PROXY_THREADS", "4"),
            ]),
        )
        .unwrap();
        assert_eq!(config.control_base(), "http://127.0.0.1:9001");
        assert_eq!(config.proxy_threads, 4);
        let err = ProxyConfig::load_from(None, &env(&[("SHORTLINE_PROXY_LISTEN", "nowhere")]))
            .unwrap_err();
        assert!(err.to_string().contains("proxy_listen"), "{err}");
        let err =
            ProxyConfig::load_from(None, &env(&[("SHORTLINE_PROXY_THREADS", "0")])).unwrap_err();
        assert!(err.to_string().contains("proxy_threads"), "{err}");
        let strict = ProxyConfig::load_from(
            None,
            &env(&[("SHORTLINE_PROXY_UNKNOWN_HOST", "misdirected")]),
        )
        .unwrap();
        assert_eq!(
            strict.proxy_unknown_host,
            crate::answer::UnknownHost::Misdirected
        );
        let err = ProxyConfig::load_from(None, &env(&[("SHORTLINE_PROXY_UNKNOWN_HOST", "421")]))
            .unwrap_err();
        assert!(err.to_string().contains("proxy_unknown_host"), "{err}");
    }
}
