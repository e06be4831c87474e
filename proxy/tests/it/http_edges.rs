//! HTTP/1.1 at its edges on the redirect listener, byte by byte, against
//! RFC 9112 and what nginx does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::{link, raw_request, system};

/// Sends `request` on a new connection and reads until the proxy closes:
/// the whole exchange as text, or the error that ended it.
fn exchange(port: u16, request: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn status_of(answer: &str) -> Option<&str> {
    answer.split(' ').nth(1)
}

#[test]
fn absolute_form_targets_are_served() {
    let sys = system(&[], &[]);
    let code = sys.create_visible(link("https://example.com/absolute"));
    for target in [
        format!("http://s.example/{code}"),
        format!("HTTP://s.example:8080/{code}"),
        format!("https://other.example/{code}"),
    ] {
        let answer = raw_request(
            sys.proxy.port,
            &format!("GET {target} HTTP/1.1\r\nHost: s.example\r\nConnection: close\r\n\r\n"),
        )
        .unwrap();
        assert_eq!(answer.status, 302, "{target}: {answer:?}");
        assert_eq!(
            answer.header("location"),
            Some("https://example.com/absolute")
        );
    }
}

#[test]
fn host_and_framing_errors_are_400_and_close() {
    let sys = system(&[], &[]);
    let code = sys.create_visible(link("https://example.com/framing"));
    let port = sys.proxy.port;
    let refused = [
        // HTTP/1.1 without Host, and with two.
        format!("GET /{code} HTTP/1.1\r\n\r\n"),
        format!("GET /{code} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        // Both framings: the way requests are smuggled.
        format!(
            "GET /{code} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        // Lengths that are not one number.
        format!("GET /{code} HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello"),
        format!("GET /{code} HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
        format!(
            "GET /{code} HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
        ),
    ];
    for request in &refused {
        // Followed by a second request that must never be answered.
        let pipelined = format!("{request}GET /{code} HTTP/1.1\r\nHost: a\r\n\r\n");
        let answer = exchange(port, pipelined.as_bytes()).unwrap();
        assert_eq!(status_of(&answer), Some("400"), "{request:?}: {answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "the connection ends after the 400: {answer}"
        );
    }
    // HTTP/1.0 may omit Host.
    let answer = exchange(port, format!("GET /{code} HTTP/1.0\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(status_of(&answer), Some("302"), "{answer}");
}

#[test]
fn a_forwarded_query_is_percent_encoded_in_location() {
    let sys = system(&[], &[]);
    let code = sys
        .create_visible(serde_json::json!({"url": "https://example.com/p", "forward_query": true}));
    let mut request = format!("GET /{code}?q=").into_bytes();
    request.extend_from_slice(b"\"<b>\"\xc3\xbc`{|}^%41%zz");
    request.extend_from_slice(b" HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
    let answer = exchange(sys.proxy.port, &request).unwrap();
    assert_eq!(status_of(&answer), Some("302"), "{answer}");
    let location = answer
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .expect("a Location header");
    assert_eq!(
        location,
        "https://example.com/p?q=%22%3Cb%3E%22%C3%BC%60%7B%7C%7D%5E%41%25zz"
    );
    // A target that is not UTF-8 is refused with a clear 400, not passed on.
    let mut request = format!("GET /{code}?q=").into_bytes();
    request.extend_from_slice(b"\xff\xfe HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
    let answer = exchange(sys.proxy.port, &request).unwrap();
    assert_eq!(status_of(&answer), Some("400"), "{answer}");
}

#[test]
fn an_unread_body_does_not_destroy_the_answer() {
    let sys = system(&[], &[]);
    let code = sys.create_visible(link("https://example.com/body"));
    // A body larger than anything the proxy reads with a head: closing with
    // it unread resets the connection, and a reset can make a client's
    // stack drop an answer it has not read yet (RFC 9112, 9.6).
    for round in 0..20 {
        let body = vec![b'x'; 256 * 1024];
        let mut request = format!(
            "GET /{code} HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let mut stream = TcpStream::connect(("127.0.0.1", sys.proxy.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        // Everything is sent before anything is read, as a client with one
        // thread does: by then the proxy has answered and closed.
        let _ = stream.write_all(&request);
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1 302 Found\r\n") && text.ends_with("redirecting\n"),
            "round {round}: read {read:?}, got {text:?}"
        );
        // The answer ends with an orderly close, never a reset.
        assert!(read.is_ok(), "round {round}: {read:?}");
    }
}

#[test]
fn a_stray_crlf_after_a_request_is_ignored() {
    let sys = system(
        &[],
        &[
            ("SHORTLINE_READ_TIMEOUT_MS", "200"),
            ("SHORTLINE_KEEPALIVE_TIMEOUT_SECONDS", "2"),
        ],
    );
    let code = sys.create_visible(link("https://example.com/crlf"));
    let mut stream = TcpStream::connect(("127.0.0.1", sys.proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    // Empty lines before and after a request, then a second request.
    stream
        .write_all(format!("\r\nGET /{code} HTTP/1.1\r\nHost: s\r\n\r\n\r\n").as_bytes())
        .unwrap();
    stream
        .write_all(format!("\r\n\nGET /{code} HTTP/1.1\r\nHost: s\r\n\r\n\r\n").as_bytes())
        .unwrap();
    // Then silence: the proxy closes the idle connection, and sends nothing
    // else (no 408 for a request that never started).
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 302 Found").count(), 2, "{text}");
    assert!(!text.contains("408"), "{text}");
}

#[test]
fn a_walk_from_one_ipv6_64_is_one_client() {
    let sys = system(
        &[],
        &[
            ("SHORTLINE_ENUMERATION_MISSES_MAX", "10"),
            ("SHORTLINE_TRUST_FORWARDED_FOR", "true"),
        ],
    );
    let code = sys.create_visible(link("https://example.com/v6"));
    // Every miss from a different address of one /64.
    for i in 1..=11 {
        let from = format!("X-Forwarded-For: 2001:db8:0:7::{i:x}\r\n");
        assert_eq!(
            sys.proxy.request("GET", &format!("/walk{i}"), &from).status,
            404
        );
    }
    let same_64 = "X-Forwarded-For: 2001:db8:0:7:ffff:ffff:ffff:ffff\r\n";
    let refused = sys.proxy.request("GET", &format!("/{code}"), same_64);
    assert_eq!(refused.status, 429, "{refused:?}");
    let next_64 = "X-Forwarded-For: 2001:db8:0:8::1\r\n";
    assert_eq!(
        sys.proxy
            .request("GET", &format!("/{code}"), next_64)
            .status,
        302
    );
}

#[test]
fn a_flood_of_clients_is_forgotten_not_stored() {
    let sys = system(
        &[],
        &[
            ("SHORTLINE_ENUMERATION_MISSES_MAX", "10"),
            ("SHORTLINE_ENUMERATION_CLIENTS_MAX", "16"),
            ("SHORTLINE_TRUST_FORWARDED_FOR", "true"),
        ],
    );
    // Far more clients than the table holds, one miss each: the guard
    // forgets some (and says so) instead of growing.
    for i in 0..200u32 {
        let from = format!("X-Forwarded-For: 198.18.{}.{}\r\n", i / 250, i % 250 + 1);
        assert_eq!(sys.proxy.request("GET", "/nope", &from).status, 404);
    }
    let evictions = sys.proxy.metric("proxy_enumeration_evictions_total");
    assert!(evictions >= 184.0, "{evictions}");
}

#[test]
fn pipelined_requests_are_answered_in_order_and_a_partial_one_does_not_hold_the_rest() {
    let sys = system(&[], &[]);
    let code = sys.create_visible(link("https://example.com/pipelined-batch"));
    let mut stream = TcpStream::connect(("127.0.0.1", sys.proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    // A hundred requests in one write (more than one batch of answers),
    // then a good one and a refused one: every answer, in order, then the
    // 400 and the close.
    let mut requests = String::new();
    for i in 0..100 {
        let target = if i % 10 == 9 {
            "/nosuchcode".to_owned()
        } else {
            format!("/{code}")
        };
        requests.push_str(&format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n"));
    }
    requests.push_str(&format!("GET /{code} HTTP/1.1\r\nHost: a\r\n\r\n"));
    requests.push_str("GET /x HTTP/1.1\r\n\r\n");
    stream.write_all(requests.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let answer = String::from_utf8_lossy(&raw);
    let statuses: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).map(|a| &a[..3]).collect();
    let mut expected: Vec<&str> = (0..100)
        .map(|i| if i % 10 == 9 { "404" } else { "302" })
        .collect();
    expected.extend(["302", "400"]);
    assert_eq!(statuses, expected);

    // A whole request and the start of another: the first is answered
    // without waiting for the rest of the second.
    let mut stream = TcpStream::connect(("127.0.0.1", sys.proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    stream
        .write_all(format!("GET /{code} HTTP/1.1\r\nHost: a\r\n\r\nGET /{code} HT").as_bytes())
        .unwrap();
    let mut first = Vec::new();
    while !String::from_utf8_lossy(&first).contains("redirecting\n") {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the first answer");
        first.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 302 "));
    stream
        .write_all(b"TP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 302 "), "{rest}");
}
