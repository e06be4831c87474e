//! Deltas and snapshot swaps under load, with zero failed requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::{eventually, link, start_control, start_proxy, system};

#[test]
fn swaps_and_deltas_under_load_fail_no_request() {
    // Segments every 50 ms, deltas merged past two and into a new base
    // once they change a tenth as many codes as the base holds: the proxy
    // installs deltas and swaps bases constantly while changes arrive.
    let sys = system(
        &[
            ("SHORTLINE_SNAPSHOT_INTERVAL_MS", "50"),
            ("SHORTLINE_SNAPSHOT_CHANGES_MIN", "1"),
            ("SHORTLINE_SNAPSHOT_DELTAS_MAX", "2"),
            ("SHORTLINE_SNAPSHOT_MERGE_PERCENT", "10"),
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
    for step in ["delta", "merge_all"] {
        assert!(
            sys.control
                .metric(&format!("control_snapshot_steps_total{{step=\"{step}\"}}"))
                >= 1.0,
            "control wrote a {step} while the load ran"
        );
    }
    assert!(
        sys.proxy.metric("proxy_changes_applied_total") >= 60.0,
        "deltas were applied"
    );
}

/// A proxy that was down while control wrote many deltas fetches those
/// deltas, and only those: the base it holds is kept.
#[test]
fn a_proxy_behind_by_many_segments_fetches_only_those_it_lacks() {
    let control_dir = tempfile::tempdir().unwrap();
    let control = start_control(
        control_dir.path(),
        "127.0.0.1:0",
        &[
            ("SHORTLINE_SNAPSHOT_INTERVAL_MS", "50"),
            ("SHORTLINE_SNAPSHOT_CHANGES_MIN", "1"),
            ("SHORTLINE_SNAPSHOT_DELTAS_MAX", "64"),
            ("SHORTLINE_SNAPSHOT_MERGE_PERCENT", "1000"),
        ],
    );
    let mut links: Vec<(String, String)> = (0..40)
        .map(|i| {
            let url = format!("https://example.com/base/{i}");
            (control.create(link(&url)), url)
        })
        .collect();
    // The proxy has a data directory of its own: it downloads what it serves.
    let token = shortline_common::layout::DataDir::new(control_dir.path())
        .internal_token()
        .expect("control wrote the internal token");
    let proxy_dir = tempfile::tempdir().unwrap();
    let env = [("SHORTLINE_INTERNAL_TOKEN", token.as_str())];
    let mut proxy = start_proxy(proxy_dir.path(), control.addr, &env);
    eventually(
        60,
        "the proxy to serve the forty links from segments",
        || {
            proxy.metric("proxy_snapshot_sequence") >= control.metric("control_snapshot_sequence")
                && control.metric("control_snapshot_links") > 0.0
                && links.iter().all(|(code, url)| {
                    proxy.get(&format!("/{code}")).header("location") == Some(url.as_str())
                })
        },
    );
    proxy.kill();
    let deltas_before = control.metric("control_snapshot_deltas");

    // Eight deltas while it is down, one per link.
    for i in 1..=8 {
        let url = format!("https://example.com/delta/{i}");
        links.push((control.create(link(&url)), url));
        eventually(60, "a delta per link", || {
            control.metric("control_snapshot_deltas") >= deltas_before + f64::from(i)
        });
    }
    let deltas = deltas_before + 8.0;
    let proxy = start_proxy(proxy_dir.path(), control.addr, &env);
    eventually(60, "the proxy to install the eight new deltas", || {
        proxy.metric("proxy_snapshot_deltas") == deltas
    });
    assert_eq!(
        proxy.metric("proxy_snapshots_installed_total"),
        1.0 + deltas,
        "the cached base and deltas at start-up, then the eight new deltas: the base is not downloaded again"
    );
    for (code, url) in &links {
        assert_eq!(
            proxy.get(&format!("/{code}")).header("location"),
            Some(url.as_str()),
            "{code}"
        );
    }
    let cached = std::fs::read_dir(proxy_dir.path().join("proxy-cache"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("delta-"))
        .count();
    assert_eq!(
        cached as f64, deltas,
        "the deltas are kept for the next start"
    );
}
