//! `shortline-proxy`: the redirect server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use clap::Parser;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use shortline_common::listen::Listener;
use shortline_proxy::app::{Limits, Plain, RedirectApp};
use shortline_proxy::clicks::ClickRing;
use shortline_proxy::config::ProxyConfig;
use shortline_proxy::drain::{Drain, Exit, Signals};
use shortline_proxy::journal::{self, Journal};
use shortline_proxy::metrics::Metrics;
use shortline_proxy::shipper::Shipper;
use shortline_proxy::snapshots;
use shortline_proxy::sync::{Applier, Subscriber};
use shortline_store::{LiveTable, Snapshot};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "shortline-proxy",
    version,
    about = "Shortline's redirect proxy"
)]
struct Cli {
    /// TOML configuration file; every key is optional (see docs/configuration.md).
    #[arg(long, env = "SHORTLINE_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Take over the listening sockets of a running proxy (graceful upgrade);
    /// then send the old process SIGQUIT.
    #[arg(short, long)]
    upgrade: bool,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
}

/// The metrics listener.
struct MetricsApp {
    metrics: Arc<Metrics>,
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let (status, content_type, body) = match path {
            "/metrics" => (
                200,
                "text/plain; version=0.0.4",
                self.metrics.render().into_bytes(),
            ),
            "/healthz" | "/readyz" => (200, "text/plain", b"ok\n".to_vec()),
            _ => (404, "text/plain", b"not found\n".to_vec()),
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .expect("a valid response")
    }
}

fn server_conf(config: &ProxyConfig, cli: &Cli) -> Result<ServerConf> {
    let mut conf = ServerConf::new().context("cannot build the server configuration")?;
    conf.threads = config.proxy_threads;
    // One single-threaded runtime per worker: connections never migrate, and
    // no cross-thread wake-ups or work-stealing bookkeeping per request.
    conf.work_stealing = false;
    conf.daemon = cli.daemon;
    conf.grace_period_seconds = Some(config.grace_period_seconds);
    conf.graceful_shutdown_timeout_seconds = Some(config.grace_period_seconds.max(1) + 2);
    let dir = std::fs::canonicalize(&config.data_dir)
        .with_context(|| format!("data_dir {} does not exist", config.data_dir.display()))?;
    let layout = shortline_common::layout::DataDir::new(dir);
    conf.upgrade_sock = layout.upgrade_socket().to_string_lossy().into_owned();
    conf.pid_file = layout.proxy_pid().to_string_lossy().into_owned();
    Ok(conf)
}

