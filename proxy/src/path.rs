//! Parsing the request target of a redirect request, without allocating.

use shortline_store::is_valid_code;

/// What a request target asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/{code}` with the raw query string (without `?`), if any.
    Code {
        code: &'a [u8],
        query: Option<&'a [u8]>,
    },
    /// `/{code}+`: the preview page. With `?history` (or `?history=N`,
    /// the changes after the N-th), the link's whole destination history,
    /// a page at a time.
    Preview {
        code: &'a [u8],
        history: Option<u32>,
    },
    /// `/healthz`.
    Health,
    /// `/.well-known/acme-challenge/{token}`: an ACME HTTP-01 challenge.
    AcmeChallenge { token: &'a [u8] },
    /// `/`: nothing to redirect.
    Root,
    /// A path that cannot be a code (`/favicon.ico`, `/a/b`, `/robots.txt`):
    /// no such link, answered 404 like an unknown code.
    NotACode,
    /// Not an origin-form path at all, or too long: answered 400.
    Invalid,
}

/// Longest request target considered at all; longer ones are invalid.
pub const TARGET_LEN_MAX: usize = 8192;

/// The authority and the path and query of an absolute-form target
/// (`http://host/abc?x=1`, which RFC 9112 section 3.2.2 says a server must
/// accept), or `None` for any other form.
fn split_absolute(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let scheme_end = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..scheme_end];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let authority_end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    Some(rest.split_at(authority_end))
}

fn strip_absolute(target: &[u8]) -> Option<&[u8]> {
    split_absolute(target).map(|(_, rest)| rest)
}

/// The host an absolute-form target names, which RFC 9112 section 3.2.2
/// says stands over the `Host` header.
#[must_use]
pub fn authority(target: &[u8]) -> Option<&[u8]> {
    split_absolute(target).map(|(authority, _)| authority)
}

/// The path and query of a target in origin form (`/abc?x=1`), an
/// absolute-form one's included (`/` when it has no path).
#[must_use]
pub fn origin_form(target: &[u8]) -> &[u8] {
    match strip_absolute(target) {
        Some(rest) if rest.first() == Some(&b'/') => rest,
        Some(_) => b"/",
        None => target,
    }
}

/// Parses a request target: origin-form such as `/abc?x=1`, or the same
/// in absolute-form.
#[must_use]
pub fn parse(target: &[u8]) -> Route<'_> {
    if target.len() > TARGET_LEN_MAX {
        return Route::Invalid;
    }
    let target = match strip_absolute(target) {
        // `http://host` and `http://host?x` ask for the root.
        Some(rest) if rest.is_empty() || rest[0] == b'?' => return Route::Root,
        Some(rest) => rest,
        None => target,
    };
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(at) => (&target[..at], Some(&target[at + 1..])),
        None => (target, None),
    };
    let Some(rest) = path.strip_prefix(b"/") else {
        return Route::Invalid;
    };
    if rest.is_empty() {
        return Route::Root;
    }
    if rest == b"healthz" {
        return Route::Health;
    }
    if let Some(token) = rest.strip_prefix(b".well-known/acme-challenge/") {
        return if is_valid_code(token) {
            Route::AcmeChallenge { token }
        } else {
            Route::NotACode
        };
    }
    if let Some(code) = rest.strip_suffix(b"+") {
        if !is_valid_code(code) {
            return Route::NotACode;
        }
        return match history_asked(query.unwrap_or_default()) {
            Ok(history) => Route::Preview { code, history },
            Err(()) => Route::Invalid,
        };
    }
    if is_valid_code(rest) {
        // A bare `?` forwards nothing.
        let query = query.filter(|q| !q.is_empty());
        return Route::Code { code: rest, query };
    }
    Route::NotACode
}

/// The `history` parameter of a preview's query: absent, bare (from the
/// first change) or the number of the change to list after. Other
/// parameters are ignored, as a plain preview ignores them; a `history`
/// that is not a number is an error.
fn history_asked(query: &[u8]) -> Result<Option<u32>, ()> {
    let mut asked = None;
    for pair in query.split(|&b| b == b'&') {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        if name != b"history" {
            continue;
        }
        let after = if value.is_empty() {
            0
        } else {
            std::str::from_utf8(value)
                .ok()
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or(())?
        };
        asked = Some(after);
    }
    Ok(asked)
}

/// Whether `bytes` may go into a header value as they are: no control
/// characters. Targets are checked when written; this re-check keeps a
/// damaged or hostile snapshot from injecting a header.
#[must_use]
pub fn header_safe(bytes: &[u8]) -> bool {
    !bytes.iter().any(|&b| b < 0x20 || b == 0x7f)
}

/// Whether `byte` may appear as it is in a URI's query (RFC 3986, 3.4:
/// unreserved, sub-delims, `:`, `@`, `/`, `?`).
fn query_byte_allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&byte)
}

/// Appends `query` to `out`, percent-encoding every byte a URI's query may
/// not hold as it is: raw non-ASCII, controls, space, `"`, `<`, `>`, `#`,
/// and a `%` that does not start an escape. What is already encoded is
/// kept, so `Location` is always a valid URI reference.
fn push_query(query: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (at, &byte) in query.iter().enumerate() {
        let escape = byte == b'%'
            && query.len() > at + 2
            && query[at + 1].is_ascii_hexdigit()
            && query[at + 2].is_ascii_hexdigit();
        if escape || query_byte_allowed(byte) {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 15)],
            ]);
        }
    }
}

