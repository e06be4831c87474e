//! The redirect listener: answers `GET`/`HEAD /{code}` from the live table.
//!
//! This sits on Pingora's [`ServerApp`], below its HTTP layer: Pingora accepts
//! connections, runs the workers and handles graceful upgrades, and the proxy
//! speaks HTTP/1.1 itself. This module is the connection loop (keep-alive,
//! pipelining, deadlines, refusals, click capture); `codec` parses a head in
//! place and assembles a whole response into one reused buffer, written with
//! one call; [`answer`](crate::answer) decides the reply without I/O; `pages`
//! makes the preview and warning pages.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::Method;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use shortline_store::LiveTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::answer::{Ask, Body, Reply, UnknownHost, answer, answer_for};
use crate::answer::{
    BODY_BAD_REQUEST, BODY_HEADERS_TOO_LARGE, BODY_NOT_FOUND, BODY_THROTTLED, BODY_URI_TOO_LONG,
    page, plain,
};
use crate::clicks::{ClickEvent, ClickRing};
use crate::codec::{Next, Parsed, Request, RetryAfter, parse, write_response, write_response_with};
use crate::drain::Drain;
use crate::guard::{EnumerationGuard, GuardSettings};
use crate::history::{HistoryAsk, HistoryError, HistorySource};
use crate::metrics::{Metrics, Outcome};
use crate::path;

thread_local! {
    /// Where a forwarded query's `Location` is assembled, one per worker thread.
    static LOCATION_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub keepalive_timeout_seconds: u64,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub keepalive_requests_max: u32,
    pub request_headers_bytes_max: usize,
    /// Whether clicks are captured at all (benchmarks compare both).
    pub click_capture: bool,
    /// Take the client address from the last `X-Forwarded-For` entry (set
    /// only behind a load balancer that appends it).
    pub trust_forwarded_for: bool,
}

/// The redirect application.
#[derive(Debug)]
pub struct RedirectApp {
    table: Arc<LiveTable>,
    clicks: Arc<ClickRing>,
    metrics: Arc<Metrics>,
    limits: Limits,
    guard: EnumerationGuard,
    drain: Arc<Drain>,
    caught_up: Arc<crate::sync::CaughtUp>,
    catch_up_wait: Duration,
    unknown_host: UnknownHost,
    geoip: Option<Arc<shortline_common::geo::GeoIp>>,
    history: Option<HistorySource>,
}

/// What [`RedirectApp::respond`] did.
enum Responded {
    /// The answer is in the buffer.
    Written(Outcome),
    /// The answer is a history page, to fetch from control first.
    History(Box<HistoryAsk>),
}

/// A client connection: plain TCP as Pingora accepted it, or TLS over it.
pub trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + ?Sized> Conn for S {}

/// The client's address of an accepted connection.
#[must_use]
pub fn peer_of(stream: &Stream) -> Option<IpAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
}

/// The address a trusted load balancer appended last to `X-Forwarded-For`.
fn forwarded_client(header: &[u8]) -> Option<IpAddr> {
    let last = header.rsplit(|&b| b == b',').next()?;
    std::str::from_utf8(last).ok()?.trim().parse().ok()
}

impl RedirectApp {
    #[must_use]
    pub fn new(
        table: Arc<LiveTable>,
        clicks: Arc<ClickRing>,
        metrics: Arc<Metrics>,
        limits: Limits,
        guard: GuardSettings,
    ) -> Self {
        Self {
            table,
            clicks,
            metrics,
            limits,
            guard: EnumerationGuard::new(guard),
            drain: Arc::default(),
            caught_up: Arc::new(crate::sync::CaughtUp::already()),
            catch_up_wait: Duration::ZERO,
            unknown_host: UnknownHost::Default,
            geoip: None,
            history: None,
        }
    }

    /// Where preview pages fetch a link's whole history from; without one,
    /// `/{code}+?history` is answered 503.
    #[must_use]
    pub fn with_history(mut self, history: HistorySource) -> Self {
        self.history = Some(history);
        self
    }

    /// The country database that targeting rules with countries read.
    #[must_use]
    pub fn with_geoip(mut self, geoip: Option<Arc<shortline_common::geo::GeoIp>>) -> Self {
        self.geoip = geoip;
        self
    }

    /// What a request for a host that is not a short domain gets.
    #[must_use]
    pub fn with_unknown_host(mut self, unknown_host: UnknownHost) -> Self {
        self.unknown_host = unknown_host;
        self
    }

