//! The redirect decision: from a method, a request target, the `Host` and a
//! view of the table to a [`Reply`], without I/O and without allocating for
//! a redirect.
//!
//! The `Host` picks the short domain: its settings are a record of the
//! table (`.name`, see [`shortline_store::domain`]), found with the same
//! lookup as a code, and a code on a scoped domain is looked up as
//! `name/code`, assembled on the stack.

use http::Method;
use shortline_store::domain::{DEFAULT_KEY, DomainSettings};
use shortline_store::{
    DOMAIN_LEN_MAX, KEY_LEN_MAX, LinkStatus, LinkView, RedirectStatus, Resolution,
};

use crate::history::HistoryAsk;
use crate::metrics::Outcome;
use crate::pages;
use crate::path::{self, Route};
use crate::targeting::{self, Headers};

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
pub(crate) const BODY_MISDIRECTED: &[u8] = b"no short links are served for this host\n";
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
    /// `max-age` of a `Strict-Transport-Security` header; 0 sends none.
    pub hsts_max_age: u64,
    /// A number to give the client in the visitor cookie
    /// ([`crate::targeting::VISITOR_COOKIE`]): a sticky split placed it.
    pub visitor: Option<u32>,
    /// Where a link with rules or a split sent the click, for analytics
    /// ([`shortline_store::routing::route_code`]); 0 for a plain link.
    pub route: u8,
}

/// A response body: static bytes, or a page made for this request.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    Static(&'static [u8]),
    Page(String),
    /// A link's whole destination history, which only control holds: the
    /// connection fetches it ([`crate::history`]) and answers with it, or
    /// with the preview page this carries when it cannot.
    History(Box<HistoryAsk>),
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
const _: () = assert!(BODY_DAMAGED.len() < 48 && BODY_MISDIRECTED.len() < 48);

pub(crate) fn plain(status: u16, body: &'static [u8], outcome: Outcome) -> Reply<'static> {
    Reply {
        status,
        location: None,
        cache_control: "no-store",
        content_type: "text/plain; charset=utf-8",
        body: Body::Static(body),
        outcome,
        click: None,
        hsts_max_age: 0,
        visitor: None,
        route: 0,
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

/// What a request for a host that is not a short domain gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownHost {
    /// Served as the default domain: one-domain deployments answer behind
    /// any name or address, as before domains existed.
    #[default]
    Default,
    /// 421 Misdirected Request.
    Misdirected,
}

/// A request, as the answer needs it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'r> {
    pub method: &'r Method,
    pub target: &'r [u8],
    /// The `Host` header, as sent (empty when absent).
    pub host: &'r [u8],
    /// Whether it came over TLS.
    pub secure: bool,
    /// What targeting rules may look at.
    pub headers: Headers<'r>,
}

/// Decides the answer to `method target` from a view of the table, for
/// the default domain. `location_buffer` is reused across requests on a
/// worker thread for forwarded query strings.
pub fn answer<'a>(
    view: &'a shortline_store::View,
    method: &Method,
    target: &[u8],
    now_unix_seconds: i64,
    location_buffer: &'a mut Vec<u8>,
) -> Reply<'a> {
    let ask = Ask {
        method,
        target,
        host: b"",
        secure: false,
        headers: Headers::default(),
    };
    answer_for(
        view,
        &ask,
        UnknownHost::Default,
        now_unix_seconds,
        location_buffer,
    )
}

/// The name a `Host` header asks for, as `.name` (a domain record's key):
/// lowercased, without port or trailing dot. `None` when it cannot be a
/// short domain (absent, too long, an IPv6 literal).
fn host_key<'b>(host: &[u8], buffer: &'b mut [u8; DOMAIN_LEN_MAX + 1]) -> Option<&'b [u8]> {
    let host = host.trim_ascii();
    if host.first() == Some(&b'[') {
        return None;
    }
    let name = match host.iter().rposition(|&b| b == b':') {
        Some(at) => &host[..at],
        None => host,
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > DOMAIN_LEN_MAX {
        return None;
    }
    buffer[0] = b'.';
    for (slot, byte) in buffer[1..].iter_mut().zip(name) {
        *slot = byte.to_ascii_lowercase();
    }
    Some(&buffer[..=name.len()])
}

/// The settings of the domain `host` names, or what stands for an unknown
/// host: `Err` is the 421.
fn domain_for<'a>(
    view: &'a shortline_store::View,
    host: &[u8],
    unknown: UnknownHost,
) -> Result<Option<DomainSettings<'a>>, ()> {
    let mut buffer = [0u8; DOMAIN_LEN_MAX + 1];
    let known = host_key(host, &mut buffer)
        .and_then(|key| view.get(key))
        .filter(|record| record.status == LinkStatus::Active);
    if let Some(record) = known {
        return Ok(DomainSettings::parse(record.target()));
    }
    match unknown {
        UnknownHost::Default => Ok(view
            .get(DEFAULT_KEY.as_bytes())
            .and_then(|record| DomainSettings::parse(record.target()))),
        UnknownHost::Misdirected => Err(()),
    }
}

