//! The redirect decision: from a method, a request target and a view of the
//! table to a [`Reply`], without I/O and without allocating for a redirect.

use http::Method;
use shortline_store::{LinkStatus, LinkView, RedirectStatus, Resolution};

use crate::metrics::Outcome;
use crate::pages;
use crate::path::{self, Route};

pub(crate) const BODY_REDIRECT: &[u8] = b"redirecting\n";
pub(crate) const BODY_NOT_FOUND: &[u8] = b"not found\n";
pub(crate) const BODY_GONE: &[u8] = b"this link is no longer available\n";
pub(crate) const BODY_BAD_REQUEST: &[u8] = b"bad request\n";
pub(crate) const BODY_METHOD: &[u8] = b"method not allowed\n";
pub(crate) const BODY_URI_TOO_LONG: &[u8] = b"request target too long\n";
pub(crate) const BODY_HEADERS_TOO_LARGE: &[u8] = b"request headers too large\n";
pub(crate) const BODY_HEALTH: &[u8] = b"ok\n";
pub(crate) const BODY_THROTTLED: &[u8] = b"too many unknown links; slow down\n";
pub(crate) const BODY_DAMAGED: &[u8] = b"this link cannot be read right now; try again\n";
const CACHE_TEMPORARY: &str = "private, no-store";
const CACHE_PERMANENT: &str = "public, max-age=86400";

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
pub(crate) fn static_length(len: usize) -> &'static str {
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
const _: () = assert!(BODY_DAMAGED.len() < 48);

pub(crate) fn plain(status: u16, body: &'static [u8], outcome: Outcome) -> Reply<'static> {
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
        // A lookup that read a damaged block of the snapshot finds nothing;
        // the link may well exist, so it is not a 404.
        if view.damage().is_some() {
            return plain(503, BODY_DAMAGED, Outcome::Unavailable);
        }
        return plain(404, BODY_NOT_FOUND, Outcome::NotFound);
    };
    if preview {
        return page(
            pages::preview_page(&link, now_unix_seconds),
            Outcome::Preview,
        );
    }
    match link.resolve(now_unix_seconds) {
        Resolution::Gone(_) => plain(410, BODY_GONE, Outcome::Gone),
        Resolution::Flagged => page(pages::flagged_page(), Outcome::Flagged),
        Resolution::Redirect => redirect(&link, query, location_buffer),
    }
}

/// An HTML page the proxy renders itself, never cached.
fn page<'a>(html: String, outcome: Outcome) -> Reply<'a> {
    Reply {
        status: 200,
        location: None,
        cache_control: "no-store",
        content_type: "text/html; charset=utf-8",
        body: Body::Page(html),
        outcome,
        click: None,
    }
}

/// The redirect of an active (or disabled-but-served) link, with the
/// request's query forwarded when the link asks for it.
#[inline]
fn redirect<'a>(
    link: &LinkView<'a>,
    query: Option<&[u8]>,
    location_buffer: &'a mut Vec<u8>,
) -> Reply<'a> {
    let target = link.target();
    if !path::header_safe(target) {
        // Refused at validation and when written; a snapshot that still
        // carries one is damaged, and the link is not served.
        return plain(410, BODY_GONE, Outcome::Gone);
    }
    let location: &[u8] = match query {
        Some(query) if link.forward_query => {
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
