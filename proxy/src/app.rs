//! The redirect listener: answers `GET`/`HEAD /{code}` from the live table.
//!
//! This sits on Pingora's [`ServerApp`], below its HTTP layer: Pingora accepts
//! connections, runs the workers and handles graceful upgrades, and this
//! module speaks HTTP/1.1 itself. A request head is parsed in place with
//! `httparse`, looked up without a lock or a copy, and the whole response is
//! assembled from preformatted bytes and the snapshot's target into one
//! reused buffer and written with one call.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::Method;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use shortline_store::{LinkStatus, LinkView, LiveTable, RedirectStatus, Resolution};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clicks::{ClickEvent, ClickRing};
use crate::drain::Drain;
use crate::guard::{EnumerationGuard, GuardSettings};
use crate::metrics::{Metrics, Outcome};
use crate::path::{self, Route};

const BODY_REDIRECT: &[u8] = b"redirecting\n";
const BODY_NOT_FOUND: &[u8] = b"not found\n";
const BODY_GONE: &[u8] = b"this link is no longer available\n";
const BODY_BAD_REQUEST: &[u8] = b"bad request\n";
const BODY_METHOD: &[u8] = b"method not allowed\n";
const BODY_URI_TOO_LONG: &[u8] = b"request target too long\n";
const BODY_HEADERS_TOO_LARGE: &[u8] = b"request headers too large\n";
const BODY_HEALTH: &[u8] = b"ok\n";
const BODY_THROTTLED: &[u8] = b"too many unknown links; slow down\n";
const CACHE_TEMPORARY: &str = "private, no-store";
const CACHE_PERMANENT: &str = "public, max-age=86400";

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

/// Seconds a throttled client is told to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RetryAfter(u64);

/// The redirect application.
#[derive(Debug)]
pub struct RedirectApp {
    table: Arc<LiveTable>,
    clicks: Arc<ClickRing>,
    metrics: Arc<Metrics>,
    limits: Limits,
    guard: EnumerationGuard,
    drain: Arc<Drain>,
}

/// What to send back, decided without I/O.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    pub status: u16,
    pub location: Option<&'a [u8]>,
    pub cache_control: &'static str,
    pub content_type: &'static str,
    pub body: Body,
    pub outcome: Outcome,
    /// The link to count a click for.
    pub click: Option<u64>,
}

/// A response body: static bytes, or a page made for this request.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    Static(&'static [u8]),
    Page(String),
}

/// Decimal strings for the lengths of the static bodies, so a redirect's
/// `Content-Length` is written without formatting a number.
fn static_length(len: usize) -> &'static str {
    const LENGTHS: [&str; 48] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
        "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
        "32", "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46",
        "47",
    ];
    LENGTHS[len]
}

// Every static body's length has an entry above.
const _: () =
    assert!(BODY_GONE.len() < 48 && BODY_REDIRECT.len() < 48 && BODY_URI_TOO_LONG.len() < 48);
const _: () = assert!(
    BODY_HEADERS_TOO_LARGE.len() < 48 && BODY_METHOD.len() < 48 && BODY_NOT_FOUND.len() < 48
);
const _: () =
    assert!(BODY_BAD_REQUEST.len() < 48 && BODY_HEALTH.len() < 48 && BODY_THROTTLED.len() < 48);

