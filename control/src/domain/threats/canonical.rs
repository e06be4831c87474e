//! URL canonicalisation and lookup expressions as the Safe Browsing update
//! API defines them, so a threat list built from that model's hash prefixes
//! matches here exactly as it does in browsers.
//!
//! Canonicalisation works on bytes and accepts anything (it never fails):
//! tabs and line breaks are removed, the fragment dropped, percent-escapes
//! undone until none are left, the host lowercased with its dots tidied and
//! any IPv4 spelling normalised to four decimal parts, the path's `.` and
//! `..` segments resolved and runs of slashes collapsed, and finally bytes at
//! or below space, at or above DEL, `#` and `%` escaped again.

/// A canonical URL, split into the parts expressions are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    pub scheme: String,
    pub host: String,
    pub path: String,
    /// Without the `?`; `Some("")` for a URL that ends in `?`.
    pub query: Option<String>,
}

impl std::fmt::Display for Canonical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.host, self.path)?;
        if let Some(query) = &self.query {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

/// Undoes percent-escapes once; `%` not followed by two hex digits stays.
fn unescape_once(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && i + 2 < input.len()
            && let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// Undoes percent-escapes until none are left. Each pass shortens the input
/// or leaves it alone, so this ends.
fn unescape_fully(mut input: Vec<u8>) -> Vec<u8> {
    loop {
        let next = unescape_once(&input);
        if next == input {
            return input;
        }
        input = next;
    }
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b <= 0x20 || b >= 0x7f || b == b'#' || b == b'%' {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// One part of an IPv4 address in C's `inet_aton` spellings: decimal,
/// octal with a leading 0, hexadecimal with 0x.
fn ipv4_part(part: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(part).ok()?;
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if text.len() > 1 && text.starts_with('0') {
            (&text[1..], 8)
        } else {
            (text, 10)
        };
    if digits.is_empty() {
        return (radix == 16).then_some(0);
    }
    if digits.len() > 11 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// The host as an IPv4 address, if any spelling of one parses.
fn ipv4(host: &[u8]) -> Option<[u8; 4]> {
    let parts: Vec<&[u8]> = host.split(|&b| b == b'.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let values: Vec<u64> = parts.iter().map(|p| ipv4_part(p)).collect::<Option<_>>()?;
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|&v| v > 255) {
        return None;
    }
    let room = 8 * (4 - leading.len() as u32);
    if *last >= 1u64 << room {
        return None;
    }
    let mut address: u64 = 0;
    for (i, v) in leading.iter().enumerate() {
        address |= v << (24 - 8 * i);
    }
    address |= last;
    Some((address as u32).to_be_bytes())
}

fn canonical_host(raw: &[u8]) -> String {
    let lowered: Vec<u8> = raw.to_ascii_lowercase();
    let tidy: Vec<u8> = lowered
        .split(|&b| b == b'.')
        .filter(|label| !label.is_empty())
        .collect::<Vec<_>>()
        .join(&b'.');
    if let Some(ip) = ipv4(&tidy) {
        return format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
    }
    escape(&tidy)
}

fn canonical_path(raw: &[u8]) -> String {
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = raw.split(|&b| b == b'/').collect();
    let mut trailing = false;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match *part {
            b"" => trailing = last,
            b"." => trailing = true,
            b".." => {
                segments.pop();
                trailing = true;
            }
            other => {
                segments.push(other);
                trailing = false;
            }
        }
    }
    let mut path = Vec::with_capacity(raw.len() + 1);
    for segment in &segments {
        path.push(b'/');
        path.extend_from_slice(segment);
    }
    if segments.is_empty() || trailing {
        path.push(b'/');
    }
    escape(&path)
}

/// Canonicalises a URL (anything: it never fails).
#[must_use]
pub fn canonicalize(url: &str) -> Canonical {
    let cleaned: Vec<u8> = url
        .bytes()
        .filter(|b| !matches!(b, b'\t' | b'\r' | b'\n'))
        .collect();
    let trimmed = cleaned.trim_ascii();
    let without_fragment = match trimmed.iter().position(|&b| b == b'#') {
        Some(at) => &trimmed[..at],
        None => trimmed,
    };
    let bytes = unescape_fully(without_fragment.to_vec());
    let (scheme, rest) = match bytes.windows(3).position(|w| w == b"://") {
        Some(at)
            if at > 0
                && bytes[..at]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            (
                String::from_utf8_lossy(&bytes[..at]).to_ascii_lowercase(),
                &bytes[at + 3..],
            )
        }
        _ => ("http".to_owned(), &bytes[..]),
    };
    let authority_end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let after = &rest[authority_end..];
    let host_port = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let host = if host_port.starts_with(b"[") {
        match host_port.iter().position(|&b| b == b']') {
            Some(end) => &host_port[..=end],
            None => host_port,
        }
    } else {
        match host_port.iter().rposition(|&b| b == b':') {
            Some(at) => &host_port[..at],
            None => host_port,
        }
    };
    let (path, query) = match after.iter().position(|&b| b == b'?') {
        Some(at) => (&after[..at], Some(&after[at + 1..])),
        None => (after, None),
    };
    Canonical {
        scheme,
        host: canonical_host(host),
        path: canonical_path(path),
        query: query.map(escape),
    }
}

/// Host suffix by path prefix expressions of a URL: at most 5 hosts (the
/// exact one, then up to four made from the last five labels, dropping one
/// label at a time but never down to the top-level domain; only the exact
/// one for an IP address) by at most 6 paths (with query, without, then the
/// root and up to three more leading directories).
#[must_use]
pub fn expressions(url: &str) -> Vec<String> {
    let canonical = canonicalize(url);
    let host = canonical.host.as_str();
    let mut hosts = vec![host.to_owned()];
    if ipv4(host.as_bytes()).is_none() && !host.starts_with('[') {
        let labels: Vec<&str> = host.split('.').collect();
        let start = labels.len().saturating_sub(5);
        for from in start..labels.len().saturating_sub(1) {
            let suffix = labels[from..].join(".");
            if from > 0 && !hosts.contains(&suffix) {
                hosts.push(suffix);
            }
        }
    }
    let path = canonical.path.as_str();
    let mut paths = Vec::with_capacity(6);
    if let Some(query) = &canonical.query {
        paths.push(format!("{path}?{query}"));
    }
    paths.push(path.to_owned());
    let mut prefix = String::from("/");
    let directories: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let directories = &directories[..directories
        .len()
        .saturating_sub(usize::from(!path.ends_with('/')))];
    for i in 0..=directories.len().min(3) {
        if i > 0 {
            prefix.push_str(directories[i - 1]);
            prefix.push('/');
        }
        if !paths.contains(&prefix) {
            paths.push(prefix.clone());
        }
    }
    let mut out = Vec::with_capacity(hosts.len() * paths.len());
    for h in &hosts {
        for p in &paths {
            out.push(format!("{h}{p}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonicalisation examples of the Safe Browsing documentation.
    #[test]
    fn canonicalises_like_safe_browsing() {
        let cases = [
            ("http://host/%25%32%35", "http://host/%25"),
            ("http://host/%25%32%35%25%32%35", "http://host/%25%25"),
            ("http://host/%2525252525252525", "http://host/%25"),
            ("http://host/asdf%25%32%35asd", "http://host/asdf%25asd"),
            (
                "http://host/%%%25%32%35asd%%",
                "http://host/%25%25%25asd%25%25",
            ),
            ("http://www.google.com/", "http://www.google.com/"),
            (
                "http://%31%36%38%2e%31%38%38%2e%39%39%2e%32%36/%2E%73%65%63%75%72%65/%77%77%77%2E%65%62%61%79%2E%63%6F%6D/",
                "http://168.188.99.26/.secure/www.ebay.com/",
            ),
            (
                "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-xplmvalidateinfoswqpcmlx=hgplmcx/",
                "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-xplmvalidateinfoswqpcmlx=hgplmcx/",
            ),
            (
                "http://host%23.com/%257Ea%2521b%2540c%2523d%2524e%25f%255E00%252611%252A22%252833%252944_55%252B",
                "http://host%23.com/~a!b@c%23d$e%25f^00&11*22(33)44_55+",
            ),
            ("http://3279880203/blah", "http://195.127.0.11/blah"),
            ("http://www.google.com/blah/..", "http://www.google.com/"),
            ("www.google.com/", "http://www.google.com/"),
            ("www.google.com", "http://www.google.com/"),
            ("http://www.evil.com/blah#frag", "http://www.evil.com/blah"),
            ("http://www.GOOgle.com/", "http://www.google.com/"),
            ("http://www.google.com.../", "http://www.google.com/"),
            (
                "http://www.google.com/foo\tbar\rbaz\n2",
                "http://www.google.com/foobarbaz2",
            ),
            ("http://www.google.com/q?", "http://www.google.com/q?"),
            ("http://www.google.com/q?r?", "http://www.google.com/q?r?"),
            ("http://www.google.com/q?r?s", "http://www.google.com/q?r?s"),
            ("http://evil.com/foo#bar#baz", "http://evil.com/foo"),
            ("http://evil.com/foo;", "http://evil.com/foo;"),
            ("http://evil.com/foo?bar;", "http://evil.com/foo?bar;"),
            ("http://\u{1}\u{80}.com/", "http://%01%C2%80.com/"),
            ("http://notrailingslash.com", "http://notrailingslash.com/"),
            ("http://www.gotaport.com:1234/", "http://www.gotaport.com/"),
            ("  http://www.google.com/  ", "http://www.google.com/"),
            ("http:// leadingspace.com/", "http://%20leadingspace.com/"),
            ("http://%20leadingspace.com/", "http://%20leadingspace.com/"),
            ("%20leadingspace.com/", "http://%20leadingspace.com/"),
            ("https://www.securesite.com/", "https://www.securesite.com/"),
            ("http://host.com/ab%23cd", "http://host.com/ab%23cd"),
            (
                "http://host.com//twoslashes?more//slashes",
                "http://host.com/twoslashes?more//slashes",
            ),
            (
                "http://user:pw@Host.com:80/a/./b/../c",
                "http://host.com/a/c",
            ),
            ("http://0x7f.1/", "http://127.0.0.1/"),
            ("http://017700000001/", "http://127.0.0.1/"),
        ];
        for (input, want) in cases {
            assert_eq!(canonicalize(input).to_string(), want, "{input:?}");
        }
    }

    #[test]
    fn expressions_follow_the_suffix_prefix_rules() {
        let mut got = expressions("http://a.b.c/1/2.html?param=1");
        got.sort();
        let mut want = vec![
            "a.b.c/1/2.html?param=1",
            "a.b.c/1/2.html",
            "a.b.c/",
            "a.b.c/1/",
            "b.c/1/2.html?param=1",
            "b.c/1/2.html",
            "b.c/",
            "b.c/1/",
        ];
        want.sort_unstable();
        assert_eq!(got, want);

        let mut got = expressions("http://a.b.c.d.e.f.g/1.html");
        got.sort();
        let mut want = vec![
            "a.b.c.d.e.f.g/1.html",
            "a.b.c.d.e.f.g/",
            "c.d.e.f.g/1.html",
            "c.d.e.f.g/",
            "d.e.f.g/1.html",
            "d.e.f.g/",
            "e.f.g/1.html",
            "e.f.g/",
            "f.g/1.html",
            "f.g/",
        ];
        want.sort_unstable();
        assert_eq!(got, want);

        let mut got = expressions("http://1.2.3.4/1/");
        got.sort();
        assert_eq!(got, vec!["1.2.3.4/", "1.2.3.4/1/"]);

        let got = expressions("http://x.com/1/2/3/4/5/6.html");
        assert!(got.contains(&"x.com/1/2/3/".to_owned()));
        assert!(!got.contains(&"x.com/1/2/3/4/".to_owned()));
        assert_eq!(got.len(), 5);
    }
}