/// A redirect a domain's settings make (to its root page, its not-found
/// page, its expired page), never counted as a click.
fn domain_redirect(location: &str, outcome: Outcome) -> Reply<'_> {
    if !path::header_safe(location.as_bytes()) {
        return plain(404, BODY_NOT_FOUND, Outcome::NotFound);
    }
    Reply {
        status: 302,
        location: Some(location.as_bytes()),
        cache_control: CACHE_TEMPORARY,
        content_type: "text/plain; charset=utf-8",
        body: Body::Static(BODY_REDIRECT),
        outcome,
        click: None,
        hsts_max_age: 0,
        visitor: None,
        route: 0,
    }
}

/// Decides the answer to a request from a view of the table: the domain
/// its `Host` names (or `unknown`'s stand-in), then the code on it.
pub fn answer_for<'a>(
    view: &'a shortline_store::View,
    ask: &Ask<'_>,
    unknown: UnknownHost,
    now_unix_seconds: i64,
    location_buffer: &'a mut Vec<u8>,
) -> Reply<'a> {
    let method = ask.method;
    let target = ask.target;
    if method != Method::GET && method != Method::HEAD {
        return plain(405, BODY_METHOD, Outcome::MethodNotAllowed);
    }
    if target.len() > path::TARGET_LEN_MAX {
        return plain(414, BODY_URI_TOO_LONG, Outcome::BadRequest);
    }
    let route = path::parse(target);
    match route {
        Route::Health => return plain(200, BODY_HEALTH, Outcome::Health),
        Route::Invalid => return plain(400, BODY_BAD_REQUEST, Outcome::BadRequest),
        // Answered for any host and over plain HTTP: the ACME server asks
        // for a name before it is served, and on port 80.
        Route::AcmeChallenge { token } => return challenge(view, token),
        _ => {}
    }
    // Only an absolute-form target names its host; an origin-form one (the
    // usual `/code`) is not scanned again.
    let host = match target.first() {
        Some(b'/') => ask.host,
        _ => path::authority(target).unwrap_or(ask.host),
    };
    let Ok(domain) = domain_for(view, host, unknown) else {
        return plain(421, BODY_MISDIRECTED, Outcome::Misdirected);
    };
    let domain = domain.unwrap_or(BARE);
    if domain.https_redirect && !ask.secure {
        return to_https(domain.name, target, location_buffer);
    }
    let mut reply = on_domain(view, route, &domain, ask, now_unix_seconds, location_buffer);
    if ask.secure {
        reply.hsts_max_age = domain.hsts_max_age;
    }
    reply
}

/// The key authorization for an ACME HTTP-01 challenge token (RFC 8555,
/// 8.3), from its `~token` record.
fn challenge<'a>(view: &'a shortline_store::View, token: &[u8]) -> Reply<'a> {
    let mut key = [0u8; 1 + shortline_store::CODE_LEN_MAX];
    key[0] = b'~';
    key[1..=token.len()].copy_from_slice(token);
    match view.get(&key[..=token.len()]) {
        Some(record) if path::header_safe(record.target()) => Reply {
            status: 200,
            location: None,
            cache_control: "no-store",
            content_type: "text/plain; charset=utf-8",
            body: Body::Page(String::from_utf8_lossy(record.target()).into_owned()),
            outcome: Outcome::AcmeChallenge,
            click: None,
            hsts_max_age: 0,
            visitor: None,
            route: 0,
        },
        _ => plain(404, BODY_NOT_FOUND, Outcome::NotFound),
    }
}

/// The domain of a table without domain records: bare codes, built-in pages.
const BARE: DomainSettings<'static> = DomainSettings {
    name: "",
    scoped: false,
    https_redirect: false,
    hsts_max_age: 0,
    root: None,
    not_found: None,
    expired: None,
};

/// `301` to the same path over HTTPS on the domain's own name.
fn to_https<'a>(name: &str, target: &[u8], location_buffer: &'a mut Vec<u8>) -> Reply<'a> {
    let path = path::origin_form(target);
    if !path::header_safe(path) {
        return plain(400, BODY_BAD_REQUEST, Outcome::BadRequest);
    }
    location_buffer.clear();
    location_buffer.extend_from_slice(b"https://");
    location_buffer.extend_from_slice(name.as_bytes());
    location_buffer.extend_from_slice(path);
    Reply {
        status: 301,
        location: Some(location_buffer),
        cache_control: CACHE_PERMANENT,
        content_type: "text/plain; charset=utf-8",
        body: Body::Static(BODY_REDIRECT),
        outcome: Outcome::HttpsRedirect,
        click: None,
        hsts_max_age: 0,
        visitor: None,
        route: 0,
    }
}

