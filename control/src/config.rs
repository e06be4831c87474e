//! Configuration: one TOML file, overridden by `SHORTLINE_<KEY>` environment
//! variables, overridden by command-line flags. Every key has a documented
//! default (`docs/configuration.md` lists them), and a bad value stops start-up
//! with a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Deserialize;
use shortline_common::layout::DataDir;
pub use shortline_common::settings::LogFormat;
use shortline_common::settings::{self, Kind, range};

use crate::model::Strategy;

/// The most pending counters a click flush starts at on FoundationDB,
/// leaving room under its 10 MB transaction limit for one more proxy batch.
pub const FDB_FLUSH_KEYS_MAX: usize = 20_000;

/// The control plane's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the store, keys and snapshots.
    pub data_dir: PathBuf,
    /// Address of the admin REST API and the internal proxy endpoints.
    pub control_listen: SocketAddr,
    /// Address the proxy listens on (used by `up`).
    pub proxy_listen: SocketAddr,
    /// Address of the proxy's metrics listener (used by `up`).
    pub proxy_metrics_listen: SocketAddr,
    /// Base of every `short_url`.
    pub public_url: String,
    /// Other host names that serve short links, refused as targets (loops).
    pub short_domains: Vec<String>,
    /// Bootstrap admin key; when unset and no admin key exists, one is generated.
    pub admin_token: Option<String>,
    /// Shared secret of the internal endpoints; read from the data directory when unset.
    pub internal_token: Option<String>,
    /// Code strategy when a create names none.
    pub default_strategy: Strategy,
    /// Length of generated codes for counter, random and hash.
    pub code_length: usize,
    /// Ids leased from the store per block by the counter strategy.
    pub id_block_size: u64,
    /// Longest accepted target URL, in bytes.
    pub url_length_max: usize,
    /// Schemes accepted in targets.
    pub allowed_schemes: Vec<String>,
    /// Domains refused as targets, with all their subdomains.
    pub blocked_domains: Vec<String>,
    /// Most links in one batch create.
    pub batch_links_max: usize,
    /// Largest accepted request body, in bytes.
    pub request_body_bytes_max: usize,
    /// Longest a connection may take to send a request head, from accept or
    /// from its first byte after an idle spell.
    pub control_header_timeout_ms: u64,
    /// Longest a request body may take to arrive after its head (else 408).
    pub control_body_timeout_ms: u64,
    /// Longest a keep-alive connection may sit idle between requests.
    pub control_idle_timeout_ms: u64,
    /// Most connections open at once; past it new ones get 503 and are closed.
    pub control_connections_max: usize,
    /// Largest page of a list.
    pub list_limit_max: usize,
    /// Most tags on one link.
    pub tags_max: usize,
    /// Longest tag or title, in bytes.
    pub tag_length_max: usize,
    pub title_length_max: usize,
    /// Most write operations committed together in one store transaction.
    pub commit_batch_max: usize,
    /// Most write operations waiting for the committer before callers get 503.
    pub commit_queue_max: usize,
    /// How often the snapshot builder looks for new changes.
    pub snapshot_interval_ms: u64,
    /// Changes that make the builder compact a new snapshot at once.
    pub snapshot_changes_min: u64,
    /// Longest a change waits for a snapshot when fewer have accumulated.
    pub snapshot_age_max_ms: u64,
    /// Snapshot files kept in the snapshot folder.
    pub snapshot_keep: usize,
    /// Delta segments over a base before they are merged into one.
    pub snapshot_deltas_max: usize,
    /// Codes in the deltas, as a percentage of the base's links, that make
    /// the base and deltas merge into a new base.
    pub snapshot_merge_percent: u64,
    /// Changes kept in the change log behind the newest snapshot, for
    /// proxies that resume from an older sequence.
    pub change_log_keep: u64,
    /// Changes sent per message batch on the change stream.
    pub stream_batch_max: usize,
    /// How often the expiry sweeper runs.
    pub sweep_interval_ms: u64,
    /// Writes per second allowed per admin key.
    pub rate_limit_admin_per_second: u32,
    /// Writes per second allowed per user key (burst: two seconds' worth).
    pub rate_limit_user_per_second: u32,
    /// Requests per second allowed per client address on writes.
    pub rate_limit_ip_per_second: u32,
    /// Burst above the admin and per-address rates.
    pub rate_limit_burst: u32,
    /// Whether `POST /api/v1/links` without a key creates a link (owner
    /// `anonymous`); off by default.
    pub anonymous_create: bool,
    /// Anonymous creates per minute per client address (also the burst).
    pub rate_limit_anonymous_per_minute: u32,
    /// Abuse reports per minute per client address (also the burst).
    pub rate_limit_report_per_minute: u32,
    /// Open reports kept; past it new reports get 503 until some are resolved.
    pub reports_open_max: u64,
    /// A threat list: hex SHA-256 prefixes of canonicalised URL expressions,
    /// one per line; reloaded when the file changes.
    pub threat_list: Option<PathBuf>,
    /// How often the threat list file is checked for changes.
    pub threat_list_poll_ms: u64,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Proxy worker threads (used by `up`).
    pub proxy_threads: usize,
    /// A MaxMind-format country database (GeoLite2/GeoIP2 Country or City);
    /// countries are not counted without one.
    pub geoip_database: Option<PathBuf>,
    /// Longest folded clicks wait before they are flushed to the store.
    pub analytics_flush_ms: u64,
    /// Pending counter keys that start a flush at once; at four times this,
    /// click batches are refused with 503 until the store catches up.
    pub analytics_flush_keys_max: usize,
    /// Distinct referrer hosts and countries kept per link per bucket;
    /// further values are counted as `other`.
    pub analytics_top_n: u32,
    /// Days hourly buckets are kept; daily buckets are kept for good.
    pub analytics_hourly_retention_days: u32,
    /// Folder for the raw click export (newline-delimited JSON); off when unset.
    pub click_export_dir: Option<PathBuf>,
    /// Seconds after which an export file is closed and a new one started.
    pub click_export_rotate_seconds: u64,
    /// Bytes after which an export file is closed and a new one started.
    pub click_export_bytes_max: u64,
    /// `redb` (embedded, default) or `fdb` (FoundationDB).
    pub store_backend: StoreBackend,
    /// Embedded store: longest a write waits in the redo log before a
    /// checkpoint makes it durable in the store file (0: after every write).
    pub store_checkpoint_ms: u64,
    /// FoundationDB cluster file; unset: the client's default
    /// (`FDB_CLUSTER_FILE` or /etc/foundationdb/fdb.cluster).
    pub fdb_cluster_file: Option<PathBuf>,
    /// Names this deployment's subspace, so deployments can share a cluster.
    pub fdb_prefix: String,
    /// An ACME (RFC 8555) directory, such as Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`; certificates for
    /// domains with `acme` on are ordered from it. Unset: no ACME.
    pub acme_directory_url: Option<String>,
    /// A contact for the ACME account (`mailto:ops@example.com`).
    pub acme_contact: Option<String>,
    /// A PEM root the ACME server's HTTPS certificate chains to, for a
    /// private ACME CA; public ones need none.
    pub acme_ca_file: Option<PathBuf>,
    /// A certificate is renewed when it has less than this left.
    pub acme_renew_before_seconds: u64,
    /// How often certificates are checked for renewal and written out.
    pub acme_check_interval_ms: u64,
    /// The first wait after a failed order; it doubles with each failure.
    pub acme_retry_min_ms: u64,
    /// The longest wait between attempts.
    pub acme_retry_max_ms: u64,
    /// Where certificates from ACME are written for the proxy on this host
    /// (the proxy's `proxy_tls_dir`); `data_dir/tls` when unset.
    pub proxy_tls_dir: Option<PathBuf>,
    /// Sign-ins (and one-time password links used) per client address per
    /// minute.
    pub rate_limit_login_per_minute: u32,
    /// How long a browser session lasts after sign-in.
    pub session_ttl_seconds: u64,
    /// Marks session cookies `Secure` on every answer, not only those to
    /// requests that arrived over HTTPS (`X-Forwarded-Proto: https`).
    pub session_cookie_secure: bool,
    /// Lets webhooks deliver to loopback, private, link-local and other
    /// non-public addresses (off: such targets are refused, SSRF).
    pub webhook_allow_private: bool,
    /// Longest a webhook delivery may take, connection to last byte.
    pub webhook_timeout_ms: u64,
    /// The first wait after a failed delivery; it doubles with each failure.
    pub webhook_retry_min_ms: u64,
    /// The longest wait between deliveries of one event.
    pub webhook_retry_max_ms: u64,
    /// How long a subscription may keep failing before it is disabled.
    pub webhook_retry_window_seconds: u64,
}

