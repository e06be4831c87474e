//! The processes a soak runs and breaks: one control plane and one proxy on
//! loopback ports in a data directory of their own, started, killed,
//! restarted and upgraded as real binaries.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The admin token of the soak's control plane.
pub const TOKEN: &str = "soak-admin-token-0123456789abcdef";

/// Longest wait for a process to start or catch up.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Three distinct free loopback ports: all are held while they are picked,
/// so the kernel cannot hand out one of them twice.
fn free_ports() -> Result<[u16; 3]> {
    let held = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    let mut ports = [0; 3];
    for (port, listener) in ports.iter_mut().zip(&held) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Where a cluster's processes live and how they are started and watched.
#[derive(Debug)]
pub struct Hosts {
    bin_dir: PathBuf,
    dir: PathBuf,
    pub control_port: u16,
    pub proxy_port: u16,
    pub metrics_port: u16,
    /// Clicks a stopping proxy logged it could not ship.
    shutdown_drops: Arc<AtomicU64>,
    agent: ureq::Agent,
}

/// A control plane and a proxy.
#[derive(Debug)]
pub struct Cluster {
    pub hosts: Hosts,
    control: Child,
    proxy: Child,
}

impl Hosts {
    fn env(&self, command: &mut Command) {
        command
            .env_clear()
            .env("SHORTLINE_DATA_DIR", &self.dir)
            .env(
                "SHORTLINE_CONTROL_LISTEN",
                format!("127.0.0.1:{}", self.control_port),
            )
            .env("SHORTLINE_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    }

    fn spawn_control(&self) -> Result<Child> {
        let mut command = Command::new(self.bin_dir.join("shortline-control"));
        command.arg("serve");
        self.env(&mut command);
        command
            .env("SHORTLINE_ADMIN_TOKEN", TOKEN)
            .env("SHORTLINE_RATE_LIMIT_REPORT_PER_MINUTE", "1000000")
            .env("SHORTLINE_RATE_LIMIT_IP_PER_SECOND", "1000000")
            .env("SHORTLINE_RATE_LIMIT_ADMIN_PER_SECOND", "1000000");
        let mut child = command.spawn().context("start shortline-control")?;
        forward_errors("control", child.stderr.take(), None);
        Ok(child)
    }

    fn spawn_proxy(&self, upgrade: bool) -> Result<Child> {
        let mut command = Command::new(self.bin_dir.join("shortline-proxy"));
        if upgrade {
            command.arg("--upgrade");
        }
        self.env(&mut command);
        command
            .env(
                "SHORTLINE_PROXY_LISTEN",
                format!("127.0.0.1:{}", self.proxy_port),
            )
            .env(
                "SHORTLINE_PROXY_METRICS_LISTEN",
                format!("127.0.0.1:{}", self.metrics_port),
            )
            // Readers ask for deleted codes on purpose.
            .env("SHORTLINE_ENUMERATION_MISSES_MAX", "0")
            .env("SHORTLINE_RECONNECT_BACKOFF_MAX_MS", "200")
            .env("SHORTLINE_CLICK_FLUSH_INTERVAL_MS", "100")
            .env("SHORTLINE_CLICK_RETRY_BACKOFF_MAX_MS", "200")
            .env("SHORTLINE_GRACE_PERIOD_SECONDS", "5");
        let mut child = command.spawn().context("start shortline-proxy")?;
        forward_errors(
            "proxy",
            child.stderr.take(),
            Some(Arc::clone(&self.shutdown_drops)),
        );
        Ok(child)
    }

    fn get(&self, url: &str) -> Option<(u16, String)> {
        let mut response = self.agent.get(url).call().ok()?;
        let status = response.status().as_u16();
        Some((
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        ))
    }

    fn wait_control(&self) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.control_port);
        let started = Instant::now();
        while self.get(&url).is_none_or(|(status, _)| status != 200) {
            if started.elapsed() > START_TIMEOUT {
                bail!("control did not become ready");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// One sample of the metrics a listener serves, if it answers.
    fn metric(&self, port: u16, name: &str) -> Option<f64> {
        let (_, text) = self.get(&format!("http://127.0.0.1:{port}/metrics"))?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// A proxy metric, if the proxy answers.
    pub fn proxy_metric(&self, name: &str) -> Option<f64> {
        self.metric(self.metrics_port, name)
    }

    /// A control metric, if control answers.
    pub fn control_metric(&self, name: &str) -> Option<f64> {
        self.metric(self.control_port, name)
    }

    /// Waits until the proxy answers and has (re)connected to the change
    /// stream more than `reconnects_before` times, or is connected at all
    /// when that is 0.
    fn wait_proxy_following(&self, reconnects_before: u64) -> Result<()> {
        let started = Instant::now();
        loop {
            let connected = self.proxy_metric("proxy_stream_connected") == Some(1.0);
            let reconnects = self
                .proxy_metric("proxy_stream_reconnects_total")
                .unwrap_or(0.0) as u64;
            if connected && (reconnects_before == 0 || reconnects > reconnects_before) {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("the proxy did not follow the change stream");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Clicks the proxy has dropped so far (its ring overflowing).
    fn ring_drops(&self) -> u64 {
        self.proxy_metric("proxy_clicks_dropped_total")
            .unwrap_or(0.0) as u64
    }
}

impl Cluster {
    /// Starts both in `dir` and waits until the proxy follows control.
    pub fn start(bin_dir: &Path, dir: &Path) -> Result<Self> {
        let [control_port, proxy_port, metrics_port] = free_ports()?;
        let hosts = Hosts {
            bin_dir: bin_dir.to_path_buf(),
            dir: dir.to_path_buf(),
            control_port,
            proxy_port,
            metrics_port,
            shutdown_drops: Arc::new(AtomicU64::new(0)),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into(),
        };
        let mut control = hosts.spawn_control()?;
        let proxy = match hosts.wait_control().and_then(|()| hosts.spawn_proxy(false)) {
            Ok(proxy) => proxy,
            Err(e) => {
                let _ = control.kill();
                let _ = control.wait();
                return Err(e);
            }
        };
        let cluster = Self {
            hosts,
            control,
            proxy,
        };
        cluster.hosts.wait_proxy_following(0)?;
        Ok(cluster)
    }
    /// SIGKILL to control, a fresh start, and the proxy following it again.
    pub fn kill_control(&mut self) -> Result<()> {
        let reconnects = self
            .hosts
            .proxy_metric("proxy_stream_reconnects_total")
            .unwrap_or(0.0) as u64;
        let _ = self.control.kill();
        let _ = self.control.wait();
        self.control = self.hosts.spawn_control()?;
        self.hosts.wait_control()?;
        self.hosts.wait_proxy_following(reconnects)
    }

    /// SIGTERM to the proxy, then a new one. Returns the clicks the old one
    /// dropped.
    pub fn restart_proxy(&mut self) -> Result<u64> {
        let dropped = self.hosts.ring_drops();
        signal(&self.proxy, libc::SIGTERM);
        let _ = self.proxy.wait();
        self.proxy = self.hosts.spawn_proxy(false)?;
        self.hosts.wait_proxy_following(0)?;
        Ok(dropped)
    }

    /// A graceful upgrade: a new process takes the sockets over, the old
    /// one drains. Returns the clicks the old one dropped.
    pub fn upgrade_proxy(&mut self) -> Result<u64> {
        let dropped = self.hosts.ring_drops();
        let socket = self.hosts.dir.join("proxy-upgrade.sock");
        let _ = std::fs::remove_file(&socket);
        let mut next = self.hosts.spawn_proxy(true)?;
        let started = Instant::now();
        while !socket.exists() {
            if started.elapsed() > START_TIMEOUT {
                let _ = next.kill();
                bail!("the new proxy did not wait for the sockets");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        signal(&self.proxy, libc::SIGQUIT);
        std::mem::swap(&mut self.proxy, &mut next);
        let _ = next.wait();
        self.hosts.wait_proxy_following(0)?;
        Ok(dropped)
    }

    /// Clicks that proxies dropped: their rings' counts taken before each
    /// stop, with what stopping proxies logged.
    #[must_use]
    pub fn shutdown_drops(&self) -> u64 {
        self.hosts.shutdown_drops.load(Ordering::Relaxed)
    }

    /// The clicks still queued in the proxy and at control.
    #[must_use]
    pub fn clicks_in_flight(&self) -> Option<f64> {
        Some(
            self.hosts.proxy_metric("proxy_clicks_queued")?
                + self
                    .hosts
                    .control_metric("control_clicks_pending")
                    .unwrap_or(0.0),
        )
    }

    /// Clicks dropped by the running proxy.
    #[must_use]
    pub fn current_ring_drops(&self) -> u64 {
        self.hosts.ring_drops()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in [&mut self.proxy, &mut self.control] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid with a valid signal.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// Copies a process's error lines to stderr, and adds up the clicks a
/// stopping proxy logs it dropped.
fn forward_errors(
    name: &'static str,
    stderr: Option<std::process::ChildStderr>,
    drops: Option<Arc<AtomicU64>>,
) {
    let Some(stderr) = stderr else {
        return;
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                eprintln!("[{name}] {line}");
                continue;
            };
            let fields = &event["fields"];
            if let Some(drops) = &drops
                && fields["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("queued clicks dropped"))
            {
                drops.fetch_add(fields["clicks"].as_u64().unwrap_or(0), Ordering::Relaxed);
            }
            // A new process polls for the old one's sockets; that is no error.
            let expected = fields["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("No incoming socket transfer"));
            if event["level"] == "ERROR" && !expected {
                eprintln!("[{name}] {line}");
            }
        }
    });
}