fn plain(status: u16, body: &'static [u8], outcome: Outcome) -> Reply<'static> {
    Reply {
        status,
        location: None,
        cache_control: "no-store",
        content_type: "text/plain; charset=utf-8",
        body: Body::Static(body),
        outcome,
        click: None,
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title></head><body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
         <h1>{title}</h1>{body_html}</body></html>\n"
    )
}

fn flagged_page() -> String {
    page(
        "Warning: this link has been flagged",
        "<p>This short link has been flagged as possibly harmful by the operator of this service, \
         so it is not followed. If you believe this is a mistake, contact the operator.</p>",
    )
}

fn preview_page(link: &LinkView<'_>, now: i64) -> String {
    let target = escape_html(&String::from_utf8_lossy(link.target()));
    let code = escape_html(&String::from_utf8_lossy(link.code()));
    let body = match link.resolve(now) {
        Resolution::Redirect => format!(
            "<p>The short link <code>{code}</code> leads to:</p><p><a href=\"{target}\" rel=\"noopener noreferrer nofollow\">{target}</a></p>"
        ),
        Resolution::Flagged => format!(
            "<p>The short link <code>{code}</code> has been flagged as possibly harmful; its target is not shown.</p>"
        ),
        Resolution::Gone(_) => format!(
            "<p>The short link <code>{code}</code> is no longer available. It led to:</p><p><code>{target}</code></p>"
        ),
    };
    page("Link preview", &body)
}

fn redirect_outcome(status: RedirectStatus) -> Outcome {
    match status {
        RedirectStatus::Moved => Outcome::Redirect301,
        RedirectStatus::Found => Outcome::Redirect302,
        RedirectStatus::Temporary => Outcome::Redirect307,
        RedirectStatus::Permanent => Outcome::Redirect308,
    }
}

/// Decides the answer to `method target` from a view of the table.
/// `location_buffer` is reused across requests on a worker thread for
/// forwarded query strings.
pub fn answer<'a>(
    view: &'a shortline_store::View,
    method: &Method,
    target: &'a [u8],
    now_unix_seconds: i64,
    location_buffer: &'a mut Vec<u8>,
) -> Reply<'a> {
    if method != Method::GET && method != Method::HEAD {
        return plain(405, BODY_METHOD, Outcome::MethodNotAllowed);
    }
    if target.len() > path::TARGET_LEN_MAX {
        return plain(414, BODY_URI_TOO_LONG, Outcome::BadRequest);
    }
    let (code, query, preview) = match path::parse(target) {
        Route::Code { code, query } => (code, query, false),
        Route::Preview { code } => (code, None, true),
        Route::Health => return plain(200, BODY_HEALTH, Outcome::Health),
        Route::Root | Route::NotACode => return plain(404, BODY_NOT_FOUND, Outcome::NotFound),
        Route::Invalid => return plain(400, BODY_BAD_REQUEST, Outcome::BadRequest),
    };
    let Some(link) = view.get(code) else {
        return plain(404, BODY_NOT_FOUND, Outcome::NotFound);
    };
    if preview {
        return Reply {
            status: 200,
            location: None,
            cache_control: "no-store",
            content_type: "text/html; charset=utf-8",
            body: Body::Page(preview_page(&link, now_unix_seconds)),
            outcome: Outcome::Preview,
            click: None,
        };
    }
    match link.resolve(now_unix_seconds) {
        Resolution::Gone(_) => plain(410, BODY_GONE, Outcome::Gone),
        Resolution::Flagged => Reply {
            status: 200,
            location: None,
            cache_control: "no-store",
            content_type: "text/html; charset=utf-8",
            body: Body::Page(flagged_page()),
            outcome: Outcome::Flagged,
            click: None,
        },
        Resolution::Redirect => {
            let target = link.target();
            if !path::header_safe(target) {
                // Refused at validation and when written; a snapshot that
                // still carries one is damaged, and the link is not served.
                return plain(410, BODY_GONE, Outcome::Gone);
            }
            let location: &[u8] = match query {
                Some(query) if link.forward_query && path::header_safe(query) => {
                    path::forward_query(target, query, location_buffer);
                    location_buffer
                }
                _ => target,
            };
            Reply {
                status: link.redirect.code(),
                location: Some(location),
                cache_control: if link.redirect.is_permanent() {
                    CACHE_PERMANENT
                } else {
                    CACHE_TEMPORARY
                },
                content_type: "text/plain; charset=utf-8",
                body: Body::Static(BODY_REDIRECT),
                outcome: redirect_outcome(link.redirect),
                click: (link.status == LinkStatus::Active).then_some(link.link_id.0),
            }
        }
    }
}

/// The address a trusted load balancer appended last to `X-Forwarded-For`.
fn forwarded_client(header: &[u8]) -> Option<IpAddr> {
    let last = header.rsplit(|&b| b == b',').next()?;
    std::str::from_utf8(last).ok()?.trim().parse().ok()
}

/// Most header lines read from one request.
const HEADERS_MAX: usize = 64;

fn reason(status: u16) -> &'static [u8] {
    match status {
        200 => b"200 OK",
        301 => b"301 Moved Permanently",
        302 => b"302 Found",
        307 => b"307 Temporary Redirect",
        308 => b"308 Permanent Redirect",
        400 => b"400 Bad Request",
        404 => b"404 Not Found",
        405 => b"405 Method Not Allowed",
        408 => b"408 Request Timeout",
        410 => b"410 Gone",
        414 => b"414 URI Too Long",
        429 => b"429 Too Many Requests",
        431 => b"431 Request Header Fields Too Large",
        _ => b"500 Internal Server Error",
    }
}

thread_local! {
    /// `Date` header value, formatted once per second per worker thread.
    static DATE: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((0, [b' '; 29])) };
}

fn push_date(out: &mut Vec<u8>, now: SystemTime) {
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, value)| {
        if *cached != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == value.len() {
                value.copy_from_slice(text.as_bytes());
                *cached = second;
            }
        }
        out.extend_from_slice(value);
    });
}

/// How the connection continues after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// Appends a whole response (head, and body unless `head_only`) to `out`.
fn write_response(
    out: &mut Vec<u8>,
    reply: &Reply<'_>,
    head_only: bool,
    next: Next,
    http10: bool,
    now: SystemTime,
) {
    write_response_with(out, reply, head_only, next, http10, now, None);
}

