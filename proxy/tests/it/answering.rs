//! What the proxy answers.

use serde_json::json;

use crate::{link, system};

#[test]
fn redirects_carry_status_location_and_cache_control() {
    let sys = system(&[], &[]);
    for (redirect, cache) in [
        (301, "public"),
        (302, "no-store"),
        (307, "no-store"),
        (308, "public"),
    ] {
        let code = sys.create_visible(
            json!({"url": format!("https://example.com/{redirect}"), "redirect": redirect}),
        );
        let answer = sys.proxy.get(&format!("/{code}"));
        assert_eq!(answer.status, redirect);
        assert_eq!(
            answer.header("location"),
            Some(format!("https://example.com/{redirect}").as_str())
        );
        assert!(
            answer.header("cache-control").unwrap().contains(cache),
            "{answer:?}"
        );
        assert!(
            !answer.body.is_empty() && answer.body.len() < 64,
            "a tiny body: {answer:?}"
        );
        let head = sys.proxy.request("HEAD", &format!("/{code}"), "");
        assert_eq!(head.status, redirect);
        assert_eq!(head.header("location"), answer.header("location"));
        assert_eq!(
            head.header("content-length"),
            answer.header("content-length")
        );
        assert!(head.body.is_empty(), "HEAD has no body");
    }
}

