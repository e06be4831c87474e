//! `shortline-control up`: the control plane and a proxy beside it, for one host.
//!
//! Start-up cannot half-fail: every listen address is checked before anything
//! is created or printed, and "shortline is up" (with a new admin token, when
//! one was generated) is printed only once the proxy answers. The proxy runs
//! in its own process group, so a terminal's Ctrl-C reaches `up` alone, which
//! then stops the proxy first (it ships its queued clicks while control still
//! takes them) and control after it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use shortline_common::listen::Listener;

use crate::app::server::Ready;
use crate::config::Config;

/// Longest wait for a started proxy to answer its first request. Generous:
/// a busy machine may take seconds to start a process.
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the proxy's readiness is polled while it starts.
const PROXY_POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Longest wait for the proxy to stop after SIGTERM before it is killed:
/// its grace period (5 s by default) with room to ship its last clicks.
const PROXY_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The three listeners of a one-host system.
#[must_use]
pub fn listeners(config: &Config) -> [Listener; 3] {
    [
        Listener::with_flag("control_listen", config.control_listen),
        Listener::with_flag("proxy_listen", config.proxy_listen),
        Listener::with_flag("proxy_metrics_listen", config.proxy_metrics_listen),
    ]
}

/// The proxy binary: beside this one (both are built into the same target
/// directory), else whatever `PATH` finds.
fn proxy_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("shortline-proxy")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("shortline-proxy"))
}

fn spawn_proxy(config: &Config, control: SocketAddr) -> Result<Child> {
    let binary = proxy_binary();
    let mut command = Command::new(&binary);
    // One database for both: countries in analytics and in targeting rules.
    if let Some(geoip) = &config.geoip_database {
        command.env("SHORTLINE_GEOIP_DATABASE", geoip);
    }
    command
        .env("SHORTLINE_DATA_DIR", &config.data_dir)
        .env("SHORTLINE_CONTROL_LISTEN", control.to_string())
        .env("SHORTLINE_PROXY_LISTEN", config.proxy_listen.to_string())
        .env(
            "SHORTLINE_PROXY_METRICS_LISTEN",
            config.proxy_metrics_listen.to_string(),
        )
        .env("SHORTLINE_PROXY_THREADS", config.proxy_threads.to_string())
        .env("SHORTLINE_LOG_FORMAT", config.log_format.as_str())
        .stdin(Stdio::null())
        // Its own process group: Ctrl-C in a terminal signals `up`'s group
        // only, and `up` stops the proxy in order.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the proxy {}", binary.display()))
}

/// Where to reach a listener from this host: a wildcard address is asked on
/// loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Whether the proxy's redirect listener answers its health check.
async fn proxy_answers(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), attempt).await,
        Ok(Ok(true))
    )
}

/// Waits until the proxy serves; fails if it exits or never answers.
async fn wait_for_proxy(proxy: &mut Child, addr: SocketAddr) -> Result<()> {
    let deadline = tokio::time::Instant::now() + PROXY_START_TIMEOUT;
    loop {
        if proxy_answers(addr).await {
            return Ok(());
        }
        if let Some(status) = proxy.try_wait().context("cannot wait for the proxy")? {
            bail!("the proxy exited while starting ({status}); its error is above");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the proxy did not answer on {addr} within {} s",
                PROXY_START_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(PROXY_POLL_INTERVAL).await;
    }
}

fn print_banner(config: &Config, ready: &Ready) {
    let bound = ready.addr;
    println!("shortline is up");
    if let Some(token) = &ready.generated_admin_token {
        println!("  admin token: {token}");
        println!(
            "               (shown once, only its hash is stored; `shortline-control admin-token` mints a new one)"
        );
    }
    println!(
        "  redirects:   {} (proxy on {})",
        config.public_url, config.proxy_listen
    );
    println!("  admin API:   http://{bound}/api/v1  (OpenAPI: http://{bound}/api/v1/openapi.json)");
    println!(
        "  metrics:     http://{bound}/metrics and http://{}/metrics",
        config.proxy_metrics_listen
    );
    println!("  data:        {}", config.data_dir.display());
    println!("  stop:        Ctrl-C (queued clicks are shipped first)");
}

/// Runs control, starts the proxy once control listens, and stops both on
/// SIGTERM or SIGINT: the proxy first, then control.
pub async fn run(config: Config) -> Result<()> {
    let mut stop_signal = std::pin::pin!(crate::app::server::shutdown_signal());
    for listener in listeners(&config) {
        listener.check()?;
    }
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut control = tokio::spawn(crate::app::server::serve_until(
        config.clone(),
        Some(ready_tx),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let Ok(ready) = ready_rx.await else {
        return control.await.context("control plane task failed")?;
    };
    let mut proxy = spawn_proxy(&config, ready.addr)?;
    let started = tokio::select! {
        started = wait_for_proxy(&mut proxy, reachable(config.proxy_listen)) => started,
        () = &mut stop_signal => Err(anyhow::anyhow!("stopped while starting")),
    };
    if let Err(e) = started {
        stop(&mut proxy).await;
        let _ = stop_tx.send(());
        let _ = control.await;
        return Err(e);
    }
    print_banner(&config, &ready);
    tokio::select! {
        () = &mut stop_signal => {
            // The proxy stops first, while control can still take its last clicks.
            stop(&mut proxy).await;
            let _ = stop_tx.send(());
            (&mut control).await.context("control plane task failed")?
        }
        result = &mut control => {
            stop(&mut proxy).await;
            result.context("control plane task failed")?
        }
        status = proxy.wait() => {
            let status = status.context("cannot wait for the proxy")?;
            let _ = stop_tx.send(());
            let _ = control.await;
            bail!("the proxy exited ({status}); stopping")
        }
    }
}

/// SIGTERM, then wait for the proxy to drain; kill it if it outlives its
/// grace period.
async fn stop(proxy: &mut Child) {
    if let Some(pid) = proxy.id()
        && let Ok(pid) = i32::try_from(pid)
    {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no
        // memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(PROXY_STOP_TIMEOUT, proxy.wait())
        .await
        .is_err()
    {
        tracing::warn!("the proxy did not stop in time; killing it");
        let _ = proxy.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_asked_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            reachable("[::]:8080".parse().unwrap()),
            "[::1]:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            reachable("10.1.2.3:80".parse().unwrap()),
            "10.1.2.3:80".parse::<SocketAddr>().unwrap()
        );
    }
}
