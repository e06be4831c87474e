//! Restarts, corrupt snapshots and graceful upgrades.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::{eventually, link, start_control, start_proxy};

#[test]
fn restart_with_control_down_serves_every_link_served_before() {
    let dir = tempfile::tempdir().unwrap();
    // Control builds no snapshot after start-up: new links live only in the
    // proxy's overlay until the proxy persists its view.
    let mut control = start_control(
        dir.path(),
        "127.0.0.1:0",
        &[("SHORTLINE_SNAPSHOT_INTERVAL_MS", "3600000")],
    );
    let mut proxy = start_proxy(dir.path(), control.addr, &[]);
    let codes: Vec<String> = (0..20)
        .map(|i| control.create(link(&format!("https://example.com/{i}"))))
        .collect();
    for code in &codes {
        eventually(10, "visible", || {
            proxy.request("HEAD", &format!("/{code}"), "").status == 302
        });
    }
    control.kill();
    // Let the persister write the view.
    std::thread::sleep(Duration::from_millis(500));
    proxy.kill();
    let proxy = start_proxy(dir.path(), control.addr, &[]);
    for (i, code) in codes.iter().enumerate() {
        let answer = proxy.get(&format!("/{code}"));
        assert_eq!(answer.status, 302, "{code} lost across the restart");
        assert_eq!(
            answer.header("location"),
            Some(format!("https://example.com/{i}").as_str())
        );
    }
}

#[test]
fn corrupt_truncated_and_foreign_snapshots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut control = start_control(
        dir.path(),
        "127.0.0.1:0",
        &[
            ("SHORTLINE_SNAPSHOT_INTERVAL_MS", "50"),
            ("SHORTLINE_SNAPSHOT_CHANGES_MIN", "1"),
        ],
    );
    let code = control.create(link("https://example.com/kept"));
    let snapshots = dir.path().join("snapshots");
    eventually(10, "a snapshot with the link", || {
        shortline_proxy::snapshots::list(&snapshots)
            .first()
            .is_some_and(|(seq, _)| seq.0 >= 1)
    });
    control.kill();
    let (newest, path) = shortline_proxy::snapshots::list(&snapshots)[0].clone();
    let good = std::fs::read(&path).unwrap();
    // Newer-named files that are damaged in three ways.
    let cache = dir.path().join("proxy-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    std::fs::write(
        cache.join(shortline_proxy::snapshots::file_name(shortline_store::Seq(
            newest.0 + 1,
        ))),
        &flipped,
    )
    .unwrap();
    std::fs::write(
        cache.join(shortline_proxy::snapshots::file_name(shortline_store::Seq(
            newest.0 + 2,
        ))),
        &good[..good.len() / 2],
    )
    .unwrap();
    std::fs::write(
        cache.join(shortline_proxy::snapshots::file_name(shortline_store::Seq(
            newest.0 + 3,
        ))),
        b"GIF89a not a snapshot",
    )
    .unwrap();

    let proxy = start_proxy(dir.path(), control.addr, &[]);
    assert_eq!(
        proxy.get(&format!("/{code}")).status,
        302,
        "served from the older valid snapshot"
    );
    assert_eq!(proxy.metric("proxy_snapshots_rejected_total"), 3.0);
    assert_eq!(proxy.metric("proxy_snapshot_sequence"), newest.0 as f64);
}

#[test]
fn graceful_upgrade_under_load_fails_no_request() {
    let sys = crate::system(&[], &[]);
    let code = sys.create_visible(link("https://example.com/upgrade"));
    let mut proxy = sys.proxy;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let port = proxy.port;
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, code) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
                code.clone(),
            );
            std::thread::spawn(move || {
                // Bounded: at most 20 000 requests per thread.
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let request =
                        format!("GET /{code} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    match crate::raw_request(port, &request) {
                        Ok(answer) if answer.status == 302 => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed request: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    proxy.upgrade();
    let after_first = ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    proxy.upgrade();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the upgrades"
    );
    assert!(
        ok.load(Ordering::Relaxed) > after_first,
        "the new process served"
    );
    assert_eq!(proxy.get(&format!("/{code}")).status, 302);
    drop(sys.control);
}

/// The README's one-command start: `shortline-control up` runs control and a
/// proxy beside it; SIGTERM stops both.
#[test]
fn up_starts_a_working_shortener_and_stops_it() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let port = crate::free_port();
    let mut up = std::process::Command::new(crate::target_dir_binary("shortline-control"))
        .arg("up")
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir.path())
        .env("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0")
        .env("SHORTLINE_PROXY_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "SHORTLINE_PROXY_METRICS_LISTEN",
            format!("127.0.0.1:{}", crate::free_port()),
        )
        .env("SHORTLINE_ADMIN_TOKEN", crate::ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(up.stdout.take().unwrap()).lines();
    let control: std::net::SocketAddr = loop {
        let line = lines.next().expect("up printed its address").unwrap();
        if let Some(addr) = line.strip_prefix("control listening on http://") {
            break addr.parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let agent = crate::agent();
    let mut created = agent
        .post(&format!("http://{control}/api/v1/links"))
        .header("Authorization", &format!("Bearer {}", crate::ADMIN_TOKEN))
        .send_json(serde_json::json!({"url": "https://example.com/up"}))
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let link: serde_json::Value = created.body_mut().read_json().unwrap();
    let path = format!("/{}", link["code"].as_str().unwrap());
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    eventually(30, "the proxy started by up to redirect", || {
        crate::raw_request(port, &request).is_ok_and(|a| {
            a.status == 302 && a.header("location") == Some("https://example.com/up")
        })
    });
    // SAFETY: kill(2) on our own child's pid with a valid signal.
    unsafe {
        libc::kill(up.id() as i32, libc::SIGTERM);
    }
    let status = up.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        crate::raw_request(port, &request).is_err(),
        "the proxy stopped with control"
    );
}