/// The answer to `route` on one domain.
fn on_domain<'a>(
    view: &'a shortline_store::View,
    route: Route<'_>,
    domain: &DomainSettings<'a>,
    ask: &Ask<'_>,
    now_unix_seconds: i64,
    location_buffer: &'a mut Vec<u8>,
) -> Reply<'a> {
    let not_found = || match domain.not_found {
        Some(location) => domain_redirect(location, Outcome::NotFoundRedirect),
        None => plain(404, BODY_NOT_FOUND, Outcome::NotFound),
    };
    let (code, query, preview, history) = match route {
        Route::Code { code, query } => (code, query, false, None),
        Route::Preview { code, history } => (code, None, true, history),
        Route::Root => {
            return match domain.root {
                Some(location) => domain_redirect(location, Outcome::RootRedirect),
                None => plain(404, BODY_NOT_FOUND, Outcome::NotFound),
            };
        }
        Route::NotACode => return not_found(),
        Route::Health | Route::Invalid | Route::AcmeChallenge { .. } => {
            unreachable!("answered before the domain")
        }
    };
    let mut key_buffer = [0u8; KEY_LEN_MAX];
    let key = if domain.scoped {
        let name = domain.name.as_bytes();
        let len = name.len() + 1 + code.len();
        key_buffer[..name.len()].copy_from_slice(name);
        key_buffer[name.len()] = b'/';
        key_buffer[name.len() + 1..len].copy_from_slice(code);
        &key_buffer[..len]
    } else {
        code
    };
    let Some(link) = view.get(key) else {
        // A lookup that read a damaged block of the snapshot finds nothing;
        // the link may well exist, so it is not a 404.
        if view.damage().is_some() {
            return plain(503, BODY_DAMAGED, Outcome::Unavailable);
        }
        return not_found();
    };
    if preview {
        let html = pages::preview_page(&link, domain.name, code, ask.secure, now_unix_seconds);
        let resolution = link.resolve(now_unix_seconds);
        // A flagged link's targets stay hidden, its history's included.
        let shows_targets = !matches!(resolution, Resolution::Flagged);
        return match history {
            Some(after) if shows_targets => {
                let mut reply = page(String::new(), Outcome::Preview);
                reply.body = Body::History(Box::new(HistoryAsk {
                    domain: domain.name.to_owned(),
                    code: String::from_utf8_lossy(code).into_owned(),
                    after,
                    short_name: pages::short_name(domain.name, code),
                    gone: matches!(resolution, Resolution::Gone(_)),
                    preview: html,
                }));
                reply
            }
            _ => page(html, Outcome::Preview),
        };
    }
    match link.resolve(now_unix_seconds) {
        Resolution::Gone(_) => match domain.expired {
            Some(location) => domain_redirect(location, Outcome::GoneRedirect),
            None => plain(410, BODY_GONE, Outcome::Gone),
        },
        Resolution::Flagged => page(pages::flagged_page(domain.name, code), Outcome::Flagged),
        Resolution::Redirect => redirect(&link, query, ask, now_unix_seconds, location_buffer),
    }
}

/// An HTML page the proxy renders itself, never cached.
pub(crate) fn page<'a>(html: String, outcome: Outcome) -> Reply<'a> {
    Reply {
        status: 200,
        location: None,
        cache_control: "no-store",
        content_type: "text/html; charset=utf-8",
        body: Body::Page(html),
        outcome,
        click: None,
        hsts_max_age: 0,
        visitor: None,
        route: 0,
    }
}

/// The redirect of an active (or disabled-but-served) link, with the
/// request's query forwarded when the link asks for it. A link with
/// targeting rules or a split goes where they send this client; a link
/// without them reads nothing more.
#[inline]
fn redirect<'a>(
    link: &LinkView<'a>,
    query: Option<&[u8]>,
    ask: &Ask<'_>,
    now_unix_seconds: i64,
    location_buffer: &'a mut Vec<u8>,
) -> Reply<'a> {
    let mut target = link.target();
    let mut visitor = None;
    let mut route = 0;
    let mut cache_control = if link.redirect.is_permanent() {
        CACHE_PERMANENT
    } else {
        CACHE_TEMPORARY
    };
    if let Some(encoded) = link.routing {
        let (routed, give) = targeting::route(
            encoded,
            link.link_id.0,
            &ask.headers,
            query.unwrap_or_default(),
            now_unix_seconds,
        );
        if let Some(routed) = &routed {
            target = routed.target;
        }
        route = shortline_store::routing::route_code(routed.as_ref());
        visitor = give;
        // Where it goes depends on the client and the moment: no cache
        // may keep it, whatever the status.
        cache_control = CACHE_TEMPORARY;
    }
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
        cache_control,
        content_type: "text/plain; charset=utf-8",
        body: Body::Static(BODY_REDIRECT),
        outcome: redirect_outcome(link.redirect),
        click: (link.status == LinkStatus::Active).then_some(link.link_id.0),
        hsts_max_age: 0,
        visitor,
        route,
    }
}