    /// Answers nothing until `caught_up` says the table is current, or
    /// `wait` has passed (control may be down: the table then stands).
    #[must_use]
    pub fn with_catch_up(mut self, caught_up: Arc<crate::sync::CaughtUp>, wait: Duration) -> Self {
        self.caught_up = caught_up;
        self.catch_up_wait = wait;
        self
    }

    /// Counts this listener's open connections in `drain`, so a stop waits
    /// for their answers (and clicks) and no longer.
    #[must_use]
    pub fn with_drain(mut self, drain: Arc<Drain>) -> Self {
        self.drain = drain;
        self
    }

    fn capture_click(
        &self,
        request: &Request<'_>,
        peer: Option<IpAddr>,
        link_id: u64,
        route: u8,
        now: SystemTime,
    ) {
        let at_unix_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let forwarded = if self.limits.trust_forwarded_for {
            forwarded_client(request.forwarded_for)
        } else {
            None
        };
        let mut event = ClickEvent::new(
            link_id,
            at_unix_ms,
            request.method == Method::HEAD,
            forwarded.or(peer),
            request.referrer,
            request.user_agent,
        );
        event.route = route;
        self.clicks.push(event);
    }

    /// Answers one parsed request into `out`, or says which history page
    /// to fetch; no I/O.
    fn respond(
        &self,
        request: &Request<'_>,
        client: &Client,
        next: Next,
        out: &mut Vec<u8>,
    ) -> Responded {
        let peer = client.peer;
        let now = SystemTime::now();
        let now_unix = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let client_ip = if self.limits.trust_forwarded_for {
            forwarded_client(request.forwarded_for).or(peer)
        } else {
            peer
        };
        let now_secs = u64::try_from(now_unix).unwrap_or(0);
        if let Some(wait) = client_ip.and_then(|ip| self.guard.check(ip, now_secs)) {
            let reply = plain(429, BODY_THROTTLED, Outcome::Throttled);
            write_response_with(
                out,
                &reply,
                request.method == Method::HEAD,
                next,
                request.http10,
                now,
                Some(RetryAfter(wait)),
            );
            return Responded::Written(reply.outcome);
        }
        let view = self.table.load();
        // `answer` never awaits, so the thread's buffer is never borrowed twice.
        LOCATION_BUFFER.with_borrow_mut(|location_buffer| {
            let reply = if request.headers_bytes > self.limits.request_headers_bytes_max {
                plain(431, BODY_HEADERS_TOO_LARGE, Outcome::BadRequest)
            } else {
                let ask = Ask {
                    method: &request.method,
                    target: request.target,
                    host: request.host,
                    secure: client.secure,
                    headers: crate::targeting::Headers {
                        user_agent: request.user_agent,
                        accept_language: request.accept_language,
                        cookie: request.cookie,
                        client_ip,
                        geoip: self.geoip.as_deref(),
                    },
                };
                answer_for(&view, &ask, self.unknown_host, now_unix, location_buffer)
            };
            if let Body::History(ask) = reply.body {
                // Each fetch costs control a read: it counts as a miss, so
                // one client cannot make the proxy flood control with them.
                if let Some(ip) = client_ip {
                    self.guard.record_miss(ip, now_secs);
                }
                return Responded::History(ask);
            }
            if reply.outcome.is_miss()
                && let Some(ip) = client_ip
            {
                if self.guard.record_miss(ip, now_secs) {
                    self.metrics
                        .clients_throttled
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                // Misses only: the redirect path never reads the guard's count.
                self.metrics
                    .enumeration_evictions
                    .store(self.guard.evicted(), std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(link_id) = reply.click
                && self.limits.click_capture
            {
                self.capture_click(request, peer, link_id, reply.route, now);
            }
            write_response(
                out,
                &reply,
                request.method == Method::HEAD,
                next,
                request.http10,
                now,
            );
            Responded::Written(reply.outcome)
        })
    }

    /// Fetches the history page `ask` names and writes it into `out`: the
    /// page, a 404 when control no longer has the link, or the preview with
    /// a note and a 503 when control cannot be asked.
    async fn history_page(
        &self,
        ask: HistoryAsk,
        request: &Request<'_>,
        next: Next,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let fetched = match &self.history {
            Some(source) => source.fetch(&ask).await,
            None => Err(HistoryError::Unreachable(
                "this listener reads no history".to_owned(),
            )),
        };
        let (reply, retry_after) = match fetched {
            Ok(history) => {
                let html = crate::pages::history_page(&ask, &history);
                (page(html, Outcome::Preview), None)
            }
            Err(HistoryError::NotFound) => (plain(404, BODY_NOT_FOUND, Outcome::NotFound), None),
            Err(e) => {
                tracing::debug!(error = %e, code = %ask.code, "history page not fetched");
                let html = crate::pages::with_notice(
                    &ask.preview,
                    "The link's full history cannot be read right now; try again shortly.",
                );
                let mut reply = page(html, Outcome::Unavailable);
                reply.status = 503;
                (reply, Some(RetryAfter(1)))
            }
        };
        write_response_with(
            out,
            &reply,
            request.method == Method::HEAD,
            next,
            request.http10,
            SystemTime::now(),
            retry_after,
        );
        reply.outcome
    }

    /// Serves one connection: HTTP/1.1 keep-alive and pipelining, HTTP/1.0,
    /// bounded heads, per-request read deadlines and an idle timeout.
    pub async fn serve<S: Conn>(
        &self,
        stream: &mut S,
        peer: Option<IpAddr>,
        secure: bool,
        shutdown: &ShutdownWatch,
    ) {
        let _open = self.drain.connection();
        if !self.caught_up.is_set() {
            self.caught_up.wait(self.catch_up_wait).await;
        }
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let mut shutdown = shutdown.clone();
        let mut client = Client {
            peer,
            secure,
            served: 0,
        };
        while self
            .await_request(stream, &mut buf, client.served == 0, &mut shutdown)
            .await
        {
            // Requests that arrived together (pipelined) are answered
            // together: one write for all of them, as the best servers do.
            out.clear();
            let mut answered = 0;
            loop {
                match self
                    .one_request(
                        stream,
                        &mut buf,
                        &mut out,
                        &mut client,
                        &shutdown,
                        answered > 0,
                    )
                    .await
                {
                    Step::Closed => return,
                    Step::Incomplete => break,
                    Step::Answered(consumed) => {
                        buf.drain(..consumed);
                        answered += 1;
                        Self::skip_empty_lines(&mut buf);
                        if buf.is_empty()
                            || answered >= PIPELINE_ANSWERS_MAX
                            || out.len() >= PIPELINE_BYTES_MAX
                        {
                            break;
                        }
                    }
                }
            }
            if self.send(stream, &out).await.is_err() {
                return;
            }
        }
    }

    /// Drops the empty lines a client may send between requests (RFC 9112,
    /// 2.2), so a stray CRLF is not taken for the start of a request that
    /// then times out.
    fn skip_empty_lines(buf: &mut Vec<u8>) {
        let empty = crate::codec::empty_lines(buf);
        if empty > 0 {
            buf.drain(..empty);
        }
    }

    /// Waits for the first bytes of the next request, unless pipelined bytes
    /// are already here. False when the connection is done.
    async fn await_request<S: Conn>(
        &self,
        stream: &mut S,
        buf: &mut Vec<u8>,
        first: bool,
        shutdown: &mut ShutdownWatch,
    ) -> bool {
        Self::skip_empty_lines(buf);
        if !buf.is_empty() {
            return true;
        }
        // Empty lines do not extend the wait: it ends at one deadline.
        let wait = if first {
            self.limits.read_timeout
        } else {
            Duration::from_secs(self.limits.keepalive_timeout_seconds)
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let read = if first {
                // A new connection's request is answered even while shutting
                // down: the client was accepted and is waiting.
                tokio::time::timeout_at(deadline, read_more(stream, buf)).await
            } else {
                // An idle keep-alive connection is closed at shutdown, and
                // when an upgrade hands the sockets to a new process.
                if *shutdown.borrow() || self.drain.handing_over() {
                    return false;
                }
                tokio::select! {
                    read = tokio::time::timeout_at(deadline, read_more(stream, buf)) => read,
                    _ = shutdown.changed() => return false,
                    () = self.drain.handed_over() => return false,
                }
            };
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return false;
            }
            Self::skip_empty_lines(buf);
            if !buf.is_empty() {
                return true;
            }
        }
    }

    /// Reads the rest of one request head and appends its answer to `out`.
    /// A `follow_on` request (one after others in the same batch) is not
    /// waited for: when its head is incomplete, the batch is sent first.
    async fn one_request<S: Conn>(
        &self,
        stream: &mut S,
        buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
        client: &mut Client,
        shutdown: &ShutdownWatch,
        follow_on: bool,
    ) -> Step {
        let started = Instant::now();
        // The rest of a head must come before this: a client trickling bytes
        // cannot hold the connection. Derived from `started`, so a request
        // that arrives whole reads the clock once.
        let deadline = tokio::time::Instant::from_std(started) + self.limits.read_timeout;
        let head_max = self.limits.request_headers_bytes_max + path::TARGET_LEN_MAX + 1024;
        loop {
            let (status, body) = match parse(buf) {
                Parsed::Request(request, consumed) => {
                    client.served += 1;
                    let mut next = request.next;
                    if request.has_body
                        || client.served >= self.limits.keepalive_requests_max
                        || *shutdown.borrow()
                        || self.drain.handing_over()
                    {
                        next = Next::Close;
                    }
                    let outcome = match self.respond(&request, client, next, out) {
                        Responded::Written(outcome) => outcome,
                        Responded::History(ask) => {
                            self.history_page(*ask, &request, next, out).await
                        }
                    };
                    self.metrics
                        .record(outcome, started.elapsed().as_nanos() as u64);
                    if next == Next::Close {
                        // Bytes the client sent that were not read (a body,
                        // requests after this one) would turn the close
                        // into a reset that can destroy the answer.
                        let unread = request.has_body || buf.len() > consumed;
                        if self.send(stream, out).await.is_ok() && unread {
                            linger(stream).await;
                        }
                        return Step::Closed;
                    }
                    return Step::Answered(consumed);
                }
                Parsed::Refuse(status, body) => (status, body),
                // A request line alone longer than any target is 414;
                // otherwise the headers are too large.
                Parsed::Partial if buf.len() >= head_max => {
                    if buf.windows(2).any(|w| w == b"\r\n") {
                        (431, BODY_HEADERS_TOO_LARGE)
                    } else {
                        (414, BODY_URI_TOO_LONG)
                    }
                }
                Parsed::Partial if follow_on => return Step::Incomplete,
                Parsed::Partial => {
                    match tokio::time::timeout_at(deadline, read_more(stream, buf)).await {
                        Ok(Ok(0) | Err(_)) => return Step::Closed,
                        Ok(Ok(_)) => continue,
                        Err(_) => (408, BODY_BAD_REQUEST),
                    }
                }
            };
            self.refuse(stream, out, status, body, started).await;
            return Step::Closed;
        }
    }

    /// Answers a request that cannot be served, after the answers already in
    /// `out`, and ends the connection.
    async fn refuse<S: Conn>(
        &self,
        stream: &mut S,
        out: &mut Vec<u8>,
        status: u16,
        body: &'static [u8],
        started: Instant,
    ) {
        let reply = plain(status, body, Outcome::BadRequest);
        write_response(out, &reply, false, Next::Close, false, SystemTime::now());
        self.metrics
            .record(reply.outcome, started.elapsed().as_nanos() as u64);
        if self.send(stream, out).await.is_ok() {
            // The rest of a refused request is never read.
            linger(stream).await;
        }
    }

    async fn send<S: Conn>(&self, stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.limits.write_timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

/// Longest a connection is held after its last answer to drain what the
/// client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and discarded while lingering.
const LINGER_BYTES_MAX: usize = 256 << 10;

/// Closes gracefully after a last answer when the client may have sent
/// bytes that were not read: shuts down writing (the client sees the end
/// of the answer), then reads and discards for a short while. Closing a
/// socket with unread bytes sends a reset, and a reset can reach the
/// client before it has read the answer.
async fn linger<S: Conn>(stream: &mut S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES_MAX {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

/// Most pipelined answers sent in one write.
const PIPELINE_ANSWERS_MAX: usize = 64;
/// Most bytes of pipelined answers gathered before they are written.
const PIPELINE_BYTES_MAX: usize = 64 * 1024;

/// The client of a connection.
#[derive(Debug, Clone, Copy)]
struct Client {
    peer: Option<IpAddr>,
    /// Whether the connection is TLS.
    secure: bool,
    /// Requests answered on the connection so far.
    served: u32,
}

/// Where one request left the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Answered into the batch; the connection goes on after these bytes
    /// of the buffer.
    Answered(usize),
    /// A follow-on request has not arrived whole: send the batch first.
    Incomplete,
    /// Answered and closed, or broken.
    Closed,
}

/// Reads what is available into the spare capacity of `buf`.
async fn read_more<S: Conn>(stream: &mut S, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    stream.read_buf(buf).await
}

/// The plain HTTP listener: the redirect application, shared with the
/// HTTPS listener (`tls.rs`).
#[derive(Debug)]
pub struct Plain(pub Arc<RedirectApp>);

#[async_trait]
impl ServerApp for Plain {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = peer_of(&stream);
        let mut stream = stream;
        self.0.serve(&mut stream, peer, false, shutdown).await;
        None
    }
}
