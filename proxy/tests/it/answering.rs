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
    assert!(
        !page.body.contains("phish.example"),
        "the warning page does not link the target"
    );

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
    let flagged_preview = sys.proxy.get(&format!("/{flagged}+"));
    assert!(!flagged_preview.body.contains("phish.example"));
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
