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
    /// `/{code}+`: the preview page.
    Preview { code: &'a [u8] },
    /// `/healthz`.
    Health,
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

/// Parses an origin-form request target such as `/abc?x=1`.
#[must_use]
pub fn parse(target: &[u8]) -> Route<'_> {
    if target.len() > TARGET_LEN_MAX {
        return Route::Invalid;
    }
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
    if let Some(code) = rest.strip_suffix(b"+") {
        return if is_valid_code(code) {
            Route::Preview { code }
        } else {
            Route::NotACode
        };
    }
    if is_valid_code(rest) {
        // A bare `?` forwards nothing.
        let query = query.filter(|q| !q.is_empty());
        return Route::Code { code: rest, query };
    }
    Route::NotACode
}

/// Whether `bytes` may go into a header value as they are: no control
/// characters. Targets are checked when written; this re-check keeps a
/// damaged or hostile snapshot from injecting a header.
#[must_use]
pub fn header_safe(bytes: &[u8]) -> bool {
    !bytes.iter().any(|&b| b < 0x20 || b == 0x7f)
}

/// Appends `target`, then the forwarded query, into `out`: joined with `?`
/// or `&`, and placed before any `#fragment` of the target.
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
    out.extend_from_slice(query);
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
        assert_eq!(parse(b"/abc+"), Route::Preview { code: b"abc" });
        assert_eq!(parse(b"/abc+?x"), Route::Preview { code: b"abc" });
        assert_eq!(parse(b"/"), Route::Root);
        assert_eq!(parse(b"/healthz"), Route::Health);
        for bad in [&b""[..], b"abc", b"*", b"http://x/abc"] {
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