#[test]
fn unknown_gone_flagged_and_preview() {
    let sys = system(&[], &[]);
    assert_eq!(sys.proxy.get("/doesNotExist").status, 404);
    assert_eq!(sys.proxy.get("/").status, 404);
    // What a browser or a crawler asks of any host is "no such link" too,
    // not a malformed request.
    for path in ["/favicon.ico", "/robots.txt", "/a/b", "/abc++"] {
        let answer = sys.proxy.get(path);
        assert_eq!(answer.status, 404, "{path}: {answer:?}");
    }
    assert_eq!(sys.proxy.request("GET", "*", "").status, 400);

    let disabled = sys.create_visible(link("https://example.com/disabled"));
    let (status, _) = sys.control.request(
        "PATCH",
        &format!("/api/v1/links/{disabled}"),
        Some(json!({"status": "disabled"})),
    );
    assert_eq!(status, 200);
    crate::eventually(10, "disabled link to answer 410", || {
        sys.proxy.get(&format!("/{disabled}")).status == 410
    });

    let expiring =
        sys.create_visible(json!({"url": "https://example.com/expiring", "ttl_seconds": 1}));
    // The proxy folds expiry in at request time: no sweep needed.
    crate::eventually(10, "expired link to answer 410", || {
        sys.proxy.get(&format!("/{expiring}")).status == 410
    });

    let flagged = sys.create_visible(link("https://phish.example/login"));
    let (status, _) = sys.control.request(
        "PATCH",
        &format!("/api/v1/links/{flagged}"),
        Some(json!({"status": "flagged"})),
    );
    assert_eq!(status, 200);
    crate::eventually(10, "flagged link to show the warning", || {
        let page = sys.proxy.get(&format!("/{flagged}"));
        page.status == 200 && page.body.contains("flagged")
    });
    let page = sys.proxy.get(&format!("/{flagged}"));
    assert!(page.header("location").is_none());
    // An admin flagged this one: the page claims no report or list match.
    assert!(
        !page.body.contains("reported") && !page.body.contains("list"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("phish.example"),
        "the warning page does not link the target"
    );

    // Blocking a domain flags the links already pointing at it, and the
    // proxy answers them with the warning page; other links keep redirecting.
    let blocked = sys.create_visible(link("https://cdn.malware.example/payload"));
    let spared = sys.create_visible(link("https://notmalware.example/"));
    let (status, answer) = sys.control.request(
        "PUT",
        "/api/v1/blocklist/malware.example",
        Some(json!({"reason": "drive-by downloads"})),
    );
    assert_eq!(status, 201, "{answer}");
    // The sweep answers within about a second and goes on in the background.
    crate::eventually(30, "the sweep to flag the one link", || {
        let (_, entry) = sys
            .control
            .request("GET", "/api/v1/blocklist/malware.example", None);
        entry["sweep"]["state"] == "done" && entry["sweep"]["links_flagged"] == 1
    });
    crate::eventually(10, "the blocked link to show the warning", || {
        let page = sys.proxy.get(&format!("/{blocked}"));
        page.status == 200 && page.body.contains("flagged") && page.header("location").is_none()
    });
    assert!(
        !sys.proxy
            .get(&format!("/{blocked}"))
            .body
            .contains("malware.example")
    );
    assert_eq!(sys.proxy.get(&format!("/{spared}")).status, 302);

    let active = sys.create_visible(link("https://example.com/a?b=1&c=<x>"));
    let preview = sys.proxy.get(&format!("/{active}+"));
    assert_eq!(preview.status, 200);
    assert!(preview.header("location").is_none());
    assert!(
        preview
            .body
            .contains("https://example.com/a?b=1&amp;c=%3Cx%3E"),
        "{}",
        preview.body
    );
    assert!(
        preview
            .body
            .contains("has not changed since the link was made"),
        "{}",
        preview.body
    );
    let flagged_preview = sys.proxy.get(&format!("/{flagged}+"));
    assert!(!flagged_preview.body.contains("phish.example"));

    // A changed target shows on the preview page, with when, through the
    // snapshot record (and its delta and stream).
    let (status, _) = sys.control.request(
        "PATCH",
        &format!("/api/v1/links/{active}"),
        Some(json!({"url": "https://example.com/switched"})),
    );
    assert_eq!(status, 200);
    crate::eventually(10, "the preview to show the change", || {
        let page = sys.proxy.get(&format!("/{active}+"));
        page.body.contains("https://example.com/switched")
            && page.body.contains("last changed on")
            && page.body.contains(" GMT")
    });
    let page = sys.proxy.get(&format!("/{active}+"));
    // What it led to before, escaped, in a part opened on request.
    assert!(
        page.body.contains(
            "<summary>Where it led before</summary><ul><li><code>https://example.com/a?b=1&amp;c=%3Cx%3E</code>, until "
        ),
        "{}",
        page.body
    );
}

#[test]
fn query_strings_are_forwarded_when_asked() {
    let sys = system(&[], &[]);
    let forwarding =
        sys.create_visible(json!({"url": "https://example.com/p?x=1#top", "forward_query": true}));
    let plain = sys.create_visible(link("https://example.com/q"));
    let answer = sys.proxy.get(&format!("/{forwarding}?utm=a&b=2"));
    assert_eq!(
        answer.header("location"),
        Some("https://example.com/p?x=1&utm=a&b=2#top")
    );
    let answer = sys.proxy.get(&format!("/{plain}?utm=a"));
    assert_eq!(answer.header("location"), Some("https://example.com/q"));
}

#[test]
fn malformed_requests_get_4xx_never_5xx() {
    let sys = system(&[], &[]);
    for path in [
        "/a/b",
        "/%2e%2e",
        "/abc++",
        "/+",
        &format!("/{}", "x".repeat(70)),
        "/a b",
        "/\u{e9}",
        "//x",
    ] {
        let answer = crate::raw_request(
            sys.proxy.port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        if let Ok(answer) = answer {
            assert!((400..500).contains(&answer.status), "{path:?}: {answer:?}");
        }
    }
    let post = sys.proxy.request("POST", "/abc", "Content-Length: 0\r\n");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // Garbage instead of HTTP: the connection closes, the proxy lives on.
    let _ = crate::raw_request(sys.proxy.port, "\u{0}\u{1}garbage\r\n\r\n");
    let huge_header = format!(
        "GET /abc HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200_000)
    );
    if let Ok(answer) = crate::raw_request(sys.proxy.port, &huge_header) {
        assert!(answer.status < 500, "{}", answer.status);
    }
    assert_eq!(sys.proxy.get("/healthz").status, 200);
}

/// Reads from `stream` until `count` complete responses (head and
/// `Content-Length` body) have arrived or the peer closes.
fn read_responses(stream: &mut std::net::TcpStream, count: usize) -> Vec<String> {
    use std::io::Read;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let complete = |raw: &[u8]| {
        let text = String::from_utf8_lossy(raw);
        let mut rest: &str = &text;
        let mut found = 0;
        while let Some((head, after)) = rest.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if after.len() < length {
                break;
            }
            found += 1;
            rest = &after[length..];
        }
        found
    };
    while complete(&raw) < count {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&raw)
        .split("HTTP/1.")
        .filter(|r| !r.is_empty())
        .map(|r| format!("HTTP/1.{r}"))
        .collect()
}

#[test]
fn keep_alive_pipelining_and_http10_follow_the_protocol() {
    use std::io::Write;
    let sys = system(&[], &[]);
    let code = sys.create_visible(link("https://example.com/pipelined"));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", sys.proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // Three requests in one write: three answers, in order, on one connection.
    let three = format!(
        "GET /{code} HTTP/1.1\r\nHost: x\r\n\r\nHEAD /{code} HTTP/1.1\r\nHost: x\r\n\r\nGET /nosuchcode HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    stream.write_all(three.as_bytes()).unwrap();
    let answers = read_responses(&mut stream, 3);
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(
        answers[0].starts_with("HTTP/1.1 302 Found\r\n"),
        "{}",
        answers[0]
    );
    assert!(answers[0].contains("\r\nLocation: https://example.com/pipelined\r\n"));
    assert!(answers[0].contains("\r\nDate: ") && answers[0].ends_with("redirecting\n"));
    assert!(
        answers[1].starts_with("HTTP/1.1 302 Found\r\n") && answers[1].ends_with("\r\n\r\n"),
        "HEAD has no body: {}",
        answers[1]
    );
    assert!(
        answers[2].starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{}",
        answers[2]
    );
    // The connection is still open for a fourth.
    stream
        .write_all(format!("GET /{code} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_responses(&mut stream, 1).len(), 1);

    // HTTP/1.0 closes unless asked to keep the connection.
    let answer =
        crate::raw_request(sys.proxy.port, &format!("GET /{code} HTTP/1.0\r\n\r\n")).unwrap();
    assert_eq!(answer.status, 302);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", sys.proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            format!(
                "GET /{code} HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /{code} HTTP/1.0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let answers = read_responses(&mut stream, 2);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers[0].starts_with("HTTP/1.0 302") && answers[0].contains("Connection: keep-alive")
    );

    // A request with a body is answered and the connection closed, the
    // body never read as a request.
    let answer = crate::raw_request(
        sys.proxy.port,
        &format!("GET /{code} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /"),
    )
    .unwrap();
    assert_eq!(answer.status, 302);
    assert_eq!(answer.header("connection"), Some("close"));
}

#[test]
fn slow_or_oversized_heads_are_refused() {
    use std::io::Write;
    let sys = system(&[], &[("SHORTLINE_READ_TIMEOUT_MS", "300")]);
    // A head trickled in slower than the read timeout: 408 and closed.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", sys.proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"GET /abc HTTP/1.1\r\n").unwrap();
    for _ in 0..4 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let _ = stream.write_all(b"X-Slow: 1\r\n");
    }
    let answers = read_responses(&mut stream, 1);
    assert!(
        answers
            .first()
            .is_some_and(|a| a.starts_with("HTTP/1.1 408")),
        "{answers:?}"
    );
    // A connection that sends nothing is closed after the timeout.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", sys.proxy.port)).unwrap();
    // Far longer than the proxy's timeout: the proxy must be the one to close.
    idle.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut byte = [0u8; 1];
    match std::io::Read::read(&mut idle, &mut byte) {
        Ok(0) => {}
        other => panic!("expected the proxy to close the idle connection, got {other:?}"),
    }
    // A request line longer than any target: 414; too many headers: 431.
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(40_000));
    assert_eq!(
        crate::raw_request(sys.proxy.port, &long_line)
            .unwrap()
            .status,
        414
    );
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let answer =
        crate::raw_request(sys.proxy.port, &format!("GET /abc HTTP/1.1\r\n{many}\r\n")).unwrap();
    assert_eq!(answer.status, 431);
    assert_eq!(sys.proxy.get("/healthz").status, 200);
}

#[test]
fn a_client_walking_codes_is_refused_for_a_while() {
    let sys = system(
        &[],
        &[
            ("SHORTLINE_ENUMERATION_MISSES_MAX", "20"),
            ("SHORTLINE_ENUMERATION_BLOCK_SECONDS", "2"),
            ("SHORTLINE_TRUST_FORWARDED_FOR", "true"),
        ],
    );
    let code = sys.create_visible(link("https://example.com/guarded"));
    let walker = "X-Forwarded-For: 198.51.100.7\r\n";
    let bystander = "X-Forwarded-For: 198.51.100.8\r\n";
    for i in 0..20 {
        let answer = sys.proxy.request("GET", &format!("/walk{i:04}"), walker);
        assert_eq!(answer.status, 404, "miss {i}");
    }
    // The 21st miss in the window starts the block: every request is refused.
    assert_eq!(sys.proxy.request("GET", "/walk0020", walker).status, 404);
    let refused = sys.proxy.request("GET", &format!("/{code}"), walker);
    assert_eq!(refused.status, 429, "{refused:?}");
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(
        sys.proxy
            .request("GET", &format!("/{code}"), bystander)
            .status,
        302,
        "other clients are not affected"
    );
    assert_eq!(sys.proxy.metric("proxy_clients_throttled_total"), 1.0);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(
        sys.proxy.request("GET", &format!("/{code}"), walker).status,
        302,
        "the block ends"
    );
}

#[test]
fn the_whole_history_is_on_the_preview_page_on_request() {
    let mut sys = system(
        &[],
        &[
            ("SHORTLINE_ENUMERATION_MISSES_MAX", "8"),
            ("SHORTLINE_TRUST_FORWARDED_FOR", "true"),
        ],
    );
    let code = sys.create_visible(link("https://example.com/first?a=1&b=<2>"));
    // More changes than the snapshot record keeps (five).
    for n in 1..=7 {
        let (status, answer) = sys.control.request(
            "PATCH",
            &format!("/api/v1/links/{code}"),
            Some(json!({"url": format!("https://example.com/v{n}")})),
        );
        assert_eq!(status, 200, "{answer}");
    }
    crate::eventually(10, "the last change to reach the proxy", || {
        sys.proxy
            .get(&format!("/{code}+"))
            .body
            .contains("https://example.com/v7")
    });
    let preview = sys.proxy.get(&format!("/{code}+"));
    assert!(
        !preview.body.contains("example.com/first"),
        "the record keeps the last five: {}",
        preview.body
    );
    assert!(
        preview
            .body
            .contains("<a href=\"?history\">every change</a>")
    );

    let client = |n: u8| format!("X-Forwarded-For: 198.51.100.{n}\r\n");
    let page = sys
        .proxy
        .request("GET", &format!("/{code}+?history"), &client(1));
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(
        page.body.contains(
            "<td><code>https://example.com/first?a=1&amp;b=%3C2%3E</code></td><td><code>https://example.com/v1</code></td></tr>"
        ),
        "the first change, escaped: {}",
        page.body
    );
    for n in 1..=7 {
        assert!(
            page.body.contains(&format!("<tr><td>{n}</td>")),
            "change {n}"
        );
    }
    assert!(page.body.contains("last changed on"));
    // Who made a change is for the owner and admins, not a public page.
    assert!(!page.body.contains("admin"), "{}", page.body);
    let later = sys
        .proxy
        .request("GET", &format!("/{code}+?history=5"), &client(1));
    assert_eq!(later.status, 200);
    assert!(later.body.contains("<tr><td>6</td>") && later.body.contains("<tr><td>7</td>"));
    assert!(!later.body.contains("<tr><td>5</td>"), "{}", later.body);
    assert_eq!(
        sys.proxy
            .request("GET", &format!("/{code}+?history=x"), &client(1))
            .status,
        400
    );
    let head = sys
        .proxy
        .request("HEAD", &format!("/{code}+?history"), &client(1));
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    // Each page costs control a read, so it counts as a miss: a client
    // asking for many is refused like one walking codes, others are not.
    let mut refused = None;
    for i in 0..20 {
        let answer = sys
            .proxy
            .request("GET", &format!("/{code}+?history"), &client(2));
        if answer.status == 429 {
            refused = Some(i);
            break;
        }
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(
        refused,
        Some(9),
        "the 9th page is the 9th miss; the 10th is refused"
    );
    assert_eq!(
        sys.proxy
            .request("GET", &format!("/{code}+?history"), &client(3))
            .status,
        200
    );

    // A link that no longer redirects says so over its history.
    let (status, _) = sys.control.request(
        "PATCH",
        &format!("/api/v1/links/{code}"),
        Some(json!({"status": "disabled"})),
    );
    assert_eq!(status, 200);
    crate::eventually(10, "the disabled link to answer 410", || {
        sys.proxy.get(&format!("/{code}")).status == 410
    });
    let page = sys
        .proxy
        .request("GET", &format!("/{code}+?history"), &client(3));
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("is no longer available. It led to:")
            && !page.body.contains("leads to")
            && page.body.contains("<tr><td>7</td>"),
        "{}",
        page.body
    );

    // A flagged link's targets stay hidden, its history's too.
    let (status, _) = sys.control.request(
        "PATCH",
        &format!("/api/v1/links/{code}"),
        Some(json!({"status": "flagged"})),
    );
    assert_eq!(status, 200);
    crate::eventually(10, "the flag to reach the proxy", || {
        let page = sys
            .proxy
            .request("GET", &format!("/{code}+?history"), &client(4));
        page.status == 200 && page.body.contains("flagged")
    });
    let page = sys
        .proxy
        .request("GET", &format!("/{code}+?history"), &client(4));
    assert!(!page.body.contains("example.com"), "{}", page.body);

    // Without control, the preview stands, with a note and a 503.
    let other = sys.create_visible(link("https://example.com/other"));
    sys.control.kill();
    let page = sys
        .proxy
        .request("GET", &format!("/{other}+?history"), &client(5));
    assert_eq!(page.status, 503, "{page:?}");
    assert_eq!(page.header("retry-after"), Some("1"));
    assert!(
        page.body.contains("full history cannot be read right now")
            && page.body.contains("https://example.com/other"),
        "{}",
        page.body
    );
    assert_eq!(sys.proxy.get(&format!("/{other}")).status, 302);
}