fn write_response_with(
    out: &mut Vec<u8>,
    reply: &Reply<'_>,
    head_only: bool,
    next: Next,
    http10: bool,
    now: SystemTime,
    retry_after: Option<RetryAfter>,
) {
    out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(reason(reply.status));
    out.extend_from_slice(b"\r\nDate: ");
    push_date(out, now);
    if let Some(location) = reply.location {
        out.extend_from_slice(b"\r\nLocation: ");
        out.extend_from_slice(location);
    }
    out.extend_from_slice(b"\r\nCache-Control: ");
    out.extend_from_slice(reply.cache_control.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(reply.content_type.as_bytes());
    let body: &[u8] = match &reply.body {
        Body::Static(bytes) => bytes,
        Body::Page(page) => page.as_bytes(),
    };
    out.extend_from_slice(b"\r\nContent-Length: ");
    if body.len() < 48 {
        out.extend_from_slice(static_length(body.len()).as_bytes());
    } else {
        out.extend_from_slice(body.len().to_string().as_bytes());
    }
    if reply.status == 405 {
        out.extend_from_slice(b"\r\nAllow: GET, HEAD");
    }
    if let Some(RetryAfter(seconds)) = retry_after {
        out.extend_from_slice(b"\r\nRetry-After: ");
        out.extend_from_slice(seconds.max(1).to_string().as_bytes());
    }
    match (next, http10) {
        (Next::Close, false) => out.extend_from_slice(b"\r\nConnection: close"),
        (Next::KeepAlive, true) => out.extend_from_slice(b"\r\nConnection: keep-alive"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// The parts of a parsed request the answer needs.
struct Request<'b> {
    method: Method,
    target: &'b [u8],
    http10: bool,
    next: Next,
    headers_bytes: usize,
    has_body: bool,
    referrer: &'b [u8],
    user_agent: &'b [u8],
    forwarded_for: &'b [u8],
}

/// What reading the next request head gave.
enum Parsed<'b> {
    Request(Request<'b>, usize),
    Partial,
    /// A request that cannot be answered normally: answer this and close.
    Refuse(u16, &'static [u8]),
}

fn parse(bytes: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refuse(431, BODY_HEADERS_TOO_LARGE),
        Err(_) => return Parsed::Refuse(400, BODY_BAD_REQUEST),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Parsed::Refuse(400, BODY_BAD_REQUEST);
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Refuse(400, BODY_BAD_REQUEST);
    };
    let http10 = version == 0;
    let mut parsed = Request {
        method,
        target: target.as_bytes(),
        http10,
        next: if http10 { Next::Close } else { Next::KeepAlive },
        headers_bytes: 0,
        has_body: false,
        referrer: b"",
        user_agent: b"",
        forwarded_for: b"",
    };
    for header in request.headers.iter() {
        parsed.headers_bytes += header.name.len() + header.value.len() + 4;
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    parsed.next = Next::Close;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    parsed.next = Next::KeepAlive;
                }
            }
        } else if name.eq_ignore_ascii_case(b"referer") {
            parsed.referrer = header.value;
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            parsed.user_agent = header.value;
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            parsed.forwarded_for = header.value;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || (name.eq_ignore_ascii_case(b"content-length") && header.value.trim_ascii() != b"0")
        {
            // Redirects take no body; rather than read one, close after answering.
            parsed.has_body = true;
        }
    }
    Parsed::Request(parsed, consumed)
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
        }
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
        self.clicks.push(ClickEvent::new(
            link_id,
            at_unix_ms,
            request.method == Method::HEAD,
            forwarded.or(peer),
            request.referrer,
            request.user_agent,
        ));
    }

    /// Answers one parsed request into `out`; no I/O.
    fn respond(
        &self,
        request: &Request<'_>,
        peer: Option<IpAddr>,
        next: Next,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let now = SystemTime::now();
        let now_unix = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let client = if self.limits.trust_forwarded_for {
            forwarded_client(request.forwarded_for).or(peer)
        } else {
            peer
        };
        let now_secs = u64::try_from(now_unix).unwrap_or(0);
        if let Some(wait) = client.and_then(|ip| self.guard.check(ip, now_secs)) {
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
            return reply.outcome;
        }
        let view = self.table.load();
        // `answer` never awaits, so the thread's buffer is never borrowed twice.
        LOCATION_BUFFER.with_borrow_mut(|location_buffer| {
            let reply = if request.headers_bytes > self.limits.request_headers_bytes_max {
                plain(431, BODY_HEADERS_TOO_LARGE, Outcome::BadRequest)
            } else {
                answer(
                    &view,
                    &request.method,
                    request.target,
                    now_unix,
                    location_buffer,
                )
            };
            if reply.outcome == Outcome::NotFound
                && let Some(ip) = client
                && self.guard.record_miss(ip, now_secs)
            {
                self.metrics
                    .clients_throttled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(link_id) = reply.click
                && self.limits.click_capture
            {
                self.capture_click(request, peer, link_id, now);
            }
            write_response(
                out,
                &reply,
                request.method == Method::HEAD,
                next,
                request.http10,
                now,
            );
            reply.outcome
        })
    }

    /// Serves one connection: HTTP/1.1 keep-alive and pipelining, HTTP/1.0,
    /// bounded heads, per-request read deadlines and an idle timeout.
    async fn serve(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let _open = self.drain.connection();
        let peer: Option<IpAddr> = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let head_max = self.limits.request_headers_bytes_max + path::TARGET_LEN_MAX + 1024;
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let mut shutdown = shutdown.clone();
        let mut served: u32 = 0;
        let idle = Duration::from_secs(self.limits.keepalive_timeout_seconds);
        loop {
            // Wait for the first bytes of the next request, unless pipelined
            // bytes are already here.
            if buf.is_empty() {
                let read = if served == 0 {
                    // A new connection's request is answered even while
                    // shutting down: the client was accepted and is waiting.
                    tokio::time::timeout(self.limits.read_timeout, read_more(&mut stream, &mut buf))
                        .await
                } else {
                    // An idle keep-alive connection is closed at shutdown.
                    if *shutdown.borrow() {
                        return;
                    }
                    tokio::select! {
                        read = tokio::time::timeout(idle, read_more(&mut stream, &mut buf)) => read,
                        _ = shutdown.changed() => return,
                    }
                };
                match read {
                    Ok(Ok(0) | Err(_)) | Err(_) => return,
                    Ok(Ok(_)) => {}
                }
            }
            let started = Instant::now();
            // The rest of a head must come before this: a client trickling
            // bytes cannot hold the connection. Derived from `started`, so a
            // request that arrives whole reads the clock once.
            let deadline = tokio::time::Instant::from_std(started) + self.limits.read_timeout;
            let consumed = loop {
                match parse(&buf) {
                    Parsed::Request(request, consumed) => {
                        served += 1;
                        let mut next = request.next;
                        if request.has_body
                            || served >= self.limits.keepalive_requests_max
                            || *shutdown.borrow()
                        {
                            next = Next::Close;
                        }
                        out.clear();
                        let outcome = self.respond(&request, peer, next, &mut out);
                        self.metrics
                            .record(outcome, started.elapsed().as_nanos() as u64);
                        if next == Next::Close {
                            let _ = self.send(&mut stream, &out).await;
                            return;
                        }
                        break consumed;
                    }
                    Parsed::Refuse(status, body) => {
                        return self
                            .refuse(&mut stream, &mut out, status, body, started)
                            .await;
                    }
                    Parsed::Partial if buf.len() >= head_max => {
                        // A request line alone longer than any target is 414;
                        // otherwise the headers are too large.
                        let (status, body) = if buf.windows(2).any(|w| w == b"\r\n") {
                            (431, BODY_HEADERS_TOO_LARGE)
                        } else {
                            (414, BODY_URI_TOO_LONG)
                        };
                        return self
                            .refuse(&mut stream, &mut out, status, body, started)
                            .await;
                    }
                    Parsed::Partial => {
                        match tokio::time::timeout_at(deadline, read_more(&mut stream, &mut buf))
                            .await
                        {
                            Ok(Ok(0) | Err(_)) => return,
                            Ok(Ok(_)) => {}
                            Err(_) => {
                                return self
                                    .refuse(&mut stream, &mut out, 408, BODY_BAD_REQUEST, started)
                                    .await;
                            }
                        }
                    }
                }
            };
            if self.send(&mut stream, &out).await.is_err() {
                return;
            }
            buf.drain(..consumed);
        }
    }

    /// Answers a request that cannot be served and ends the connection.
    async fn refuse(
        &self,
        stream: &mut Stream,
        out: &mut Vec<u8>,
        status: u16,
        body: &'static [u8],
        started: Instant,
    ) {
        out.clear();
        let reply = plain(status, body, Outcome::BadRequest);
        write_response(out, &reply, false, Next::Close, false, SystemTime::now());
        self.metrics
            .record(reply.outcome, started.elapsed().as_nanos() as u64);
        let _ = self.send(stream, out).await;
    }

    async fn send(&self, stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
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

/// Reads what is available into the spare capacity of `buf`.
async fn read_more(stream: &mut Stream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    stream.read_buf(buf).await
}

#[async_trait]
impl ServerApp for RedirectApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.serve(stream, shutdown).await;
        None
    }
}
