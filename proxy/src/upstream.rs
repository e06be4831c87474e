//! The HTTP client the proxy reaches control with: snapshots and the
//! change stream (`sync`), click batches (`shipper`) and history pages
//! (`history`). It names none of them, so each may use it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The HTTP client used to reach control.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[must_use]
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_nodelay(true);
    // Idle connections are dropped well before control's idle timeout
    // (control_idle_timeout_ms, 60 s by default) closes them, so a request
    // is never sent on a connection control is closing.
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(20))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}