fn run(cli: &Cli) -> Result<()> {
    let config = ProxyConfig::load(cli.config.as_deref())?;
    shortline_common::settings::init_logging(config.log_format);
    if !cli.upgrade {
        // An upgrade takes over the sockets of the running process, which
        // holds these addresses.
        // Checked here: Pingora would retry a taken address for half a
        // minute and then abort.
        Listener::new("proxy_listen", config.proxy_listen).check()?;
        Listener::new("proxy_metrics_listen", config.proxy_metrics_listen).check()?;
        if let Some(listen) = config.proxy_tls_listen {
            Listener::new("proxy_tls_listen", listen).check()?;
        }
    }
    std::fs::create_dir_all(config.cache_dir())
        .with_context(|| format!("cannot create {}", config.cache_dir().display()))?;
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config, cli)?);
    // In an upgrade this waits for the old process's sockets, which it sends
    // after closing its journal: the table loaded below is the newest.
    server.bootstrap();
    let metrics = Arc::new(Metrics::default());
    let dirs = [config.control_snapshot_dir(), config.cache_dir()];
    let (snapshot, snapshot_path) = match snapshots::newest_valid(&dirs, &metrics) {
        Some((snapshot, path)) => (snapshot, Some(path)),
        None => {
            tracing::warn!("no snapshot found; starting empty until the control plane answers");
            (Snapshot::empty(), None)
        }
    };
    let deltas = snapshots::deltas_over(&snapshot, &dirs, &metrics);
    let table = Arc::new(LiveTable::new(snapshot));
    let delta_count = deltas.len() as u64;
    if let Err(e) = table.install_chain(
        Arc::clone(table.load().base()),
        deltas.into_iter().map(Arc::new).collect(),
    ) {
        // `deltas_over` only returns a chain, so this is a bug, not a file.
        tracing::error!(error = %e, "the delta segments found do not follow the base; starting from the base alone");
    }
    let view = table.load_full();
    snapshots::note_installed(&view, 1 + delta_count, &metrics);
    tracing::info!(
        seq = view.covered().0,
        base_links = view.base().len(),
        deltas = view.deltas().len(),
        "loaded snapshot segments"
    );
    drop(view);
    let damage = Arc::new(snapshots::Damage::default());
    if let Some(path) = snapshot_path {
        snapshots::verify_in_background(
            Arc::clone(table.load().base()),
            path,
            Arc::clone(&metrics),
            Arc::clone(&damage),
        );
    }
    // Every journal in the cache: of ended processes, and in an upgrade the
    // old process's as it stands (it goes on journaling while it drains).
    let replay = journal::recover(&config.cache_dir())?;
    if replay.running > 0 && !cli.upgrade {
        anyhow::bail!(
            "another shortline-proxy is running on data_dir {} (its journal in proxy-cache/ is locked); stop it, or give this one a data_dir of its own",
            config.data_dir.display()
        );
    }
    replay_journal(&table, &metrics, &replay);
    let view = table.load_full();
    let journal = Journal::create(&config.cache_dir(), view.covered(), &view.overlay_changes())?;
    drop(view);
    replay.retire()?;
    let ring = Arc::new(ClickRing::new(
        config.click_ring_capacity,
        Arc::clone(&metrics),
    ));

    let limits = Limits {
        keepalive_timeout_seconds: config.keepalive_timeout_seconds,
        read_timeout: Duration::from_millis(config.read_timeout_ms),
        write_timeout: Duration::from_millis(config.write_timeout_ms),
        keepalive_requests_max: config.keepalive_requests_max,
        request_headers_bytes_max: config.request_headers_bytes_max,
        click_capture: config.click_capture,
        trust_forwarded_for: config.trust_forwarded_for,
    };
    let guard = shortline_proxy::guard::GuardSettings {
        misses_max: config.enumeration_misses_max,
        window_seconds: config.enumeration_window_seconds,
        block_seconds: config.enumeration_block_seconds,
        clients_max: config.enumeration_clients_max,
        ipv6_prefix_bits: config.enumeration_ipv6_prefix_bits,
    };
    let geoip = match &config.geoip_database {
        Some(path) => Some(Arc::new(shortline_common::geo::GeoIp::open(path)?)),
        None => None,
    };
    let drain = Arc::new(Drain::default());
    let caught_up = Arc::new(shortline_proxy::sync::CaughtUp::default());
    let app = Arc::new(
        RedirectApp::new(
            Arc::clone(&table),
            Arc::clone(&ring),
            Arc::clone(&metrics),
            limits,
            guard,
        )
        .with_drain(Arc::clone(&drain))
        .with_unknown_host(config.proxy_unknown_host)
        .with_geoip(geoip)
        .with_history(shortline_proxy::history::HistorySource::new(
            config.control_base(),
            Box::new({
                let config = config.clone();
                move || config.resolve_internal_token()
            }),
        ))
        .with_catch_up(
            Arc::clone(&caught_up),
            Duration::from_millis(config.catch_up_wait_ms),
        ),
    );
    let mut redirects = Service::new("redirects".to_owned(), Plain(Arc::clone(&app)));
    redirects.add_tcp(&config.proxy_listen.to_string());
    redirects.threads = Some(config.proxy_threads);
    server.add_service(redirects);
    if let Some(listen) = config.proxy_tls_listen {
        let tls = Arc::new(shortline_proxy::tls::Tls::load(
            &config.tls_dir(),
            Arc::clone(&metrics),
        )?);
        tls.watch(Duration::from_millis(config.proxy_tls_reload_ms));
        let mut https = Service::new(
            "redirects-tls".to_owned(),
            tls.app(app, Duration::from_millis(config.read_timeout_ms)),
        );
        https.add_tcp(&listen.to_string());
        https.threads = Some(config.proxy_threads);
        server.add_service(https);
        println!("proxy listening on https://{listen}");
    }

    let mut metrics_service = Service::new(
        "metrics".to_owned(),
        pingora::apps::http_app::HttpServer::new_app(MetricsApp {
            metrics: Arc::clone(&metrics),
        }),
    );
    metrics_service.add_tcp(&config.proxy_metrics_listen.to_string());
    metrics_service.threads = Some(1);
    server.add_service(metrics_service);

    let applier = Arc::new(Applier::new(
        config.clone(),
        Arc::clone(&table),
        Arc::clone(&metrics),
        journal,
    ));
    server.add_service(background_service(
        "subscriber",
        Subscriber {
            config: config.clone(),
            table: Arc::clone(&table),
            metrics: Arc::clone(&metrics),
            applier: Arc::clone(&applier),
            caught_up,
            damage,
        },
    ));
    server.add_service(background_service(
        "clicks",
        Shipper {
            config: config.clone(),
            ring,
            metrics,
            proxy_id: format!("{:016x}", rand_id()),
            drain: Arc::clone(&drain),
            finished: std::sync::Mutex::new(Some(drain.task())),
        },
    ));
    let handing_over = Arc::clone(&drain);
    server.add_service(background_service("exit", Exit { drain }));
    println!("proxy listening on http://{}", config.proxy_listen);
    // Keep-alive connections close now instead of when Pingora broadcasts
    // the shutdown seconds later: the new process answers what follows.
    // This one goes on applying and journaling changes while it drains.
    let before_upgrade = move || handing_over.hand_over();
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            before_upgrade: Some(Box::new(before_upgrade)),
        }),
    });
    Ok(())
}

/// Applies what the journal held over the loaded snapshot.
fn replay_journal(table: &LiveTable, metrics: &Metrics, replay: &journal::Replay) {
    if replay.dropped_bytes > 0 {
        tracing::warn!(
            bytes = replay.dropped_bytes,
            "a journal ended in an unfinished or damaged write, which was never applied; ignored"
        );
    }
    let loaded = table.load().covered();
    if loaded < replay.base {
        tracing::error!(
            journal_starts_after = replay.base.0,
            snapshot = loaded.0,
            "no snapshot as new as the journal's start was found; links changed in between are served as of the older snapshot until control answers"
        );
    }
    let count = replay.changes.len();
    metrics
        .journal_replayed
        .store(count as u64, std::sync::atomic::Ordering::Relaxed);
    if count > 0 {
        let seq = table.apply(replay.changes.iter().cloned());
        tracing::info!(changes = count, seq = seq.0, "replayed the journal");
    }
}

/// A process-unique id from the clock and the pid.
fn rand_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        // Pingora's own end: its runtimes are stopped; exit without waiting
        // on anything else.
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
