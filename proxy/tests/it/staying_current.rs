//! Deltas and snapshot swaps under load, with zero failed requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::{link, system};

#[test]
fn swaps_and_deltas_under_load_fail_no_request() {
    // Snapshots every 50 ms: the proxy swaps tables constantly while deltas arrive.
    let sys = system(
        &[
            ("SHORTLINE_SNAPSHOT_INTERVAL_MS", "50"),
            ("SHORTLINE_SNAPSHOT_CHANGES_MIN", "1"),
        ],
        &[],
    );
    let stable: Vec<(String, String)> = (0..10)
        .map(|i| {
            let url = format!("https://example.com/stable/{i}");
            (sys.create_visible(link(&url)), url)
        })
        .collect();
    let stable = Arc::new(stable);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let port = sys.proxy.port;
    let load: Vec<_> = (0..3)
        .map(|t| {
            let (stable, stop, ok, failed) = (
                Arc::clone(&stable),
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
            );
            std::thread::spawn(move || {
                for i in 0..20_000usize {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (code, url) = &stable[(i + t) % stable.len()];
                    let request =
                        format!("GET /{code} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    match crate::raw_request(port, &request) {
                        Ok(a) if a.status == 302 && a.header("location") == Some(url.as_str()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            eprintln!("bad answer: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    // Meanwhile: creates, patches and deletes flow to the proxy as deltas.
    let mut created = Vec::new();
    for i in 0..60 {
        let code = sys
            .control
            .create(link(&format!("https://example.com/new/{i}")));
        if i % 3 == 0 {
            let (status, _) = sys
                .control
                .request("DELETE", &format!("/api/v1/links/{code}"), None);
            assert_eq!(status, 204);
        } else {
            created.push((code, i));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (code, i) in &created {
        crate::eventually(10, "new links visible", || {
            sys.proxy.get(&format!("/{code}")).header("location")
                == Some(format!("https://example.com/new/{i}").as_str())
        });
    }
    // However slow the machine, the load has run alongside the changes.
    crate::eventually(60, "the load to have answered 100 requests", || {
        ok.load(Ordering::Relaxed) >= 100
    });
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "answers failed during swaps ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
    assert!(
        sys.proxy.metric("proxy_snapshots_installed_total") >= 2.0,
        "snapshots were swapped"
    );
    assert!(
        sys.proxy.metric("proxy_changes_applied_total") >= 60.0,
        "deltas were applied"
    );
}
