//! The redirect listener: answers `GET`/`HEAD /{code}` from the live table.
//!
//! This sits on Pingora's [`HttpServerApp`], below `ServeHttp`: the request is
//! parsed by Pingora, looked up without a lock or a copy, and the response
//! header is written straight from the snapshot's bytes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, header};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use shortline_store::{LinkStatus, LinkView, LiveTable, RedirectStatus, Resolution};

use crate::clicks::{ClickEvent, ClickRing};
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

/// The redirect application.
#[derive(Debug)]
pub struct RedirectApp {
    table: Arc<LiveTable>,
    clicks: Arc<ClickRing>,
    metrics: Arc<Metrics>,
    limits: Limits,
    options: HttpServerOptions,
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

impl Body {
    fn into_bytes(self) -> Bytes {
        match self {
            Self::Static(b) => Bytes::from_static(b),
            Self::Page(p) => Bytes::from(p),
        }
    }
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
const _: () = assert!(BODY_BAD_REQUEST.len() < 48 && BODY_HEALTH.len() < 48);

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
        "<p>This short link was reported or matched a list of harmful sites, so it is not followed. \
         If you believe this is a mistake, contact the operator of this service.</p>",
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
        Route::Root => return plain(404, BODY_NOT_FOUND, Outcome::NotFound),
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

impl RedirectApp {
    #[must_use]
    pub fn new(
        table: Arc<LiveTable>,
        clicks: Arc<ClickRing>,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Self {
        let mut options = HttpServerOptions::default();
        options.keepalive_request_limit = Some(limits.keepalive_requests_max);
        Self {
            table,
            clicks,
            metrics,
            limits,
            options,
        }
    }

    fn capture_click(&self, http: &ServerSession, link_id: u64, head: bool, now: SystemTime) {
        let at_unix_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let forwarded = if self.limits.trust_forwarded_for {
            forwarded_client(http.get_header_bytes("x-forwarded-for"))
        } else {
            None
        };
        let client: Option<IpAddr> =
            forwarded.or_else(|| http.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let referrer = http.get_header_bytes(header::REFERER);
        let user_agent = http.get_header_bytes(header::USER_AGENT);
        self.clicks.push(ClickEvent::new(
            link_id, at_unix_ms, head, client, referrer, user_agent,
        ));
    }

    /// Decides the answer and builds the response header; no I/O.
    fn prepare(
        &self,
        http: &ServerSession,
    ) -> pingora::Result<(ResponseHeader, Option<Bytes>, Outcome)> {
        // `prepare_with` never awaits, so the thread's buffer cannot be
        // borrowed twice; reusing it keeps forwarded queries allocation-free.
        LOCATION_BUFFER.with_borrow_mut(|buffer| self.prepare_with(http, buffer))
    }

    fn prepare_with(
        &self,
        http: &ServerSession,
        location_buffer: &mut Vec<u8>,
    ) -> pingora::Result<(ResponseHeader, Option<Bytes>, Outcome)> {
        let now = SystemTime::now();
        let now_unix = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let request = http.req_header();
        let head = request.method == Method::HEAD;
        let view = self.table.load();
        let headers_bytes: usize = request
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        let reply = if headers_bytes > self.limits.request_headers_bytes_max {
            plain(431, BODY_HEADERS_TOO_LARGE, Outcome::BadRequest)
        } else {
            answer(
                &view,
                &request.method,
                request.raw_path(),
                now_unix,
                location_buffer,
            )
        };
        if let Some(link_id) = reply.click
            && self.limits.click_capture
        {
            self.capture_click(http, link_id, head, now);
        }
        let mut response = ResponseHeader::build(reply.status, Some(5))?;
        if let Some(location) = reply.location {
            let value = HeaderValue::from_bytes(location).map_err(|_| {
                pingora::Error::explain(
                    pingora::ErrorType::InternalError,
                    "location is not a header value",
                )
            })?;
            response.insert_header(header::LOCATION, value)?;
        }
        // Static header values are shared, not copied.
        response.insert_header(
            header::CACHE_CONTROL,
            HeaderValue::from_static(reply.cache_control),
        )?;
        response.insert_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static(reply.content_type),
        )?;
        let length = match &reply.body {
            Body::Static(bytes) => HeaderValue::from_static(static_length(bytes.len())),
            Body::Page(page) => HeaderValue::from(page.len()),
        };
        response.insert_header(header::CONTENT_LENGTH, length)?;
        if reply.status == 405 {
            response.insert_header(header::ALLOW, HeaderValue::from_static("GET, HEAD"))?;
        }
        let body = (!head).then(|| reply.body.into_bytes());
        Ok((response, body, reply.outcome))
    }

    async fn respond(&self, http: &mut ServerSession, started: Instant) -> pingora::Result<()> {
        let (response, body, outcome) = self.prepare(http)?;
        http.write_response_header(Box::new(response)).await?;
        if let Some(body) = body {
            http.write_response_body(body, true).await?;
        }
        self.metrics
            .record(outcome, started.elapsed().as_nanos() as u64);
        Ok(())
    }
}

#[async_trait]
impl HttpServerApp for RedirectApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        http.set_read_timeout(Some(self.limits.read_timeout));
        http.set_write_timeout(Some(self.limits.write_timeout));
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "bad or incomplete request");
                return None;
            }
        }
        let started = Instant::now();
        if *shutdown.borrow() {
            http.set_keepalive(None);
        } else {
            http.set_keepalive(Some(self.limits.keepalive_timeout_seconds));
        }
        if let Err(e) = self.respond(&mut http, started).await {
            tracing::debug!(error = %e, "cannot write the response");
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}
