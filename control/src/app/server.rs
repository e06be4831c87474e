//! Start-up, the HTTP server and shutdown.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, bail};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::config::{Config, StoreBackend};
use crate::db::redb::RedbBackend;
use crate::http;
use crate::state::AppState;
use crate::tasks::publish;

/// Latency buckets, in seconds, for every histogram.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

fn metrics_handle() -> Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Makes sure the data directory exists and is a writable directory.
pub fn prepare_data_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("data_dir {} exists but is not a directory", dir.display());
    }
    std::fs::create_dir_all(shortline_common::layout::DataDir::new(dir).snapshots())
        .with_context(|| format!("cannot create data_dir {}", dir.display()))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("data_dir {} is not writable", dir.display()))?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

/// Runs the control plane until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> Result<()> {
    let stop = shutdown_signal();
    serve_until(config, None, stop).await
}

/// What `serve_until` tells its caller once it serves.
#[derive(Debug)]
pub struct Ready {
    /// The bound address of the admin API.
    pub addr: std::net::SocketAddr,
    /// An admin token generated at this start, for the caller to show once.
    pub generated_admin_token: Option<String>,
}

/// Binds `control_listen`, naming the setting and how to change it when the
/// address is taken.
async fn bind_control(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        shortline_common::listen::Listener::with_flag("control_listen", addr).unusable(&e)
    })
}

/// Runs the control plane until `stop` resolves. `ready` receives the bound
/// address (and a generated admin token, which is then not printed here)
/// once the listener is up.
pub async fn serve_until(
    config: Config,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // The listener first: a taken address stops start-up before anything is
    // created or printed.
    let listener = bind_control(config.control_listen).await?;
    prepare_data_dir(&config.data_dir)?;
    // The recorder before the store: opening it replays and counts.
    let metrics = metrics_handle()?;
    let backend = open_backend(&config)?;
    crate::tasks::abuse::index_hosts_once(&*backend).context("cannot index link hosts")?;
    let (state, bootstrap) = AppState::start(config, backend)?;
    if ready.is_none()
        && let Some(token) = &bootstrap.generated_admin_token
    {
        println!(
            "admin token (shown once, only its hash is stored; `shortline-control admin-token` mints a new one): {token}"
        );
    }
    let initial = Arc::clone(&state);
    tokio::task::spawn_blocking(move || publish::build_snapshot(&initial, true))
        .await?
        .context("cannot build the first snapshot")?;
    tokio::spawn(publish::snapshot_loop(Arc::clone(&state)));
    tokio::spawn(publish::sweep_loop(Arc::clone(&state)));
    tokio::spawn(crate::tasks::acme::acme_loop(Arc::clone(&state)));
    tokio::spawn(crate::tasks::webhooks::webhook_loop(Arc::clone(&state)));
    tokio::spawn(crate::tasks::abuse::watch_threats(Arc::clone(&state)));
    tokio::spawn(crate::tasks::abuse::resume_sweeps(Arc::clone(&state)));
    tokio::spawn(Arc::clone(&state.analytics).run(state.committer.clone()));
    if state.backend.shared() {
        follow_other_writers(&state);
    }
    let bound = listener.local_addr()?;
    tracing::info!(%bound, public_url = %state.config.public_url, "control plane listening");
    println!("control listening on http://{bound}");
    if let Some(ready) = ready {
        let _ = ready.send(Ready {
            addr: bound,
            generated_admin_token: bootstrap.generated_admin_token,
        });
    }
    let shutdown = state.shutdown.clone();
    let last = Arc::clone(&state);
    http::serve(listener, state, metrics, async move {
        stop.await;
        // End the change streams so in-flight requests can drain.
        shutdown.send_replace(true);
    })
    .await
    .context("server failed")?;
    // Every ingest request waits for its flush, so nothing acknowledged is
    // pending; this only settles batches whose senders went away.
    last.analytics.flush(&last.committer).await;
    tracing::info!("control plane stopped");
    Ok(())
}

/// Opens the configured store.
pub fn open_backend(config: &Config) -> Result<Arc<dyn crate::db::Backend>> {
    match config.store_backend {
        StoreBackend::Redb => Ok(Arc::new(RedbBackend::open_with(
            &config.data_dir,
            std::time::Duration::from_millis(config.store_checkpoint_ms),
        )?)),
        #[cfg(feature = "fdb")]
        StoreBackend::Fdb => Ok(Arc::new(
            crate::db::fdb::FdbBackend::open(
                config.fdb_cluster_file.as_deref(),
                &config.fdb_prefix,
            )
            .context("cannot open the FoundationDB store")?,
        )),
        #[cfg(not(feature = "fdb"))]
        StoreBackend::Fdb => {
            bail!("this build has no FoundationDB support (build with --features fdb)")
        }
    }
}

/// With a shared store, other sidecars commit changes this process's
/// committer never sees: a thread waits on the store's change signal and
/// publishes the newest sequence, so this sidecar's proxies stream them too.
fn follow_other_writers(state: &Arc<AppState>) {
    let state = Arc::clone(state);
    let spawned = std::thread::Builder::new()
        .name("store-follower".into())
        .spawn(move || {
            loop {
                if let Err(e) = state
                    .backend
                    .wait_for_changes(std::time::Duration::from_secs(1))
                {
                    tracing::warn!(error = %e, "waiting for store changes failed");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                let mut newest = shortline_store::Seq(0);
                let read = state.backend.read(|txn| {
                    newest = txn.last_seq()?;
                    Ok(())
                });
                if read.is_ok() {
                    state.publish_committed(newest);
                }
                if *state.shutdown.borrow() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the store follower");
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives while
/// start-up is still going stops the process gracefully instead of killing
/// it. Call it from within the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let watched = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut interrupt)) = watched else {
            tracing::error!("cannot watch SIGTERM and SIGINT");
            return std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down");
    }
}
