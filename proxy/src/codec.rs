//! HTTP/1.1 on the redirect listener, byte by byte: a request head parsed in
//! place (`httparse`), and a whole response assembled into one buffer from
//! preformatted bytes, a `Date` cached per second and the reply's bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use http::Method;

use crate::answer::{BODY_BAD_REQUEST, BODY_HEADERS_TOO_LARGE, Body, Reply, static_length};

/// Seconds a throttled client is told to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryAfter(pub(crate) u64);

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
        421 => b"421 Misdirected Request",
        414 => b"414 URI Too Long",
        429 => b"429 Too Many Requests",
        431 => b"431 Request Header Fields Too Large",
        503 => b"503 Service Unavailable",
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
pub(crate) enum Next {
    KeepAlive,
    Close,
}

/// Appends a whole response (head, and body unless `head_only`) to `out`.
pub(crate) fn write_response(
    out: &mut Vec<u8>,
    reply: &Reply<'_>,
    head_only: bool,
    next: Next,
    http10: bool,
    now: SystemTime,
) {
    write_response_with(out, reply, head_only, next, http10, now, None);
}

pub(crate) fn write_response_with(
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
        Body::History(ask) => ask.preview.as_bytes(),
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
    if reply.hsts_max_age > 0 {
        out.extend_from_slice(b"\r\nStrict-Transport-Security: max-age=");
        out.extend_from_slice(itoa::Buffer::new().format(reply.hsts_max_age).as_bytes());
    }
    if let Some(visitor) = reply.visitor {
        out.extend_from_slice(b"\r\nSet-Cookie: ");
        out.extend_from_slice(crate::targeting::VISITOR_COOKIE.as_bytes());
        out.push(b'=');
        out.extend_from_slice(itoa::Buffer::new().format(visitor).as_bytes());
        out.extend_from_slice(b"; Max-Age=31536000; Path=/; SameSite=Lax; HttpOnly");
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
pub(crate) struct Request<'b> {
    pub(crate) method: Method,
    pub(crate) target: &'b [u8],
    pub(crate) http10: bool,
    pub(crate) next: Next,
    pub(crate) headers_bytes: usize,
    pub(crate) has_body: bool,
    pub(crate) referrer: &'b [u8],
    pub(crate) user_agent: &'b [u8],
    pub(crate) forwarded_for: &'b [u8],
    pub(crate) accept_language: &'b [u8],
    pub(crate) cookie: &'b [u8],
    /// The `Host` header (empty when absent, as HTTP/1.0 allows).
    pub(crate) host: &'b [u8],
}

/// What reading the next request head gave.
pub(crate) enum Parsed<'b> {
    Request(Request<'b>, usize),
    Partial,
    /// A request that cannot be answered normally: answer this and close.
    Refuse(u16, &'static [u8]),
}

pub(crate) fn parse(bytes: &[u8]) -> Parsed<'_> {
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
        accept_language: b"",
        cookie: b"",
        host: b"",
    };
    let mut hosts = 0u32;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for header in request.headers.iter() {
        parsed.headers_bytes += header.name.len() + header.value.len() + 4;
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            parsed.host = header.value;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // One length, or a list of the same one (RFC 9112, 6.3); any
            // other value leaves the message's framing unknown.
            match (content_length_value(header.value), content_length) {
                (Some(length), None) => content_length = Some(length),
                (Some(length), Some(seen)) if length == seen => {}
                _ => return Parsed::Refuse(400, BODY_BAD_REQUEST),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
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
        } else if name.eq_ignore_ascii_case(b"accept-language") {
            parsed.accept_language = header.value;
        } else if name.eq_ignore_ascii_case(b"cookie") {
            parsed.cookie = header.value;
        }
    }
    // HTTP/1.1 needs exactly one Host (RFC 9112, 3.2); none at all is
    // allowed only in HTTP/1.0.
    if hosts > 1 || (hosts == 0 && !http10) {
        return Parsed::Refuse(400, BODY_BAD_REQUEST);
    }
    // Both framings at once is how requests are smuggled (RFC 9112, 6.1).
    if chunked && content_length.is_some() {
        return Parsed::Refuse(400, BODY_BAD_REQUEST);
    }
    // Redirects take no body; rather than read one, close after answering.
    parsed.has_body = chunked || content_length.is_some_and(|n| n > 0);
    Parsed::Request(parsed, consumed)
}