#[cfg(test)]
mod tests {
    use shortline_store::domain::settings_key;
    use shortline_store::{Code, LinkId, LinkRecord, LiveTable, Seq, Snapshot, Target};

    use super::*;

    fn record(key: &str, target: &str) -> LinkRecord {
        LinkRecord::new(
            Code::key(key).unwrap(),
            Target::parse(target).unwrap(),
            LinkId(1),
        )
    }

    fn settings(name: &'static str, scoped: bool, root: Option<&'static str>) -> String {
        DomainSettings {
            name,
            scoped,
            https_redirect: false,
            hsts_max_age: 0,
            root,
            not_found: None,
            expired: None,
        }
        .encode()
    }

    fn table() -> (tempfile::TempDir, LiveTable) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.snap");
        let home = settings("home.test", false, Some("https://home.example/"));
        let records = [
            record("abc", "https://example.com/home"),
            record("go.test/abc", "https://example.com/go"),
            record(
                settings_key("go.test").unwrap().as_str(),
                &settings("go.test", true, None),
            ),
            record(settings_key("home.test").unwrap().as_str(), &home),
            record(DEFAULT_KEY, &home),
            record("~tok-123", "tok-123.thumbprint"),
        ];
        shortline_store::write_snapshot(&path, Seq(1), records.iter()).unwrap();
        let table = LiveTable::new(Snapshot::open(&path).unwrap());
        (dir, table)
    }

    fn location(
        table: &LiveTable,
        host: &[u8],
        target: &[u8],
        unknown: UnknownHost,
    ) -> (u16, Option<Vec<u8>>) {
        let view = table.load();
        let mut buffer = Vec::new();
        let ask = Ask {
            method: &Method::GET,
            target,
            host,
            secure: false,
            headers: Headers::default(),
        };
        let reply = answer_for(&view, &ask, unknown, 0, &mut buffer);
        (reply.status, reply.location.map(<[u8]>::to_vec))
    }

    #[test]
    fn the_host_picks_the_domain_and_its_codes() {
        let (_dir, table) = table();
        let to = |url: &str| Some(url.as_bytes().to_vec());
        let strict = UnknownHost::Misdirected;
        for host in [
            &b"go.test"[..],
            b"GO.Test",
            b"go.test.",
            b"go.test:8080",
            b" go.test ",
        ] {
            assert_eq!(
                location(&table, host, b"/abc", strict),
                (302, to("https://example.com/go")),
                "{host:?}"
            );
        }
        assert_eq!(
            location(&table, b"home.test", b"/abc", strict),
            (302, to("https://example.com/home"))
        );
        assert_eq!(
            location(&table, b"home.test", b"/", strict),
            (302, to("https://home.example/"))
        );
        assert_eq!(location(&table, b"go.test", b"/", strict), (404, None));
        // The absolute form's authority stands over the Host header.
        assert_eq!(
            location(&table, b"home.test", b"http://go.test/abc", strict),
            (302, to("https://example.com/go"))
        );
        for unknown in [&b"other.test"[..], b"", b"[::1]:8080", b"127.0.0.1"] {
            assert_eq!(
                location(&table, unknown, b"/abc", strict),
                (421, None),
                "{unknown:?}"
            );
            assert_eq!(
                location(&table, unknown, b"/abc", UnknownHost::Default),
                (302, to("https://example.com/home")),
                "{unknown:?} as the default domain"
            );
        }
        // ACME challenges are answered for any host, known or not.
        let view = table.load();
        let mut buffer = Vec::new();
        for host in [&b"other.test"[..], b"go.test"] {
            let ask = Ask {
                method: &Method::GET,
                target: b"/.well-known/acme-challenge/tok-123",
                host,
                secure: false,
                headers: Headers::default(),
            };
            let reply = answer_for(&view, &ask, strict, 0, &mut buffer);
            assert_eq!(
                (reply.status, reply.body),
                (200, Body::Page("tok-123.thumbprint".into()))
            );
        }
        assert_eq!(
            location(
                &table,
                b"go.test",
                b"/.well-known/acme-challenge/nope",
                strict
            ),
            (404, None)
        );
        assert_eq!(
            location(&table, b"go.test", b"/~tok-123", strict),
            (404, None)
        );
        // A key is never reachable as a code: `/` and `.` are not in codes.
        assert_eq!(
            location(&table, b"home.test", b"/go.test/abc", strict),
            (404, None)
        );
        assert_eq!(
            location(&table, b"home.test", b"/.go.test", strict),
            (404, None)
        );
    }
}
