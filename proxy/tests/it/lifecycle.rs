//! Restarts, corrupt snapshots and graceful upgrades.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{eventually, link, start_control, start_proxy};

#[test]
fn restart_with_control_down_serves_every_link_served_before() {
    let dir = tempfile::tempdir().unwrap();
    // Control builds no snapshot after start-up: new links live only in the
    // proxy's overlay and its journal.
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
    // Both die at once, with no time to write anything more.
    control.kill();
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
    assert_eq!(proxy.metric("proxy_journal_replayed_changes"), 20.0);
}

#[test]
fn sigkill_at_random_moments_loses_no_link_the_proxy_answered() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshots as often as control allows, so kills also land around
    // snapshot installs and journal rewrites.
    let control_env = [
        ("SHORTLINE_SNAPSHOT_INTERVAL_MS", "50"),
        ("SHORTLINE_SNAPSHOT_CHANGES_MIN", "5"),
    ];
    let mut answered: Vec<(String, String)> = Vec::new();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut random = u64::from(seed) | 1;
    let mut next = move || {
        // xorshift: the kills land at different moments on every run.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    for round in 0..5 {
        let mut control = start_control(dir.path(), "127.0.0.1:0", &control_env);
        let mut proxy = start_proxy(dir.path(), control.addr, &[]);
        // Creates run on while the proxy is watched; the kill comes after a
        // random number of links have been answered.
        let stop = Arc::new(AtomicBool::new(false));
        let (created, learnt) = std::sync::mpsc::channel();
        let creator = {
            let stop = Arc::clone(&stop);
            let control_addr = control.addr;
            std::thread::spawn(move || {
                let agent = crate::agent();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 100_000 {
                    let url = format!("https://example.com/r{round}/{i}");
                    let answer = agent
                        .post(format!("http://{control_addr}/api/v1/links"))
                        .header("Authorization", format!("Bearer {}", crate::ADMIN_TOKEN))
                        .send_json(serde_json::json!({ "url": url }));
                    if let Ok(mut answer) = answer
                        && answer.status() == 201
                    {
                        let body: serde_json::Value = answer.body_mut().read_json().unwrap();
                        let code = body["code"].as_str().unwrap().to_owned();
                        if created.send((code, url)).is_err() {
                            return;
                        }
                    }
                    i += 1;
                }
            })
        };
        let wanted = 1 + (next() % 40) as usize;
        let mut seen_this_round = 0;
        let mut pending: Vec<(String, String)> = Vec::new();
        eventually(120, "links to be answered", || {
            pending.extend(learnt.try_iter());
            pending.retain(|(code, url)| {
                let answer = proxy.request("HEAD", &format!("/{code}"), "");
                if answer.status == 302 {
                    assert_eq!(answer.header("location"), Some(url.as_str()));
                    answered.push((code.clone(), url.clone()));
                    seen_this_round += 1;
                    false
                } else {
                    true
                }
            });
            seen_this_round >= wanted
        });
        // Both die at once, right after the last answer.
        proxy.kill();
        control.kill();
        stop.store(true, Ordering::Relaxed);
        drop(learnt);
        let _ = creator.join();
        // The proxy alone, control down: every link it answered is served.
        let alone = start_proxy(dir.path(), control.addr, &[]);
        for (code, url) in &answered {
            let answer = alone.request("HEAD", &format!("/{code}"), "");
            assert_eq!(
                (answer.status, answer.header("location")),
                (302, Some(url.as_str())),
                "round {round}: {code} was answered before the kill"
            );
        }
        drop(alone);
    }
    assert!(answered.len() >= 5, "{}", answered.len());
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
            .and_then(|(_, path)| shortline_store::Snapshot::open(path).ok())
            .is_some_and(|s| s.get(code.as_bytes()).is_some())
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
    // The load runs until told to stop, however slow the machine: bounded by
    // a time limit and a request cap far above what the test needs.
    let load_deadline = Instant::now() + Duration::from_secs(600);
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, code) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
                code.clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..2_000_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > load_deadline {
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
    // Each upgrade returns once the old process has exited: every answer
    // after that comes from the new one.
    let served_since = |before: u64, what: &str| {
        eventually(120, what, || ok.load(Ordering::Relaxed) >= before + 50);
    };
    served_since(0, "the first process to serve under load");
    proxy.upgrade();
    served_since(ok.load(Ordering::Relaxed), "the second process to serve");
    proxy.upgrade();
    served_since(ok.load(Ordering::Relaxed), "the third process to serve");
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the upgrades ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(proxy.get(&format!("/{code}")).status, 302);
    drop(sys.control);
}

