//! Connection limits: sockets that send nothing, send a head slowly or
//! announce a body and never send it are closed within their timeouts, and
//! the excess past the cap is refused at once, while normal clients are
//! served throughout.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::start_with;

/// Open descriptors of a process.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Takes the whole open-files limit the system allows, for thousands of
/// sockets at once.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        }
    }
}

/// A socket held open by the test, with what the server sent on it.
struct Held {
    stream: TcpStream,
    received: Vec<u8>,
}

impl Held {
    /// Reads what has arrived; true once the server has closed it.
    fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }
}

#[test]
fn silent_and_slow_sockets_are_released_while_clients_are_served() {
    raise_open_files_limit();
    let control = start_with(&[
        ("SHORTLINE_CONTROL_HEADER_TIMEOUT_MS", "2000"),
        ("SHORTLINE_CONTROL_BODY_TIMEOUT_MS", "2000"),
        ("SHORTLINE_CONTROL_IDLE_TIMEOUT_MS", "2000"),
    ]);
    let link = control.create(json!({"url": "https://example.com/held"}));
    let code = link["code"].as_str().unwrap().to_owned();
    let baseline = open_files(control.pid());
    let silent = 1000;
    let slow_head = 1000;
    let no_body = 1000;
    let mut held = Vec::new();
    for i in 0..silent + slow_head + no_body {
        let mut stream = TcpStream::connect(control.addr).expect("connect");
        if i >= silent + slow_head {
            // The public, unauthenticated report endpoint, with a body
            // announced and never sent.
            let head = format!(
                "POST /api/v1/links/{code}/report HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).unwrap();
        } else if i >= silent {
            stream
                .write_all(b"POST /api/v1/links/x/report HTTP/1.1\r\nHost: c\r\nContent-Le")
                .unwrap();
        }
        stream.set_nonblocking(true).unwrap();
        held.push(Held {
            stream,
            received: Vec::new(),
        });
        if i % 500 == 0 {
            // Served while the sockets pile up.
            assert_eq!(control.get("/healthz").status, 200);
        }
    }
    let opened = std::time::Instant::now();
    let mut peak = 0;
    let mut closed = Vec::new();
    crate::eventually(120, "control to close every held socket", || {
        peak = peak.max(open_files(control.pid()));
        // Served while they are held and as they are released.
        assert_eq!(control.get(&format!("/api/v1/links/{code}")).status, 200);
        let mut index = 0;
        while index < held.len() {
            if held[index].closed() {
                closed.push(held.swap_remove(index));
            } else {
                index += 1;
            }
        }
        held.is_empty()
    });
    // Informational, for docs/OPERATIONS.md: how long after the last socket
    // was opened all were released, and the most descriptors control held.
    eprintln!(
        "released {} held sockets {:.1} s after the last was opened (timeouts 2 s); control held at most {peak} descriptors, {baseline} before",
        silent + slow_head + no_body,
        opened.elapsed().as_secs_f64()
    );
    // A body that never came is answered 408 before the close; a head
    // that never ended is closed without an answer.
    let timed_out_bodies = closed
        .iter()
        .filter(|h| h.received.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"))
        .count();
    assert_eq!(timed_out_bodies, no_body);
    assert_eq!(
        closed.iter().filter(|h| h.received.is_empty()).count(),
        silent + slow_head
    );
    drop(closed);
    crate::eventually(
        60,
        "control's descriptors to return to where they were",
        || open_files(control.pid()) <= baseline + 16,
    );
    let header = control.metric("control_connections_timed_out_total{phase=\"header\"}");
    let body = control.metric("control_connections_timed_out_total{phase=\"body\"}");
    assert!(header >= (silent + slow_head) as f64, "{header}");
    assert!(body >= no_body as f64, "{body}");
}

#[test]
fn past_the_cap_connections_are_refused_at_once() {
    let control = start_with(&[
        ("SHORTLINE_CONTROL_CONNECTIONS_MAX", "20"),
        ("SHORTLINE_CONTROL_HEADER_TIMEOUT_MS", "600000"),
    ]);
    assert_eq!(control.get("/healthz").status, 200);
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(control.addr).unwrap())
        .collect();
    // Once control has taken all twenty, the next is answered 503 and
    // closed without waiting for its request.
    crate::eventually(60, "a connection past the cap to be refused", || {
        let mut probe = TcpStream::connect(control.addr).unwrap();
        probe
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = probe.read_to_end(&mut answer);
        answer.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n")
    });
    // Closing the held sockets frees their places.
    drop(silent);
    crate::eventually(60, "a place to free up", || {
        crate::agent()
            .get(&control.url("/healthz"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(control.metric("control_connections_refused_total") >= 1.0);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let control = start_with(&[("SHORTLINE_CONTROL_IDLE_TIMEOUT_MS", "500")]);
    let mut stream = TcpStream::connect(control.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n")
        .unwrap();
    // The answer, then the close once the connection has been idle; the
    // client's timeout is far longer, so control is the one closing.
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    assert!(all.starts_with(b"HTTP/1.1 200 OK\r\n"), "{all:?}");
    crate::eventually(60, "the idle close to be counted", || {
        control.metric("control_connections_timed_out_total{phase=\"idle\"}") >= 1.0
    });
}