/// Which metadata store holds links, keys, counters and the change log.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// redb in `data_dir` (one control plane per store).
    Redb,
    /// A FoundationDB cluster (a control sidecar per proxy host); needs a
    /// build with the `fdb` feature.
    Fdb,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            control_listen: ([127, 0, 0, 1], 8081).into(),
            proxy_listen: ([0, 0, 0, 0], 8080).into(),
            proxy_metrics_listen: ([127, 0, 0, 1], 8082).into(),
            public_url: "http://localhost:8080".to_owned(),
            short_domains: Vec::new(),
            admin_token: None,
            internal_token: None,
            default_strategy: Strategy::Counter,
            code_length: 7,
            id_block_size: 1000,
            url_length_max: 4096,
            allowed_schemes: vec!["http".to_owned(), "https".to_owned()],
            blocked_domains: Vec::new(),
            batch_links_max: 1000,
            request_body_bytes_max: 4 << 20,
            control_header_timeout_ms: 10_000,
            control_body_timeout_ms: 30_000,
            control_idle_timeout_ms: 60_000,
            control_connections_max: 4096,
            list_limit_max: 1000,
            tags_max: 20,
            tag_length_max: 64,
            title_length_max: 512,
            commit_batch_max: 1024,
            commit_queue_max: 65_536,
            snapshot_interval_ms: 1000,
            snapshot_changes_min: 1000,
            snapshot_age_max_ms: 10_000,
            snapshot_keep: 2,
            snapshot_deltas_max: 4,
            snapshot_merge_percent: 10,
            change_log_keep: 100_000,
            stream_batch_max: 1024,
            sweep_interval_ms: 10_000,
            rate_limit_admin_per_second: 2000,
            rate_limit_user_per_second: 100,
            rate_limit_ip_per_second: 2000,
            rate_limit_burst: 4000,
            anonymous_create: false,
            rate_limit_anonymous_per_minute: 10,
            rate_limit_report_per_minute: 10,
            reports_open_max: 100_000,
            threat_list: None,
            threat_list_poll_ms: 2000,
            log_format: LogFormat::Text,
            proxy_threads: 2,
            geoip_database: None,
            analytics_flush_ms: 1000,
            analytics_flush_keys_max: 250_000,
            analytics_top_n: 100,
            analytics_hourly_retention_days: 90,
            click_export_dir: None,
            click_export_rotate_seconds: 3600,
            click_export_bytes_max: 256 << 20,
            store_backend: StoreBackend::Redb,
            store_checkpoint_ms: 1000,
            fdb_cluster_file: None,
            fdb_prefix: "default".to_owned(),
            acme_directory_url: None,
            acme_contact: None,
            acme_ca_file: None,
            acme_renew_before_seconds: 30 * 86_400,
            acme_check_interval_ms: 60_000,
            acme_retry_min_ms: 60_000,
            acme_retry_max_ms: 6 * 3_600_000,
            rate_limit_login_per_minute: 10,
            session_ttl_seconds: 7 * 86_400,
            session_cookie_secure: false,
            webhook_allow_private: false,
            webhook_timeout_ms: 10_000,
            webhook_retry_min_ms: 10_000,
            webhook_retry_max_ms: 3_600_000,
            webhook_retry_window_seconds: 86_400,
            proxy_tls_dir: None,
        }
    }
}