/// Control with snapshots built at once.
const FAST_SNAPSHOTS: [(&str, &str); 2] = [
    ("SHORTLINE_SNAPSHOT_INTERVAL_MS", "50"),
    ("SHORTLINE_SNAPSHOT_CHANGES_MIN", "1"),
];

/// A data folder whose newest snapshot (control's) has one byte flipped,
/// `at` bytes into the blocks, and a proxy cache with no snapshot of its
/// own; control is stopped.
struct Damaged {
    dir: tempfile::TempDir,
    control: crate::Control,
    /// (code, target) of every link in the snapshot.
    links: Vec<(String, String)>,
    path: std::path::PathBuf,
    good: Vec<u8>,
}

impl Damaged {
    fn new(at: impl FnOnce(&shortline_store::format::Header) -> usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut control = start_control(dir.path(), "127.0.0.1:0", &FAST_SNAPSHOTS);
        // Long targets: a few hundred kilobytes of records, several blocks.
        // One batch, so one delta that dwarfs the empty first base and is
        // merged into a base of every link at once.
        let pad = "p".repeat(2000);
        let urls: Vec<String> = (0..150)
            .map(|i| format!("https://example.com/{i}/{pad}"))
            .collect();
        let batch: Vec<serde_json::Value> = urls.iter().map(|url| link(url)).collect();
        let (status, out) = control.request(
            "POST",
            "/api/v1/links/batch",
            Some(serde_json::json!({ "links": batch })),
        );
        assert_eq!(status, 200, "the batch is answered whole");
        let links: Vec<(String, String)> = out["results"]
            .as_array()
            .expect("results")
            .iter()
            .zip(urls)
            .map(|(item, url)| (item["link"]["code"].as_str().unwrap().to_owned(), url))
            .collect();
        let snapshots = dir.path().join("snapshots");
        eventually(30, "a snapshot with every link", || {
            shortline_proxy::snapshots::list(&snapshots)
                .first()
                .and_then(|(_, path)| shortline_store::Snapshot::open(path).ok())
                // Every link, and the default domain's settings records
                // (`.localhost` and `.`).
                .is_some_and(|s| s.len() == links.len() as u64 + 2)
        });
        control.kill();
        let (_, path) = shortline_proxy::snapshots::list(&snapshots)[0].clone();
        let good = std::fs::read(&path).unwrap();
        let header = shortline_store::format::Header::decode(&good).unwrap();
        assert!(header.block_count() >= 4, "{} blocks", header.block_count());
        let mut damaged = good.clone();
        damaged[shortline_store::format::HEADER_SIZE + at(&header)] ^= 0x01;
        let setup = Self {
            dir,
            control,
            links,
            path,
            good,
        };
        setup.replace(&damaged);
        for entry in std::fs::read_dir(setup.dir.path().join("proxy-cache"))
            .into_iter()
            .flatten()
        {
            let entry = entry.unwrap().path();
            if entry.extension().is_some_and(|e| e == "snap") {
                std::fs::remove_file(entry).unwrap();
            }
        }
        setup
    }

    /// Puts `bytes` at the snapshot's path as a new file, not a write
    /// through a link the cache may share.
    fn replace(&self, bytes: &[u8]) {
        let aside = self.path.with_extension("new");
        std::fs::write(&aside, bytes).unwrap();
        std::fs::rename(&aside, &self.path).unwrap();
    }

    /// Every link redirects to its own target.
    fn all_redirect(&self, proxy: &crate::Proxy) {
        for (code, url) in &self.links {
            let answer = proxy.get(&format!("/{code}"));
            assert_eq!(answer.status, 302, "{code}");
            assert_eq!(answer.header("location"), Some(url.as_str()));
        }
    }
}

