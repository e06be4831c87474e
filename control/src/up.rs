//! `shortline-control up`: the control plane and a proxy beside it, for one host.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use crate::config::Config;

/// The proxy binary: beside this one (both are built into the same target
/// directory), else whatever `PATH` finds.
fn proxy_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("shortline-proxy")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("shortline-proxy"))
}

fn spawn_proxy(config: &Config, control: std::net::SocketAddr) -> Result<Child> {
    let binary = proxy_binary();
    Command::new(&binary)
        .env("SHORTLINE_DATA_DIR", &config.data_dir)
        .env("SHORTLINE_CONTROL_LISTEN", control.to_string())
        .env("SHORTLINE_PROXY_LISTEN", config.proxy_listen.to_string())
        .env(
            "SHORTLINE_PROXY_METRICS_LISTEN",
            config.proxy_metrics_listen.to_string(),
        )
        .env("SHORTLINE_PROXY_THREADS", config.proxy_threads.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the proxy {}", binary.display()))
}

/// Runs control, starts the proxy once control listens, and stops both on
/// SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let control_config = config.clone();
    let mut control = tokio::spawn(crate::server::serve_until(
        control_config,
        Some(ready_tx),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let Ok(bound) = ready_rx.await else {
        return control.await.context("control plane task failed")?;
    };
    let mut proxy = spawn_proxy(&config, bound)?;
    println!("shortline is up");
    println!(
        "  redirects:  {} (proxy on {})",
        config.public_url, config.proxy_listen
    );
    println!("  admin API:  http://{bound}/api/v1  (OpenAPI: http://{bound}/api/v1/openapi.json)");
    println!(
        "  metrics:    http://{bound}/metrics and http://{}/metrics",
        config.proxy_metrics_listen
    );
    println!("  data:       {}", config.data_dir.display());
    tokio::select! {
        () = crate::server::shutdown_signal() => {
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
            anyhow::bail!("the proxy exited ({status}); stopping")
        }
    }
}

async fn stop(proxy: &mut Child) {
    if let Some(pid) = proxy.id() {
        // SIGTERM lets the proxy drain and flush its click buffer.
        // SAFETY: kill(2) with a pid we own and a valid signal number has no
        // memory-safety preconditions.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(std::time::Duration::from_secs(10), proxy.wait())
        .await
        .is_err()
    {
        let _ = proxy.kill().await;
    }
}