/// Appends `target`, then the forwarded query, into `out`: joined with `?`
/// or `&`, percent-encoded where needed, and placed before any `#fragment`
/// of the target.
pub fn forward_query(target: &[u8], query: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let (base, fragment) = match target.iter().position(|&b| b == b'#') {
        Some(at) => (&target[..at], &target[at..]),
        None => (target, &b""[..]),
    };
    out.extend_from_slice(base);
    let joiner = if base.contains(&b'?') {
        if base.ends_with(b"?") || base.ends_with(b"&") {
            &b""[..]
        } else {
            b"&"
        }
    } else {
        b"?"
    };
    out.extend_from_slice(joiner);
    push_query(query, out);
    out.extend_from_slice(fragment);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            parse(b"/abc"),
            Route::Code {
                code: b"abc",
                query: None
            }
        );
        assert_eq!(
            parse(b"/abc?x=1&y"),
            Route::Code {
                code: b"abc",
                query: Some(b"x=1&y")
            }
        );
        assert_eq!(
            parse(b"/abc?"),
            Route::Code {
                code: b"abc",
                query: None
            }
        );
        let preview = |history| Route::Preview {
            code: b"abc",
            history,
        };
        assert_eq!(parse(b"/abc+"), preview(None));
        assert_eq!(parse(b"/abc+?x"), preview(None));
        assert_eq!(parse(b"/abc+?history"), preview(Some(0)));
        assert_eq!(parse(b"/abc+?x=1&history="), preview(Some(0)));
        assert_eq!(parse(b"/abc+?history=250"), preview(Some(250)));
        assert_eq!(parse(b"/abc+?historyx=1"), preview(None));
        for bad in [
            &b"/abc+?history=x"[..],
            b"/abc+?history=-1",
            b"/abc+?history=+1",
        ] {
            assert_eq!(parse(bad), Route::Invalid, "{bad:?}");
        }
        assert_eq!(
            parse(b"/abc+?history=99999999999"),
            Route::Invalid,
            "beyond u32"
        );
        assert_eq!(parse(b"/"), Route::Root);
        assert_eq!(parse(b"/healthz"), Route::Health);
        for bad in [&b""[..], b"abc", b"*", b"ftp://x/abc", b"x:/abc"] {
            assert_eq!(parse(bad), Route::Invalid, "{bad:?}");
        }
        for not_a_code in [
            &b"/favicon.ico"[..],
            b"/robots.txt",
            b"//abc",
            b"/a/b",
            b"/a%20b",
            b"/+",
            b"/abc++",
            b"/\xff",
        ] {
            assert_eq!(parse(not_a_code), Route::NotACode, "{not_a_code:?}");
        }
        assert_eq!(
            parse(format!("/{}", "a".repeat(65)).as_bytes()),
            Route::NotACode
        );
        assert_eq!(parse(&vec![b'/'; TARGET_LEN_MAX + 1]), Route::Invalid);
    }

    #[test]
    fn absolute_form_targets_are_served_like_origin_form() {
        assert_eq!(
            parse(b"http://s.example/abc?x=1"),
            Route::Code {
                code: b"abc",
                query: Some(b"x=1")
            }
        );
        assert_eq!(
            parse(b"HTTPS://s.example:8443/abc+"),
            Route::Preview {
                code: b"abc",
                history: None
            }
        );
        assert_eq!(parse(b"http://s.example"), Route::Root);
        assert_eq!(parse(b"http://s.example?x"), Route::Root);
        assert_eq!(parse(b"http://s.example/healthz"), Route::Health);
        assert_eq!(parse(b"http://s.example/a/b"), Route::NotACode);
    }

    #[test]
    fn a_forwarded_query_is_percent_encoded_where_a_uri_needs_it() {
        let mut out = Vec::new();
        forward_query(b"https://e.com/p", "q=\"<a>\" ü#x".as_bytes(), &mut out);
        assert_eq!(out, b"https://e.com/p?q=%22%3Ca%3E%22%20%C3%BC%23x");
        forward_query(b"https://e.com/p", b"a=%20b&c=%zz&d=%4", &mut out);
        assert_eq!(out, b"https://e.com/p?a=%20b&c=%25zz&d=%254");
        forward_query(b"https://e.com/p", b"x=\r\n\x7f\xff", &mut out);
        assert_eq!(out, b"https://e.com/p?x=%0D%0A%7F%FF");
        forward_query(b"https://e.com/p", b"a=1&b=/?:@!$'()*+,;=-._~", &mut out);
        assert_eq!(out, b"https://e.com/p?a=1&b=/?:@!$'()*+,;=-._~");
        assert!(header_safe(&out));
    }

    #[test]
    fn query_forwarding() {
        let mut out = Vec::new();
        forward_query(b"https://e.com/p", b"a=1", &mut out);
        assert_eq!(out, b"https://e.com/p?a=1");
        forward_query(b"https://e.com/p?x=2", b"a=1", &mut out);
        assert_eq!(out, b"https://e.com/p?x=2&a=1");
        forward_query(b"https://e.com/p?x=2#frag", b"a=1", &mut out);
        assert_eq!(out, b"https://e.com/p?x=2&a=1#frag");
        forward_query(b"https://e.com/p?", b"a=1", &mut out);
        assert_eq!(out, b"https://e.com/p?a=1");
        assert!(header_safe(b"https://e.com/"));
        assert!(!header_safe(b"https://e.com/\r\nX: y"));
    }
}