/// A `Content-Length` value: digits, or a comma-separated list of one
/// repeated length.
fn content_length_value(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if length.is_some_and(|seen| seen != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// How many bytes at the start of `bytes` are empty lines, which a server
/// ignores before a request line (RFC 9112, 2.2).
pub(crate) fn empty_lines(bytes: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match &bytes[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [b'\n', ..] => at += 1,
            _ => return at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Outcome;

    fn request(bytes: &[u8]) -> (Request<'_>, usize) {
        match parse(bytes) {
            Parsed::Request(request, consumed) => (request, consumed),
            Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
            Parsed::Refuse(status, _) => panic!("refused {status}"),
        }
    }

    #[test]
    fn a_head_is_read_in_place_and_its_end_found() {
        let bytes = b"GET /abc?x=1 HTTP/1.1\r\nHost: s\r\nUser-Agent: UA\r\nReferer: https://r/\r\n\r\nGET /next";
        let (parsed, consumed) = request(bytes);
        assert_eq!(parsed.method, Method::GET);
        assert_eq!(parsed.target, b"/abc?x=1");
        assert_eq!(parsed.user_agent, b"UA");
        assert_eq!(parsed.referrer, b"https://r/");
        assert!(!parsed.http10 && !parsed.has_body);
        assert_eq!(parsed.next, Next::KeepAlive);
        // A pipelined request's bytes are left for the next parse.
        assert_eq!(&bytes[consumed..], b"GET /next");
        assert!(matches!(parse(&bytes[consumed..]), Parsed::Partial));
    }

    #[test]
    fn connection_semantics_follow_the_version() {
        let (http10, _) = request(b"GET / HTTP/1.0\r\n\r\n");
        assert!(http10.http10);
        assert_eq!(http10.next, Next::Close);
        let (kept, _) = request(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert_eq!(kept.next, Next::KeepAlive);
        let (closed, _) = request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n");
        assert_eq!(closed.next, Next::Close);
    }

    #[test]
    fn a_body_is_noticed_and_garbage_refused() {
        let (with_body, _) =
            request(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        assert!(with_body.has_body);
        let (empty_body, _) = request(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert!(!empty_body.has_body);
        let (chunked, _) =
            request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(chunked.has_body);
        assert!(matches!(
            parse(b"\0\x01garbage\r\n\r\n"),
            Parsed::Refuse(400, _)
        ));
        let many: String = (0..HEADERS_MAX + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        let too_many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert!(matches!(parse(too_many.as_bytes()), Parsed::Refuse(431, _)));
    }

    fn refused(bytes: &[u8]) -> bool {
        matches!(parse(bytes), Parsed::Refuse(400, _))
    }

    #[test]
    fn framing_and_host_are_checked() {
        // HTTP/1.1 needs one Host; HTTP/1.0 may go without.
        assert!(refused(b"GET /a HTTP/1.1\r\n\r\n"));
        assert!(refused(b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"));
        assert!(refused(b"GET /a HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n"));
        request(b"GET /a HTTP/1.0\r\n\r\n");
        // Both framings, or a length that is not one number, is refused.
        assert!(refused(
            b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        for bad in ["-1", "1x", "", "+5", "5, 6", "0x10", "99999999999999999999"] {
            let head = format!("GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
            assert!(refused(head.as_bytes()), "{bad:?}");
        }
        assert!(refused(
            b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        ));
        let (same, _) = request(
            b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nab",
        );
        assert!(same.has_body);
        let (zero, _) = request(b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n");
        assert!(!zero.has_body);
    }

    #[test]
    fn empty_lines_before_a_request_are_counted() {
        assert_eq!(empty_lines(b""), 0);
        assert_eq!(empty_lines(b"\r\n"), 2);
        assert_eq!(empty_lines(b"\r\n\nGET"), 3);
        assert_eq!(empty_lines(b"\r"), 0, "half a line waits for the rest");
        assert_eq!(empty_lines(b"GET /\r\n"), 0);
    }

    #[test]
    fn a_response_is_written_whole() {
        let reply = Reply {
            status: 302,
            location: Some(b"https://example.com/"),
            cache_control: "private, no-store",
            content_type: "text/plain; charset=utf-8",
            body: Body::Static(b"redirecting\n"),
            outcome: Outcome::Redirect302,
            click: None,
            hsts_max_age: 0,
            visitor: None,
            route: 0,
        };
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut out = Vec::new();
        write_response(&mut out, &reply, false, Next::KeepAlive, false, now);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 302 Found\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n\
             Location: https://example.com/\r\nCache-Control: private, no-store\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n\r\nredirecting\n"
        );
        let mut head = Vec::new();
        write_response_with(
            &mut head,
            &reply,
            true,
            Next::Close,
            true,
            now,
            Some(RetryAfter(0)),
        );
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.0 302 Found\r\n"), "{head}");
        assert!(
            head.ends_with("Content-Length: 12\r\nRetry-After: 1\r\n\r\n"),
            "a HEAD has no body; a wait is at least a second: {head}"
        );
        assert!(
            !head.contains("Connection:"),
            "HTTP/1.0 closes by default: {head}"
        );
    }
}
