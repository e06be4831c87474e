//! The HTTP edge: the only module that knows axum. It maps requests to
//! calls on the layers below and their errors to problem documents
//! ([`problem`]); it holds no rules of its own.

pub mod abuse;
pub mod admin;
pub mod clicks;
pub mod extract;
pub mod keys;
pub mod links;
pub mod openapi;
pub mod problem;
pub mod stats;
pub mod stream;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::state::AppState;

/// Serves the whole API on `listener` until `stop` resolves, then drains.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    metrics: PrometheusHandle,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state, metrics).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
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
        .route("/api/v1/links/{code}/report", post(abuse::report_link))
        .route("/api/v1/stats/top", get(stats::top_links))
        .route("/api/v1/keys", post(keys::create_key).get(keys::list_keys))
        .route("/api/v1/keys/{id}", delete(keys::delete_key))
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
        .route("/internal/v1/clicks", post(clicks::ingest))
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
