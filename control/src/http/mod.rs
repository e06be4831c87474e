//! The HTTP edge: the only module that knows axum. It maps requests to
//! calls on the layers below and their errors to problem documents
//! ([`problem`]); it holds no rules of its own.

pub mod abuse;
pub mod account;
pub mod admin;
pub mod clicks;
pub mod conn;
pub mod domains;
pub mod extract;
pub mod history;
pub mod keys;
pub mod links;
pub mod openapi;
pub mod problem;
pub mod qr;
pub mod routing;
pub mod stats;
pub mod stream;
pub mod users;
pub mod webhooks;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::state::AppState;

/// Serves the whole API on `listener` until `stop` resolves, then drains;
/// every connection bounded as [`conn`] says.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    metrics: PrometheusHandle,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = &state.config;
    let limits = conn::Limits {
        header_timeout: Duration::from_millis(config.control_header_timeout_ms),
        body_timeout: Duration::from_millis(config.control_body_timeout_ms),
        idle_timeout: Duration::from_millis(config.control_idle_timeout_ms),
        connections_max: connections_max(config.control_connections_max),
    };
    conn::serve(listener, router(state, metrics), limits, stop).await
}

/// Descriptors kept free of connections: the store, logs, snapshots.
const DESCRIPTORS_RESERVED: u64 = 256;

/// The connection cap, lowered (with a warning) to what the process's
/// descriptor limit allows once raised to its hard limit, so the cap and
/// not `accept` failing is what refuses the excess.
fn connections_max(configured: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return configured;
    }
    // As servers do, take the whole limit the system allows (the hard one).
    let wanted = limit.rlim_max.min(1 << 20);
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            limit.rlim_cur = wanted;
        }
    }
    let allowed = limit.rlim_cur.saturating_sub(DESCRIPTORS_RESERVED).max(1);
    if configured as u64 > allowed {
        tracing::warn!(
            control_connections_max = configured,
            open_files_limit = limit.rlim_cur,
            using = allowed,
            "control_connections_max is above what the open-files limit allows; raise the limit (ulimit -n, LimitNOFILE=)"
        );
        return allowed as usize;
    }
    configured
}

/// Every route, by resource; each handler lives in its resource's module.
pub fn router(state: Arc<AppState>, metrics: PrometheusHandle) -> Router {
    let body_limit = state.config.request_body_bytes_max;
    Router::new()
        .route("/", get(admin::index))
        .route("/api/v1", get(admin::index))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/api/v1/backup", get(admin::backup))
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route(
            "/api/v1/links",
            post(links::create_link).get(links::list_links),
        )
        .route("/api/v1/links/batch", post(links::create_batch))
        .route(
            "/api/v1/links/{code}",
            get(links::get_link)
                .patch(links::patch_link)
                .delete(links::delete_link),
        )
        .route("/api/v1/links/{code}/stats", get(stats::link_stats))
        .route("/api/v1/links/{code}/qr", get(qr::link_qr))
        .route("/api/v1/links/{code}/history", get(history::link_history))
        .route("/api/v1/links/{code}/report", post(abuse::report_link))
        .route("/api/v1/stats/top", get(stats::top_links))
        .route("/api/v1/keys", post(keys::create_key).get(keys::list_keys))
        .route(
            "/api/v1/domains",
            post(domains::create_domain).get(domains::list_domains),
        )
        .route(
            "/api/v1/domains/{name}",
            get(domains::get_domain)
                .patch(domains::patch_domain)
                .delete(domains::delete_domain),
        )
        .route("/api/v1/keys/{id}", delete(keys::delete_key))
        .route("/api/v1/auth/login", post(account::login))
        .route("/api/v1/auth/logout", post(account::logout))
        .route("/api/v1/auth/session", get(account::whoami))
        .route("/api/v1/auth/sessions", get(account::list_sessions))
        .route("/api/v1/auth/sessions/{id}", delete(account::end_session))
        .route("/api/v1/auth/password", post(account::change_password))
        .route("/api/v1/auth/redeem", post(account::redeem))
        .route(
            "/api/v1/users",
            post(users::create_user).get(users::list_users),
        )
        .route(
            "/api/v1/users/{id}",
            get(users::get_user)
                .patch(users::patch_user)
                .delete(users::delete_user),
        )
        .route("/api/v1/users/{id}/reset", post(users::reset_user))
        .route(
            "/api/v1/users/{id}/sessions",
            delete(users::end_user_sessions),
        )
        .route(
            "/api/v1/webhooks",
            post(webhooks::create_webhook).get(webhooks::list_webhooks),
        )
        .route(
            "/api/v1/webhooks/{id}",
            get(webhooks::get_webhook)
                .patch(webhooks::patch_webhook)
                .delete(webhooks::delete_webhook),
        )
        .route(
            "/api/v1/webhooks/{id}/deliveries",
            get(webhooks::webhook_deliveries),
        )
        .route("/api/v1/blocklist", get(abuse::list_blocklist))
        .route(
            "/api/v1/blocklist/{domain}",
            get(abuse::get_block)
                .put(abuse::put_block)
                .delete(abuse::delete_block),
        )
        .route("/api/v1/reports", get(abuse::list_reports))
        .route("/api/v1/reports/{id}/resolve", post(abuse::resolve_report))
        .route("/internal/v1/changes", get(stream::changes))
        .route("/internal/v1/snapshots/{seq}", get(stream::snapshot_file))
        .route("/internal/v1/segments", get(stream::segments))
        .route("/internal/v1/segments/{file}", get(stream::segment_file))
        .route("/internal/v1/clicks", post(clicks::ingest))
        .route(
            "/internal/v1/history/{code}",
            get(history::internal_history),
        )
        .fallback(|| async { problem::ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { problem::ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(axum::middleware::from_fn(track))
        .layer(DefaultBodyLimit::max(body_limit))
}

/// Records requests by route and status, and their latency.
async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("control_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("control_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
