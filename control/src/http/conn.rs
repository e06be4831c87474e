//! The control plane's connections, accepted here rather than by
//! `axum::serve` so that none is held for free: every connection is in one
//! of three phases, each with a limit.
//!
//! * **Head**: from accept, or from the first byte after an idle spell, until
//!   a request head has arrived (`control_header_timeout_ms`).
//! * **Busy**: a request is being answered, until its response body ends.
//!   The request body must arrive within `control_body_timeout_ms` of its
//!   head (else 408); the answer itself is not limited, since the change
//!   stream is one long answer.
//! * **Idle**: between requests on a keep-alive connection
//!   (`control_idle_timeout_ms`).
//!
//! A watchdog per connection closes it when its phase outlives its limit.
//! Past `control_connections_max` open connections, a new one is answered
//! 503 and closed at once, without reading anything.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

/// The limits of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub connections_max: usize,
}

/// The answer to a connection past the cap, made once: written without
/// reading the request, then the socket is closed. The body is the problem
/// document every 503 carries ([`super::problem`]).
fn refusal() -> Vec<u8> {
    let problem =
        super::problem::ApiError::Unavailable("too many connections; retry shortly".into())
            .problem();
    let body = serde_json::to_vec(&problem).expect("a problem always serialises");
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n\
         Retry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

/// Why the request body did not arrive: answered 408 (see
/// [`super::problem::ApiError::RequestTimeout`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// Whether `error`, or anything in its chain of sources, is a [`BodyTimeout`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<BodyTimeout>() {
            return true;
        }
        next = error.source();
    }
    false
}

const HEAD: usize = 0;
const BUSY: usize = 1;
const IDLE: usize = 2;

/// The phase of one connection, shared by its socket, its service and its
/// watchdog.
#[derive(Debug)]
struct Phase {
    started: Instant,
    /// HEAD, BUSY or IDLE.
    phase: AtomicUsize,
    /// When the phase began, in milliseconds since `started`.
    since_ms: AtomicU64,
    /// Requests whose answers have not ended.
    busy: AtomicUsize,
    changed: Notify,
}

impl Phase {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            phase: AtomicUsize::new(HEAD),
            since_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn enter(&self, phase: usize) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: after an idle spell they start the next head.
    fn read_some(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.enter(HEAD);
        }
    }

    fn request_started(self: &Arc<Self>) -> Answering {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.enter(BUSY);
        Answering(Arc::clone(self))
    }
}

/// Held while a request is answered; dropped when its response body ends
/// (or is abandoned).
#[derive(Debug)]
struct Answering(Arc<Phase>);

impl Drop for Answering {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.enter(IDLE);
        }
    }
}

/// The socket, noting when bytes arrive.
struct Watched {
    stream: TcpStream,
    phase: Arc<Phase>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A request body that must end by a deadline.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        metrics::counter!("control_connections_timed_out_total", "phase" => "body")
                            .increment(1);
                        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that ends the connection's busy phase when it ends.
struct Observed {
    inner: Body,
    answering: Option<Answering>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.answering = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The router, as the service of one connection.
#[derive(Clone)]
struct ConnService {
    router: Router,
    phase: Arc<Phase>,
    client: SocketAddr,
    body_timeout: Duration,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnService {
    type Response = http::Response<Observed>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<Observed>, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let answering = self.phase.request_started();
        let limit = self.body_timeout;
        let mut request = request.map(|inner| {
            Body::new(TimedBody {
                inner,
                deadline: Instant::now() + limit,
                limit,
                sleep: None,
            })
        });
        request.extensions_mut().insert(ConnectInfo(self.client));
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|inner| Observed {
                inner,
                answering: Some(answering),
            }))
        })
    }
}

/// Resolves with the phase a connection outlived its limit in.
async fn watchdog(phase: &Phase, limits: &Limits) -> &'static str {
    loop {
        let changed = phase.changed.notified();
        let (name, limit) = match phase.phase.load(Ordering::Acquire) {
            HEAD => ("header", limits.header_timeout),
            IDLE => ("idle", limits.idle_timeout),
            _ => {
                changed.await;
                continue;
            }
        };
        let since = phase.since_ms.load(Ordering::Relaxed);
        let deadline = phase.started + Duration::from_millis(since) + limit;
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                // Only if nothing moved on in the meantime.
                if phase.since_ms.load(Ordering::Relaxed) == since
                    && phase.phase.load(Ordering::Acquire) != BUSY
                {
                    return name;
                }
            }
            () = changed => {}
        }
    }
}

/// Serves `router` on `listener` until `stop` resolves, then lets open
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let refused = refusal();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let mut accept_errors = 0u64;
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to close.
                    if accept_errors.is_multiple_of(100) {
                        tracing::warn!(error = %e, "cannot accept a connection");
                    }
                    accept_errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("control_connections_refused_total").increment(1);
            // Best effort, without waiting: the client learns why.
            let _ = stream.try_write(&refused);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let phase = Arc::new(Phase::new());
        let service = ConnService {
            router: router.clone(),
            phase: Arc::clone(&phase),
            client,
            body_timeout: limits.body_timeout,
        };
        let io = TokioIo::new(Watched {
            stream,
            phase: Arc::clone(&phase),
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            // The watchdog keeps the time of every phase.
            .header_read_timeout(None)
            .serve_connection(io, service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            metrics::gauge!("control_connections_open").increment(1.0);
            tokio::select! {
                served = connection => {
                    if let Err(e) = served {
                        tracing::debug!(%client, error = %e, "connection ended with an error");
                    }
                }
                phase = watchdog(&phase, &limits) => {
                    metrics::counter!("control_connections_timed_out_total", "phase" => phase)
                        .increment(1);
                    tracing::debug!(%client, phase, "connection timed out; closed");
                }
            }
            metrics::gauge!("control_connections_open").decrement(1.0);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let refused = refusal();
        let text = std::str::from_utf8(&refused).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 503);
    }

    #[test]
    fn a_body_timeout_is_found_in_a_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] BodyTimeout);
        assert!(is_body_timeout(&Outer(BodyTimeout(Duration::from_secs(1)))));
        assert!(!is_body_timeout(&std::io::Error::other("x")));
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_limit() {
        let limits = Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            connections_max: 1,
        };
        // Nothing sent: closed in the head phase.
        let phase = Arc::new(Phase::new());
        assert_eq!(watchdog(&phase, &limits).await, "header");
        assert!(phase.started.elapsed() >= limits.header_timeout);
        // A request in progress is never timed out by the watchdog; once its
        // answer ends, the idle limit runs from then.
        let phase = Arc::new(Phase::new());
        let answering = phase.request_started();
        let watched = Arc::clone(&phase);
        let dog = tokio::spawn(async move { watchdog(&watched, &limits).await });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!dog.is_finished());
        drop(answering);
        let ended = Instant::now();
        assert_eq!(dog.await.unwrap(), "idle");
        assert!(ended.elapsed() >= limits.idle_timeout);
        // Bytes after an idle spell start a head, with the header limit.
        let phase = Arc::new(Phase::new());
        drop(phase.request_started());
        tokio::time::sleep(Duration::from_secs(30)).await;
        phase.read_some();
        let head = Instant::now();
        assert_eq!(watchdog(&phase, &limits).await, "header");
        assert_eq!(head.elapsed(), limits.header_timeout);
    }
}