/// Every key, with how `SHORTLINE_<KEY>` is parsed.
const KEYS: &[(&str, Kind)] = &[
    ("data_dir", Kind::Text),
    ("control_listen", Kind::Text),
    ("proxy_listen", Kind::Text),
    ("proxy_metrics_listen", Kind::Text),
    ("public_url", Kind::Text),
    ("short_domains", Kind::List),
    ("admin_token", Kind::Text),
    ("internal_token", Kind::Text),
    ("default_strategy", Kind::Text),
    ("code_length", Kind::Integer),
    ("id_block_size", Kind::Integer),
    ("url_length_max", Kind::Integer),
    ("allowed_schemes", Kind::List),
    ("blocked_domains", Kind::List),
    ("batch_links_max", Kind::Integer),
    ("request_body_bytes_max", Kind::Integer),
    ("control_header_timeout_ms", Kind::Integer),
    ("control_body_timeout_ms", Kind::Integer),
    ("control_idle_timeout_ms", Kind::Integer),
    ("control_connections_max", Kind::Integer),
    ("list_limit_max", Kind::Integer),
    ("tags_max", Kind::Integer),
    ("tag_length_max", Kind::Integer),
    ("title_length_max", Kind::Integer),
    ("commit_batch_max", Kind::Integer),
    ("commit_queue_max", Kind::Integer),
    ("snapshot_interval_ms", Kind::Integer),
    ("snapshot_changes_min", Kind::Integer),
    ("snapshot_age_max_ms", Kind::Integer),
    ("snapshot_keep", Kind::Integer),
    ("snapshot_deltas_max", Kind::Integer),
    ("snapshot_merge_percent", Kind::Integer),
    ("change_log_keep", Kind::Integer),
    ("stream_batch_max", Kind::Integer),
    ("sweep_interval_ms", Kind::Integer),
    ("rate_limit_admin_per_second", Kind::Integer),
    ("rate_limit_user_per_second", Kind::Integer),
    ("rate_limit_ip_per_second", Kind::Integer),
    ("rate_limit_burst", Kind::Integer),
    ("anonymous_create", Kind::Bool),
    ("rate_limit_anonymous_per_minute", Kind::Integer),
    ("rate_limit_report_per_minute", Kind::Integer),
    ("reports_open_max", Kind::Integer),
    ("threat_list", Kind::Text),
    ("threat_list_poll_ms", Kind::Integer),
    ("log_format", Kind::Text),
    ("proxy_threads", Kind::Integer),
    ("geoip_database", Kind::Text),
    ("analytics_flush_ms", Kind::Integer),
    ("analytics_flush_keys_max", Kind::Integer),
    ("analytics_top_n", Kind::Integer),
    ("analytics_hourly_retention_days", Kind::Integer),
    ("click_export_dir", Kind::Text),
    ("click_export_rotate_seconds", Kind::Integer),
    ("click_export_bytes_max", Kind::Integer),
    ("store_backend", Kind::Text),
    ("store_checkpoint_ms", Kind::Integer),
    ("fdb_cluster_file", Kind::Text),
    ("fdb_prefix", Kind::Text),
    ("acme_directory_url", Kind::Text),
    ("acme_contact", Kind::Text),
    ("acme_ca_file", Kind::Text),
    ("acme_renew_before_seconds", Kind::Integer),
    ("acme_check_interval_ms", Kind::Integer),
    ("acme_retry_min_ms", Kind::Integer),
    ("acme_retry_max_ms", Kind::Integer),
    ("proxy_tls_dir", Kind::Text),
    ("rate_limit_login_per_minute", Kind::Integer),
    ("session_ttl_seconds", Kind::Integer),
    ("session_cookie_secure", Kind::Bool),
    ("webhook_allow_private", Kind::Bool),
    ("webhook_timeout_ms", Kind::Integer),
    ("webhook_retry_min_ms", Kind::Integer),
    ("webhook_retry_max_ms", Kind::Integer),
    ("webhook_retry_window_seconds", Kind::Integer),
];

