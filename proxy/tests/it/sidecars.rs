//! The cluster topology on one machine: three control sidecars sharing one
//! FoundationDB store, each with its own proxy, as on three hosts. Runs
//! when `SHORTLINE_TEST_FDB_CLUSTER_FILE` names a cluster (and the binaries
//! are built with `fdb`); otherwise each test says it is skipped.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Control, Proxy, eventually, fdb_cluster, start_control, start_proxy};

/// One host: a sidecar and the proxy that follows it.
struct Host {
    proxy: Proxy,
    control: Control,
    /// The store's key prefix, shared by every host of a test.
    prefix: String,
    _dir: tempfile::TempDir,
}

/// `n` hosts on one store (one prefix of the test cluster), or `None`
/// after saying the test is skipped.
fn hosts(test: &str, n: usize) -> Option<Vec<Host>> {
    hosts_with(test, n, &[])
}

/// As [`hosts`], with extra settings for every sidecar.
fn hosts_with(test: &str, n: usize, control_env: &[(&str, &str)]) -> Option<Vec<Host>> {
    if fdb_cluster().is_none() {
        eprintln!("skipped: {test} needs SHORTLINE_TEST_FDB_CLUSTER_FILE (a FoundationDB cluster)");
        return None;
    }
    let prefix = format!(
        "sidecars-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    Some(
        (0..n)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let mut env = vec![
                    ("SHORTLINE_FDB_PREFIX", prefix.as_str()),
                    ("SHORTLINE_ANALYTICS_FLUSH_MS", "50"),
                ];
                env.extend_from_slice(control_env);
                let control = start_control(dir.path(), "127.0.0.1:0", &env);
                // The checks below poll for codes that are not there yet;
                // the enumeration guard would take them for a walker.
                let proxy = start_proxy(
                    dir.path(),
                    control.addr,
                    &[
                        ("SHORTLINE_ENUMERATION_MISSES_MAX", "0"),
                        ("SHORTLINE_CLICK_FLUSH_INTERVAL_MS", "20"),
                    ],
                );
                Host {
                    proxy,
                    control,
                    prefix: prefix.clone(),
                    _dir: dir,
                }
            })
            .collect(),
    )
}

/// The preview page: neither a click nor a HEAD, 200 once the code is known.
fn known(proxy: &Proxy, code: &str) -> bool {
    proxy.get(&format!("/{code}+")).status == 200
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[test]
fn a_link_created_on_any_sidecar_is_answered_at_every_proxy() {
    let Some(hosts) = hosts("the create-to-visible test across sidecars", 3) else {
        return;
    };
    let mut latencies = Vec::new();
    for i in 0..3_000 {
        let code = hosts[i % 3]
            .control
            .create(json!({"url": format!("https://example.com/everywhere/{i}")}));
        let created = Instant::now();
        for host in &hosts {
            let deadline = created + Duration::from_secs(120);
            while !known(&host.proxy, &code) {
                assert!(Instant::now() < deadline, "{code} never reached a proxy");
            }
        }
        latencies.push(created.elapsed());
    }
    latencies.sort();
    // Reported, not asserted: timing belongs to benchmarks (bench-control).
    eprintln!(
        "create-to-visible at all three proxies, {} links: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
}

#[test]
fn concurrent_claims_of_an_alias_on_different_sidecars_have_one_winner() {
    let Some(hosts) = hosts("the alias race across sidecars", 3) else {
        return;
    };
    for round in 0..20 {
        let alias = format!("race-{round}");
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let claims: Vec<_> = hosts
                .iter()
                .enumerate()
                .map(|(i, host)| {
                    let alias = alias.clone();
                    scope.spawn(move || {
                        let body =
                            json!({"url": format!("https://example.com/{i}"), "alias": alias});
                        host.control.request("POST", "/api/v1/links", Some(body)).0
                    })
                })
                .collect();
            claims.into_iter().map(|c| c.join().unwrap()).collect()
        });
        let won = statuses.iter().filter(|s| **s == 201).count();
        let lost = statuses.iter().filter(|s| **s == 409).count();
        assert_eq!((won, lost), (1, 2), "{alias}: {statuses:?}");
    }
}