/// A snapshot on disk is opened without reading its blocks, so a damaged
/// block is found by the lookups that read it and by the check in the
/// background: those answer 503, never a wrong link or a 404; every other
/// link is served. Once control is back, a good copy of the same snapshot
/// is downloaded and installed.
#[test]
fn a_damaged_block_answers_503_until_a_good_copy_is_fetched() {
    let setup = Damaged::new(|h| h.block_size as usize * 3 / 2);
    let (dir, control, links) = (&setup.dir, &setup.control, &setup.links);
    let proxy = start_proxy(
        dir.path(),
        control.addr,
        &[("SHORTLINE_CATCH_UP_WAIT_MS", "100")],
    );
    let mut unavailable = 0;
    for (code, url) in links {
        let answer = proxy.get(&format!("/{code}"));
        match answer.status {
            302 => assert_eq!(answer.header("location"), Some(url.as_str())),
            503 => unavailable += 1,
            other => panic!("{code}: {other}, never a wrong answer"),
        }
    }
    assert!(
        unavailable > 0 && unavailable < links.len(),
        "{unavailable} of {}",
        links.len()
    );
    eventually(30, "the background check to find the damage", || {
        proxy.metric("proxy_snapshot_damaged") == 1.0
    });
    assert!(proxy.metric("proxy_snapshots_rejected_total") >= 1.0);

    setup.replace(&setup.good);
    let _control = start_control(dir.path(), &control.addr.to_string(), &FAST_SNAPSHOTS);
    eventually(60, "a good copy installed", || {
        proxy.metric("proxy_snapshot_damaged") == 0.0
    });
    setup.all_redirect(&proxy);
}

/// When control's own copy of its newest snapshot is the damaged one, it
/// refuses to send it, moves it aside and builds it again; the proxy that
/// found the damage installs the new copy.
///
/// The proxy starts first, with control down, so it is the one that finds
/// the damage: started together, control may build past the damaged file
/// before the proxy ever opens it, and there is then nothing to find.
#[test]
fn a_damaged_snapshot_at_control_is_built_again_for_the_proxy() {
    let setup = Damaged::new(|h| h.block_size as usize * 2 + 99);
    let (dir, control) = (&setup.dir, &setup.control);
    let proxy = start_proxy(
        dir.path(),
        control.addr,
        &[("SHORTLINE_CATCH_UP_WAIT_MS", "100")],
    );
    eventually(30, "the background check to find the damage", || {
        proxy.metric("proxy_snapshot_damaged") == 1.0
    });
    assert!(proxy.metric("proxy_snapshots_rejected_total") >= 1.0);
    let _control = start_control(dir.path(), &control.addr.to_string(), &FAST_SNAPSHOTS);
    eventually(60, "a good copy built by control installed", || {
        proxy.metric("proxy_snapshot_damaged") == 0.0
    });
    setup.all_redirect(&proxy);
    let moved: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".damaged"))
        .collect();
    assert_eq!(moved.len(), 1, "control moved its damaged file aside");
}

/// With control publishing nothing, a journal past `journal_bytes_max` is
/// written as one delta segment of the proxy's own (what it holds beyond
/// its base, not the whole table), which a restart with control down loads.
#[test]
fn a_long_journal_becomes_a_delta_of_the_proxys_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut control = start_control(
        dir.path(),
        "127.0.0.1:0",
        &[("SHORTLINE_SNAPSHOT_INTERVAL_MS", "3600000")],
    );
    let journal_max = [("SHORTLINE_JOURNAL_BYTES_MAX", "65536")];
    let mut proxy = start_proxy(dir.path(), control.addr, &journal_max);
    // About 100 KB of changes: past the journal's limit.
    let pad = "q".repeat(1000);
    let links: Vec<(String, String)> = (0..100)
        .map(|i| {
            let url = format!("https://example.com/{i}/{pad}");
            (control.create(link(&url)), url)
        })
        .collect();
    eventually(60, "the journal to be written as a delta", || {
        proxy.metric("proxy_snapshot_deltas") == 1.0
    });
    assert!(proxy.metric("proxy_journal_bytes") < 65536.0);
    let own: Vec<_> = std::fs::read_dir(dir.path().join("proxy-cache"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("delta-"))
        .collect();
    assert_eq!(own.len(), 1, "one delta in the proxy's cache");
    for (code, url) in &links {
        eventually(10, "visible", || {
            proxy.get(&format!("/{code}")).header("location") == Some(url.as_str())
        });
    }
    control.kill();
    proxy.kill();
    let proxy = start_proxy(
        dir.path(),
        control.addr,
        &[("SHORTLINE_CATCH_UP_WAIT_MS", "100")],
    );
    assert_eq!(proxy.metric("proxy_snapshot_deltas"), 1.0);
    for (code, url) in &links {
        let answer = proxy.get(&format!("/{code}"));
        assert_eq!(answer.status, 302, "{code} lost across the restart");
        assert_eq!(answer.header("location"), Some(url.as_str()));
    }
}