/// Overrides given on the command line, applied last.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub control_listen: Option<SocketAddr>,
    pub proxy_listen: Option<SocketAddr>,
    pub proxy_metrics_listen: Option<SocketAddr>,
    pub public_url: Option<String>,
}

impl Config {
    /// Loads the file (if any), then the environment, then `overrides`, and checks the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env, overrides)
    }

    /// [`Config::load`] with the environment given, for tests.
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Self> {
        let mut config: Self = settings::layered(file, env, KEYS)?;
        if let Some(dir) = &overrides.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(addr) = overrides.control_listen {
            config.control_listen = addr;
        }
        if let Some(addr) = overrides.proxy_listen {
            config.proxy_listen = addr;
        }
        if let Some(addr) = overrides.proxy_metrics_listen {
            config.proxy_metrics_listen = addr;
        }
        if let Some(url) = &overrides.public_url {
            config.public_url.clone_from(url);
        }
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        self.check_public_url()?;
        for (key, value, min, max) in self.bounds() {
            range(key, value, min, max)?;
        }
        self.check_choices()
    }

    fn check_public_url(&self) -> Result<()> {
        let public = url::Url::parse(&self.public_url).map_err(|e| {
            anyhow::anyhow!(
                "bad configuration: public_url {:?} is not a URL: {e}",
                self.public_url
            )
        })?;
        if !matches!(public.scheme(), "http" | "https") || public.host_str().is_none() {
            bail!("bad configuration: public_url must be an http or https URL with a host");
        }
        // Its host names the first short domain.
        let host = public.host_str().unwrap_or_default().trim_end_matches('.');
        if !shortline_store::is_valid_domain(host.as_bytes()) {
            bail!(
                "bad configuration: public_url's host {host:?} must be a domain name (or an IPv4 address): it names the first short domain"
            );
        }
        Ok(())
    }

    /// Every numeric setting with its allowed range: (key, value, min, max).
    fn bounds(&self) -> Vec<(&'static str, u64, u64, u64)> {
        let n = |v: usize| v as u64;
        let rate_max = 10_000_000;
        vec![
            ("code_length", n(self.code_length), 4, 32),
            ("id_block_size", self.id_block_size, 1, 1_000_000),
            (
                "url_length_max",
                n(self.url_length_max),
                16,
                n(shortline_store::TARGET_LEN_MAX),
            ),
            ("batch_links_max", n(self.batch_links_max), 1, 10_000),
            (
                "request_body_bytes_max",
                n(self.request_body_bytes_max),
                1024,
                64 << 20,
            ),
            (
                "control_header_timeout_ms",
                self.control_header_timeout_ms,
                100,
                600_000,
            ),
            (
                "control_body_timeout_ms",
                self.control_body_timeout_ms,
                100,
                3_600_000,
            ),
            (
                "control_idle_timeout_ms",
                self.control_idle_timeout_ms,
                100,
                3_600_000,
            ),
            (
                "control_connections_max",
                n(self.control_connections_max),
                1,
                1_000_000,
            ),
            ("list_limit_max", n(self.list_limit_max), 1, 10_000),
            ("tags_max", n(self.tags_max), 0, 100),
            ("tag_length_max", n(self.tag_length_max), 1, 256),
            ("title_length_max", n(self.title_length_max), 1, 4096),
            ("commit_batch_max", n(self.commit_batch_max), 1, 100_000),
            ("commit_queue_max", n(self.commit_queue_max), 1, 10_000_000),
            (
                "snapshot_interval_ms",
                self.snapshot_interval_ms,
                10,
                3_600_000,
            ),
            (
                "snapshot_changes_min",
                self.snapshot_changes_min,
                1,
                100_000_000,
            ),
            (
                "snapshot_age_max_ms",
                self.snapshot_age_max_ms,
                10,
                86_400_000,
            ),
            ("snapshot_keep", n(self.snapshot_keep), 1, 100),
            ("snapshot_deltas_max", n(self.snapshot_deltas_max), 1, 64),
            (
                "snapshot_merge_percent",
                self.snapshot_merge_percent,
                1,
                1000,
            ),
            ("change_log_keep", self.change_log_keep, 0, 100_000_000),
            ("stream_batch_max", n(self.stream_batch_max), 1, 100_000),
            ("sweep_interval_ms", self.sweep_interval_ms, 100, 86_400_000),
            (
                "rate_limit_admin_per_second",
                u64::from(self.rate_limit_admin_per_second),
                1,
                rate_max,
            ),
            (
                "rate_limit_user_per_second",
                u64::from(self.rate_limit_user_per_second),
                1,
                rate_max,
            ),
            (
                "rate_limit_anonymous_per_minute",
                u64::from(self.rate_limit_anonymous_per_minute),
                1,
                rate_max,
            ),
            (
                "rate_limit_report_per_minute",
                u64::from(self.rate_limit_report_per_minute),
                1,
                rate_max,
            ),
            ("reports_open_max", self.reports_open_max, 1, 1 << 32),
            (
                "threat_list_poll_ms",
                self.threat_list_poll_ms,
                100,
                3_600_000,
            ),
            (
                "rate_limit_ip_per_second",
                u64::from(self.rate_limit_ip_per_second),
                1,
                rate_max,
            ),
            (
                "rate_limit_burst",
                u64::from(self.rate_limit_burst),
                1,
                rate_max,
            ),
            ("proxy_threads", n(self.proxy_threads), 1, 1024),
            ("analytics_flush_ms", self.analytics_flush_ms, 1, 60_000),
            ("store_checkpoint_ms", self.store_checkpoint_ms, 0, 600_000),
            (
                "acme_renew_before_seconds",
                self.acme_renew_before_seconds,
                0,
                365 * 86_400,
            ),
            (
                "acme_check_interval_ms",
                self.acme_check_interval_ms,
                100,
                86_400_000,
            ),
            ("acme_retry_min_ms", self.acme_retry_min_ms, 100, 86_400_000),
            (
                "acme_retry_max_ms",
                self.acme_retry_max_ms,
                100,
                7 * 86_400_000,
            ),
            ("webhook_timeout_ms", self.webhook_timeout_ms, 100, 120_000),
            (
                "rate_limit_login_per_minute",
                u64::from(self.rate_limit_login_per_minute),
                1,
                rate_max,
            ),
            (
                "session_ttl_seconds",
                self.session_ttl_seconds,
                60,
                365 * 86_400,
            ),
            (
                "webhook_retry_min_ms",
                self.webhook_retry_min_ms,
                10,
                86_400_000,
            ),
            (
                "webhook_retry_max_ms",
                self.webhook_retry_max_ms,
                10,
                86_400_000,
            ),
            (
                "webhook_retry_window_seconds",
                self.webhook_retry_window_seconds,
                1,
                30 * 86_400,
            ),
            (
                "analytics_flush_keys_max",
                n(self.analytics_flush_keys_max),
                100,
                1_000_000,
            ),
            (
                "analytics_top_n",
                u64::from(self.analytics_top_n),
                1,
                10_000,
            ),
            (
                "analytics_hourly_retention_days",
                u64::from(self.analytics_hourly_retention_days),
                1,
                3660,
            ),
            (
                "click_export_rotate_seconds",
                self.click_export_rotate_seconds,
                1,
                86_400 * 7,
            ),
            (
                "click_export_bytes_max",
                self.click_export_bytes_max,
                1024,
                1 << 40,
            ),
        ]
    }

    /// The settings that are not numbers: the store, schemes and secrets.
    fn check_choices(&self) -> Result<()> {
        if self.store_backend == StoreBackend::Fdb && !cfg!(feature = "fdb") {
            bail!(
                "bad configuration: store_backend is fdb but this build has no FoundationDB support (build with --features fdb)"
            );
        }
        if self.fdb_prefix.is_empty() || self.fdb_prefix.len() > 64 {
            bail!("bad configuration: fdb_prefix must be 1 to 64 characters");
        }
        if self.webhook_retry_min_ms > self.webhook_retry_max_ms {
            bail!(
                "bad configuration: webhook_retry_min_ms ({}) is above webhook_retry_max_ms ({})",
                self.webhook_retry_min_ms,
                self.webhook_retry_max_ms
            );
        }
        if self.allowed_schemes.is_empty() {
            bail!("bad configuration: allowed_schemes must name at least one scheme");
        }
        if let Some(token) = &self.admin_token
            && token.len() < 16
        {
            bail!("bad configuration: admin_token must be at least 16 characters");
        }
        Ok(())
    }

    /// Pending counters that start a click flush: `analytics_flush_keys_max`,
    /// at most [`FDB_FLUSH_KEYS_MAX`] on FoundationDB, where one transaction
    /// holds at most 10 MB and a counter costs 126 to 152 bytes of it (the
    /// `statistics_counters_cost_only_their_mutation` test measures it).
    #[must_use]
    pub fn flush_keys_max(&self) -> usize {
        match self.store_backend {
            StoreBackend::Fdb => self.analytics_flush_keys_max.min(FDB_FLUSH_KEYS_MAX),
            StoreBackend::Redb => self.analytics_flush_keys_max,
        }
    }

    /// Where certificates from ACME are written for the proxy.
    #[must_use]
    pub fn tls_dir(&self) -> PathBuf {
        self.proxy_tls_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls"))
    }

    /// The data directory's layout.
    #[must_use]
    pub fn layout(&self) -> DataDir {
        DataDir::new(&self.data_dir)
    }

    /// Where snapshot files live.
    #[must_use]
    pub fn snapshot_dir(&self) -> PathBuf {
        self.layout().snapshots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_suit_one_machine() {
        let config = Config::load_from(None, &[], &Overrides::default()).unwrap();
        assert_eq!(config.control_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(config.proxy_listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.public_url, "http://localhost:8080");
        assert_eq!(config.default_strategy, Strategy::Counter);
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("control.toml");
        std::fs::write(
            &file,
            "code_length = 9\npublic_url = \"https://s.example\"\n",
        )
        .unwrap();
        let vars = env(&[
            ("SHORTLINE_CODE_LENGTH", "10"),
            ("SHORTLINE_BLOCKED_DOMAINS", "evil.example, bad.example"),
            ("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:9000"),
        ]);
        let overrides = Overrides {
            control_listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..Overrides::default()
        };
        let config = Config::load_from(Some(&file), &vars, &overrides).unwrap();
        assert_eq!(config.code_length, 10);
        assert_eq!(config.public_url, "https://s.example");
        assert_eq!(config.blocked_domains, ["evil.example", "bad.example"]);
        assert_eq!(config.control_listen.to_string(), "127.0.0.1:9001");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |vars: &[(&str, &str)]| {
            Config::load_from(None, &env(vars), &Overrides::default())
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("SHORTLINE_CONTROL_LISTEN", "nowhere")]).contains("control_listen"));
        assert!(err(&[("SHORTLINE_CODE_LENGTH", "abc")]).contains("code_length"));
        assert!(err(&[("SHORTLINE_CODE_LENGTH", "99")]).contains("code_length"));
        assert!(err(&[("SHORTLINE_DEFAULT_STRATEGY", "dice")]).contains("default_strategy"));
        assert!(err(&[("SHORTLINE_PUBLIC_URL", "ftp//x")]).contains("public_url"));
        assert!(err(&[("SHORTLINE_PUBLIC_URL", "http://[::1]:8080")]).contains("domain name"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("control.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        let message = Config::load_from(Some(&file), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(message.contains("no_such_key"), "{message}");
    }
}