#[test]
fn codes_leased_by_different_sidecars_never_collide() {
    let Some(hosts) = hosts("the counter-code test across sidecars", 3) else {
        return;
    };
    // 100,500 links: 134 batches of 250 through each of the three at once.
    let (batches, per_batch) = (134, 250);
    let codes: Vec<String> = std::thread::scope(|scope| {
        let creators: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(h, host)| {
                scope.spawn(move || {
                    let mut codes = Vec::new();
                    for b in 0..batches {
                        let links: Vec<Value> = (0..per_batch)
                            .map(|i| json!({"url": format!("https://example.com/{h}/{b}/{i}"), "strategy": "counter"}))
                            .collect();
                        // A 503 (the store busy past its transaction
                        // timeout) is retried after its Retry-After, as a
                        // client does.
                        let (status, out) = loop {
                            let (status, out) = host.control.request(
                                "POST",
                                "/api/v1/links/batch",
                                Some(json!({"links": links.clone()})),
                            );
                            if status != 503 {
                                break (status, out);
                            }
                            std::thread::sleep(Duration::from_secs(1));
                        };
                        assert!(status == 200 || status == 201, "{status} {out}");
                        for item in out["results"].as_array().expect("results") {
                            codes.push(item["link"]["code"].as_str().expect("a code").to_owned());
                        }
                    }
                    codes
                })
            })
            .collect();
        creators
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert_eq!(codes.len(), 3 * batches * per_batch);
    let distinct: std::collections::HashSet<&String> = codes.iter().collect();
    assert_eq!(distinct.len(), codes.len(), "a code was handed out twice");
}

#[test]
fn a_change_on_one_sidecar_changes_the_answer_at_every_proxy() {
    let Some(hosts) = hosts("the patch test across sidecars", 3) else {
        return;
    };
    let code = hosts[0]
        .control
        .create(json!({"url": "https://example.com/before"}));
    let location = |proxy: &Proxy| {
        proxy
            .get(&format!("/{code}"))
            .header("location")
            .map(str::to_owned)
    };
    for host in &hosts {
        eventually(60, "the link at every proxy", || {
            location(&host.proxy).as_deref() == Some("https://example.com/before")
        });
    }
    let (status, body) = hosts[1].control.request(
        "PATCH",
        &format!("/api/v1/links/{code}"),
        Some(json!({"url": "https://example.com/after"})),
    );
    assert_eq!(status, 200, "{body}");
    for host in &hosts {
        eventually(60, "the new target at every proxy", || {
            location(&host.proxy).as_deref() == Some("https://example.com/after")
        });
    }
    let (status, body) = hosts[2].control.request(
        "PATCH",
        &format!("/api/v1/links/{code}"),
        Some(json!({"status": "disabled"})),
    );
    assert_eq!(status, 200, "{body}");
    for host in &hosts {
        eventually(60, "the link gone at every proxy", || {
            host.proxy.get(&format!("/{code}")).status == 410
        });
    }
}

#[test]
fn clicks_at_every_proxy_add_up_and_max_clicks_holds_everywhere() {
    let Some(hosts) = hosts("the click test across sidecars", 3) else {
        return;
    };
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    let click = |proxy: &Proxy, code: &str| {
        proxy.request(
            "GET",
            &format!("/{code}"),
            &format!("User-Agent: {CHROME}\r\n"),
        )
    };
    let counted = hosts[0]
        .control
        .create(json!({"url": "https://example.com/counted"}));
    let limited = hosts[1]
        .control
        .create(json!({"url": "https://example.com/limited", "max_clicks": 6}));
    for host in &hosts {
        eventually(60, "both links at every proxy", || {
            known(&host.proxy, &counted) && known(&host.proxy, &limited)
        });
    }
    for (i, host) in hosts.iter().enumerate() {
        for _ in 0..(i + 1) * 5 {
            assert_eq!(click(&host.proxy, &counted).status, 302);
        }
    }
    // 5 + 10 + 15 clicks, shipped to three sidecars, counted in one store.
    for host in &hosts {
        eventually(60, "30 clicks counted", || {
            host.control.clicks(&counted) == 30
        });
    }
    for host in &hosts {
        for _ in 0..2 {
            assert_eq!(click(&host.proxy, &limited).status, 302);
        }
    }
    // HEAD, which is not a click, so the count stays the six human clicks.
    for host in &hosts {
        eventually(60, "the limited link exhausted at every proxy", || {
            host.proxy
                .request("HEAD", &format!("/{limited}"), "")
                .status
                == 410
        });
    }
    assert_eq!(hosts[2].control.clicks(&limited), 6);
    let (_, doc) = hosts[0]
        .control
        .request("GET", &format!("/api/v1/links/{limited}"), None);
    assert_eq!(doc["status"], "exhausted", "{doc}");
}

/// Creates a link through the sidecar at `addr`; `None` when the request
/// fails in any way (the sidecar may be dying).
fn try_create(addr: std::net::SocketAddr, url: &str) -> Option<String> {
    let mut response = crate::agent()
        .post(&format!("http://{addr}/api/v1/links"))
        .header("Authorization", &format!("Bearer {}", crate::ADMIN_TOKEN))
        .send_json(json!({ "url": url }))
        .ok()?;
    if response.status().as_u16() != 201 {
        return None;
    }
    let link: Value = response.body_mut().read_json().ok()?;
    Some(link["code"].as_str()?.to_owned())
}

#[test]
fn a_sidecar_killed_mid_load_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let Some(mut hosts) = hosts("the sidecar SIGKILL test", 3) else {
        return;
    };
    let before = hosts[1]
        .control
        .create(json!({"url": "https://example.com/before-the-kill"}));
    for host in &hosts {
        eventually(60, "the first link at every proxy", || {
            known(&host.proxy, &before)
        });
    }
    let addrs: Vec<_> = hosts.iter().map(|h| h.control.addr).collect();
    let stop = AtomicBool::new(false);
    let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
    let acknowledged: Vec<String> = std::thread::scope(|scope| {
        let creators: Vec<_> = (0..3)
            .map(|h| {
                let (addr, stop, count) = (addrs[h], &stop, &counts[h]);
                scope.spawn(move || {
                    let mut acked = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        match try_create(addr, &format!("https://example.com/kill/{h}/{i}")) {
                            Some(code) => {
                                acked.push(code);
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            None if h == 1 => break,
                            None => panic!("sidecar {h} refused a create"),
                        }
                    }
                    acked
                })
            })
            .collect();
        eventually(120, "30 creates acknowledged by the second sidecar", || {
            counts[1].load(Ordering::SeqCst) >= 30
        });
        hosts[1].control.kill();
        let at_kill = [0, 2].map(|h| counts[h].load(Ordering::SeqCst));
        eventually(120, "50 more creates through each of the others", || {
            [0, 2]
                .iter()
                .zip(at_kill)
                .all(|(h, n)| counts[*h].load(Ordering::SeqCst) >= n + 50)
        });
        stop.store(true, Ordering::SeqCst);
        creators
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    // The dead sidecar's proxy keeps serving what it had.
    assert_eq!(
        hosts[1]
            .proxy
            .request("HEAD", &format!("/{before}"), "")
            .status,
        302
    );
    // Every acknowledged link, whichever sidecar took it, is in the store
    // and reaches the proxies of the live sidecars.
    for code in &acknowledged {
        let (status, _) = hosts[0]
            .control
            .request("GET", &format!("/api/v1/links/{code}"), None);
        assert_eq!(status, 200, "acknowledged link {code} is lost");
        for h in [0, 2] {
            eventually(60, "every acknowledged link at the live proxies", || {
                known(&hosts[h].proxy, code)
            });
        }
    }
    // The sidecar comes back on its address; its proxy catches up.
    hosts[1].control = start_control(
        hosts[1]._dir.path(),
        &addrs[1].to_string(),
        &[("SHORTLINE_FDB_PREFIX", &hosts[1].prefix)],
    );
    for code in &acknowledged {
        eventually(
            120,
            "every acknowledged link at the restarted sidecar's proxy",
            || known(&hosts[1].proxy, code),
        );
    }
    eprintln!(
        "{} creates acknowledged around the kill, all kept and served",
        acknowledged.len()
    );
}

#[test]
fn a_sidecar_back_after_the_log_was_pruned_sends_its_proxy_a_snapshot() {
    // No change is kept behind a snapshot, and snapshots follow every change.
    let Some(mut hosts) = hosts_with(
        "the pruned-log restart test",
        2,
        &[
            ("SHORTLINE_CHANGE_LOG_KEEP", "0"),
            ("SHORTLINE_SNAPSHOT_CHANGES_MIN", "1"),
            ("SHORTLINE_SNAPSHOT_INTERVAL_MS", "50"),
        ],
    ) else {
        return;
    };
    let first = hosts[0]
        .control
        .create(json!({"url": "https://example.com/first"}));
    for host in &hosts {
        eventually(60, "the first link at both proxies", || {
            known(&host.proxy, &first)
        });
    }
    let addr = hosts[1].control.addr;
    hosts[1].control.kill();
    let later: Vec<String> = (0..20)
        .map(|i| {
            hosts[0]
                .control
                .create(json!({"url": format!("https://example.com/later/{i}")}))
        })
        .collect();
    // The live sidecar snapshots and prunes the log past the dead one's proxy.
    eventually(60, "the later links at the live proxy", || {
        later.iter().all(|code| known(&hosts[0].proxy, code))
    });
    hosts[1].control = start_control(
        hosts[1]._dir.path(),
        &addr.to_string(),
        &[
            ("SHORTLINE_FDB_PREFIX", &hosts[1].prefix),
            ("SHORTLINE_CHANGE_LOG_KEEP", "0"),
        ],
    );
    eventually(
        120,
        "every later link at the restarted sidecar's proxy",
        || later.iter().all(|code| known(&hosts[1].proxy, code)),
    );
    assert!(
        hosts[1].proxy.metric("proxy_snapshot_sequence") > 0.0,
        "the proxy caught up through a snapshot"
    );
}

/// The folder of a FoundationDB build with `start-local.sh`, for the tests
/// that stop a server of their own.
fn fdb_build(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("SHORTLINE_TEST_FDB_BUILD").map(std::path::PathBuf::from);
    match dir.filter(|d| d.join("start-local.sh").is_file()) {
        Some(dir) if fdb_cluster().is_some() => Some(dir),
        _ => {
            eprintln!(
                "skipped: {test} needs SHORTLINE_TEST_FDB_BUILD (a FoundationDB build with start-local.sh) and SHORTLINE_TEST_FDB_CLUSTER_FILE"
            );
            None
        }
    }
}

#[test]
fn a_store_outage_under_load_fails_no_redirect_and_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(build) = fdb_build("the store outage test") else {
        return;
    };
    // A cluster of its own: stopping the shared one would fail other tests.
    let cluster_dir = tempfile::tempdir().unwrap();
    let started = std::process::Command::new(build.join("start-local.sh"))
        .arg(cluster_dir.path())
        .output()
        .expect("start-local.sh runs");
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let cluster = String::from_utf8_lossy(&started.stdout)
        .lines()
        .last()
        .expect("a cluster file")
        .to_owned();
    let pid: i32 = std::fs::read_to_string(cluster_dir.path().join("fdbserver.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    struct Stop(std::path::PathBuf, String, i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            // SAFETY: a plain signal to the test's own fdbserver.
            unsafe { libc::kill(self.2, libc::SIGCONT) };
            let _ = std::process::Command::new(self.0.join("start-local.sh"))
                .args(["--stop", &self.1])
                .status();
        }
    }
    let _stop = Stop(build.clone(), cluster.clone(), pid);
    let dir = tempfile::tempdir().unwrap();
    let control = start_control(
        dir.path(),
        "127.0.0.1:0",
        &[("SHORTLINE_FDB_CLUSTER_FILE", &cluster)],
    );
    let proxy = start_proxy(dir.path(), control.addr, &[]);
    let known_links: Vec<String> = (0..20)
        .map(|i| control.create(json!({"url": format!("https://example.com/known/{i}")})))
        .collect();
    eventually(60, "the links at the proxy", || {
        known_links.iter().all(|code| known(&proxy, code))
    });
    let outage = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let (acknowledged, refused, redirects) = std::thread::scope(|scope| {
        // Redirects of known links all through, counted per answer.
        let reader = scope.spawn(|| {
            let mut answered = 0u64;
            while !done.load(Ordering::SeqCst) {
                for code in &known_links {
                    let status = proxy.request("HEAD", &format!("/{code}"), "").status;
                    assert_eq!(
                        status, 302,
                        "the proxy failed a known link during the outage"
                    );
                    answered += 1;
                }
            }
            answered
        });
        // Creates all through: acknowledged, or refused with 503 and Retry-After.
        let writer = scope.spawn(|| {
            let (mut acked, mut refused) = (Vec::new(), 0u32);
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                i += 1;
                let mut response = crate::agent()
                    .post(&format!("http://{}/api/v1/links", control.addr))
                    .header("Authorization", &format!("Bearer {}", crate::ADMIN_TOKEN))
                    .send_json(json!({"url": format!("https://example.com/outage/{i}")}))
                    .expect("control answers");
                match response.status().as_u16() {
                    201 => {
                        let link: Value = response.body_mut().read_json().unwrap();
                        acked.push(link["code"].as_str().unwrap().to_owned());
                    }
                    503 => {
                        assert!(
                            response.headers().contains_key("retry-after"),
                            "a 503 says when to retry"
                        );
                        assert!(
                            outage.load(Ordering::SeqCst) || refused > 0,
                            "refused with the store up"
                        );
                        refused += 1;
                    }
                    other => panic!("create answered {other} during the outage"),
                }
            }
            (acked, refused)
        });
        std::thread::sleep(Duration::from_millis(500));
        outage.store(true, Ordering::SeqCst);
        // SAFETY: a plain signal to the test's own fdbserver.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_secs(6));
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        outage.store(false, Ordering::SeqCst);
        // Writes succeed again.
        eventually(120, "creates acknowledged again", || {
            try_create(control.addr, "https://example.com/after-the-outage").is_some()
        });
        done.store(true, Ordering::SeqCst);
        let (acked, refused) = writer.join().unwrap();
        (acked, refused, reader.join().unwrap())
    });
    for code in &acknowledged {
        let (status, _) = control.request("GET", &format!("/api/v1/links/{code}"), None);
        assert_eq!(status, 200, "acknowledged link {code} is lost");
        eventually(60, "every acknowledged link at the proxy", || {
            known(&proxy, code)
        });
    }
    assert!(refused > 0, "the outage refused no create");
    eprintln!(
        "outage of 6 s: {redirects} redirects all answered, {} creates acknowledged, {refused} refused with 503",
        acknowledged.len()
    );
}
