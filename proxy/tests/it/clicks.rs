//! Click capture: N redirects are exactly N clicks; HEAD and previews are
//! not clicks; SIGTERM flushes; clicks wait out a control outage.

use crate::{eventually, eventually_eq, link, start_control, start_proxy, system};

#[test]
fn every_redirect_is_counted_once() {
    let sys = system(&[], &[]);
    let code = sys.create_visible(link("https://example.com/counted"));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let port = sys.proxy.port;
            let code = code.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let answer = crate::raw_request(
                        port,
                        &format!("GET /{code} HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\nConnection: close\r\n\r\n"),
                    )
                    .unwrap();
                    assert_eq!(answer.status, 302);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for _ in 0..10 {
        assert_eq!(
            sys.proxy.request("HEAD", &format!("/{code}"), "").status,
            302
        );
        assert_eq!(sys.proxy.get(&format!("/{code}+")).status, 200);
    }
    eventually_eq(15, "200 clicks counted", || sys.control.clicks(&code), 200);
    // Everything the proxy captured has been shipped and acknowledged, so
    // nothing more can arrive: the count is final.
    eventually(60, "the proxy's queue to empty", || {
        sys.proxy.metric("proxy_clicks_queued") == 0.0
            && sys.proxy.metric("proxy_clicks_shipped_total") >= 200.0
    });
    assert_eq!(
        sys.control.clicks(&code),
        200,
        "HEAD and previews are not clicks, and nothing is counted twice"
    );
    assert_eq!(sys.proxy.metric("proxy_clicks_dropped_total"), 0.0);
}

#[test]
fn sigterm_flushes_queued_clicks() {
    // A long flush interval: the clicks are still queued when SIGTERM arrives.
    let mut sys = system(&[], &[("SHORTLINE_CLICK_FLUSH_INTERVAL_MS", "60000")]);
    let code = sys.create_visible(link("https://example.com/flush"));
    for _ in 0..25 {
        assert_eq!(sys.proxy.get(&format!("/{code}")).status, 302);
    }
    assert_eq!(sys.control.clicks(&code), 0, "nothing shipped yet");
    let status = sys.proxy.terminate();
    assert!(status.success(), "{status:?}");
    // Acknowledged before the proxy exits; counted at control's next flush.
    eventually_eq(5, "25 clicks counted", || sys.control.clicks(&code), 25);
}

#[test]
fn clicks_wait_out_a_control_outage() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut control = start_control(dir.path(), &addr, &[]);
    let proxy = start_proxy(dir.path(), control.addr, &[]);
    let code = control.create(link("https://example.com/outage"));
    eventually(10, "visible", || {
        proxy.request("HEAD", &format!("/{code}"), "").status == 302
    });
    control.kill();
    for _ in 0..30 {
        assert_eq!(
            proxy.get(&format!("/{code}")).status,
            302,
            "served while control is down"
        );
    }
    // The batcher is retrying by now: it failed at least once.
    eventually(
        60,
        "the proxy to fail a batch while control is down",
        || proxy.metric("proxy_click_batches_failed_total") >= 1.0,
    );
    let control = start_control(dir.path(), &addr, &[]);
    eventually_eq(
        20,
        "clicks shipped after control returns",
        || control.clicks(&code),
        30,
    );
}
