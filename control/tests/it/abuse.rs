//! Abuse protection end to end: the blocklist (refusal and retroactive
//! flags), the threat list file (refusal, reload, re-check), reports and the
//! moderation queue, anonymous creation and the rate limits.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Control, assert_problem, start, start_with};

fn link_status(control: &Control, code: &str) -> (String, Option<String>) {
    let answer = control.get(&format!("/api/v1/links/{code}"));
    assert_eq!(answer.status, 200, "{answer:?}");
    (
        answer.body["status"].as_str().unwrap().to_owned(),
        answer.body["flag_reason"].as_str().map(str::to_owned),
    )
}

fn code_of(created: &Value) -> String {
    created["code"].as_str().unwrap().to_owned()
}

fn wait_for(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    // At least a minute: a busy two-core machine is slow, not broken.
    let deadline = Instant::now() + Duration::from_secs(seconds.max(60));
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn blocklist_refuses_and_flags_retroactively() {
    let control = start();
    let alice = control.new_key("alice", "user");
    let apex = code_of(&control.create(json!({"url": "https://evil.example/a"})));
    let deep = code_of(&control.create(json!({"url": "https://login.www.evil.example/b"})));
    let near = code_of(&control.create(json!({"url": "https://notevil.example/c"})));
    let disabled = code_of(&control.create(json!({"url": "https://cdn.evil.example/d"})));
    let patched = control.request(
        "PATCH",
        &format!("/api/v1/links/{disabled}"),
        Some(&control.token),
        Some(&json!({"status": "disabled"})),
    );
    assert_eq!(patched.status, 200);
    let alices = control.request(
        "POST",
        "/api/v1/links",
        Some(&alice),
        Some(&json!({"url": "https://shop.evil.example/"})),
    );
    assert_eq!(alices.status, 201);
    let alices = code_of(&alices.body);

    // Users cannot touch the blocklist.
    assert_problem(
        &control.request("PUT", "/api/v1/blocklist/evil.example", Some(&alice), None),
        403,
        None,
    );
    let put = control.request(
        "PUT",
        "/api/v1/blocklist/EVIL.example.",
        Some(&control.token),
        Some(&json!({"reason": "phishing kit"})),
    );
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(put.body["domain"], "evil.example");
    assert_eq!(put.body["reason"], "phishing kit");
    let swept = |control: &Control| {
        let mut entry = Value::Null;
        wait_for(60, "the sweep", || {
            entry = control.get("/api/v1/blocklist/evil.example").body;
            entry["sweep"]["state"] == "done"
        });
        entry["sweep"]["links_flagged"].clone()
    };
    assert_eq!(swept(&control), 3, "apex, deep and alice's");
    // A disabled link is not redirected, so it stays as it is...
    assert_eq!(link_status(&control, &disabled), ("disabled".into(), None));
    // ...and cannot be activated while its domain is blocked.
    assert_problem(
        &control.request(
            "PATCH",
            &format!("/api/v1/links/{disabled}"),
            Some(&control.token),
            Some(&json!({"status": "active"})),
        ),
        422,
        Some("status"),
    );
    for code in [&apex, &deep, &alices] {
        assert_eq!(
            link_status(&control, code),
            ("flagged".into(), Some("blocklist:evil.example".into())),
            "{code}"
        );
    }
    assert_eq!(link_status(&control, &near).0, "active");
    // Putting it again replaces the entry and flags nothing new.
    let again = control.request(
        "PUT",
        "/api/v1/blocklist/evil.example",
        Some(&control.token),
        None,
    );
    assert_eq!(again.status, 200);
    assert_eq!(swept(&control), 0);
    assert_eq!(again.body["reason"], Value::Null);

    // New links and updates to the domain are refused.
    for url in ["https://evil.example/", "http://a.b.evil.example:8080/x"] {
        let refused = control.post("/api/v1/links", json!({ "url": url }));
        assert_problem(&refused, 422, Some("url"));
        assert!(
            refused.body["detail"]
                .as_str()
                .unwrap()
                .contains("evil.example is blocked")
        );
    }
    assert_problem(
        &control.request(
            "PATCH",
            &format!("/api/v1/links/{near}"),
            Some(&control.token),
            Some(&json!({"url": "https://x.evil.example/"})),
        ),
        422,
        Some("url"),
    );
    // The owner cannot lift the flag; an admin can.
    assert_problem(
        &control.request(
            "PATCH",
            &format!("/api/v1/links/{alices}"),
            Some(&alice),
            Some(&json!({"status": "active"})),
        ),
        403,
        None,
    );

    let listed = control.get("/api/v1/blocklist");
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(control.get("/api/v1/blocklist/evil.example").status, 200);
    assert_problem(&control.get("/api/v1/blocklist/other.example"), 404, None);
    assert_problem(
        &control.request(
            "PUT",
            "/api/v1/blocklist/https:%2F%2Fx.example%2F",
            Some(&control.token),
            None,
        ),
        422,
        Some("domain"),
    );

    // A narrower entry keeps its links flagged when the wider one goes.
    let narrow = control.request(
        "PUT",
        "/api/v1/blocklist/www.evil.example",
        Some(&control.token),
        None,
    );
    assert_eq!(narrow.status, 201);
    let removed = control.request(
        "DELETE",
        "/api/v1/blocklist/evil.example",
        Some(&control.token),
        None,
    );
    assert_eq!(removed.status, 204);
    // The flags are lifted in the background, within about a second here.
    wait_for(60, "the flags lifted", || {
        link_status(&control, &apex) == ("active".into(), None)
    });
    assert_eq!(link_status(&control, &alices), ("active".into(), None));
    assert_eq!(link_status(&control, &disabled), ("disabled".into(), None));
    assert_eq!(
        link_status(&control, &deep),
        ("flagged".into(), Some("blocklist:www.evil.example".into()))
    );
    assert_problem(
        &control.request(
            "DELETE",
            "/api/v1/blocklist/evil.example",
            Some(&control.token),
            None,
        ),
        404,
        None,
    );
    // The domain is accepted again.
    assert_eq!(
        control
            .post("/api/v1/links", json!({"url": "https://evil.example/"}))
            .status,
        201
    );
}

fn hash_line(expression: &str, bytes: usize) -> String {
    Sha256::digest(expression.as_bytes())[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn threat_list_refuses_reloads_and_rechecks() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("threats.txt");
    std::fs::write(
        &list,
        format!("# exact\n{}\n", hash_line("bad.example/phish.html", 32)),
    )
    .unwrap();
    let list_text = list.to_str().unwrap();
    let control = start_with(&[
        ("SHORTLINE_THREAT_LIST", list_text),
        ("SHORTLINE_THREAT_LIST_POLL_MS", "100"),
    ]);
    for url in [
        "https://bad.example/phish.html",
        "http://www.BAD.example/%70hish.html",
        "https://bad.example/./x/../phish.html",
    ] {
        let refused = control.post("/api/v1/links", json!({ "url": url }));
        assert_problem(&refused, 422, Some("url"));
        assert!(
            refused.body["detail"]
                .as_str()
                .unwrap()
                .contains("threat list"),
            "{refused:?}"
        );
    }
    assert_eq!(
        control
            .post(
                "/api/v1/links",
                json!({"url": "https://bad.example/fine.html"})
            )
            .status,
        201
    );
    let later = code_of(&control.create(json!({"url": "https://later.example/download/app.exe"})));
    let other = code_of(&control.create(json!({"url": "https://other.example/"})));

    // The feed adds a whole host (a 4-byte prefix): the stored link is flagged.
    let with_host = format!(
        "{}\n{}\n",
        hash_line("bad.example/phish.html", 32),
        hash_line("later.example/", 4)
    );
    std::fs::write(&list, &with_host).unwrap();
    wait_for(10, "the stored link to be flagged", || {
        link_status(&control, &later).0 == "flagged"
    });
    assert_eq!(
        link_status(&control, &later).1.as_deref(),
        Some("threat_list")
    );
    // Not even an admin can put it back while it matches.
    assert_problem(
        &control.request(
            "PATCH",
            &format!("/api/v1/links/{later}"),
            Some(&control.token),
            Some(&json!({"status": "active"})),
        ),
        422,
        Some("status"),
    );
    assert_eq!(link_status(&control, &other).0, "active");
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://later.example/other"}),
        ),
        422,
        Some("url"),
    );

    // A malformed file is rejected and the loaded list stays in force.
    std::fs::write(&list, "not hex at all\n").unwrap();
    wait_for(60, "the malformed reload to be counted as rejected", || {
        control
            .get("/metrics")
            .body
            .as_str()
            .unwrap()
            .contains("control_threat_list_reloads_total{outcome=\"rejected\"}")
    });
    assert_problem(
        &control.post("/api/v1/links", json!({"url": "https://later.example/x"})),
        422,
        Some("url"),
    );

    // The host leaves the feed: its flag is lifted.
    std::fs::write(
        &list,
        format!("{}\n", hash_line("bad.example/phish.html", 32)),
    )
    .unwrap();
    wait_for(10, "the flag to be lifted", || {
        link_status(&control, &later) == ("active".into(), None)
    });
    assert_eq!(
        control
            .post("/api/v1/links", json!({"url": "https://later.example/x"}))
            .status,
        201
    );
}

#[test]
fn a_missing_or_malformed_threat_list_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_shortline-control");
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "0011\n").unwrap();
    for (path, needle) in [
        (dir.path().join("absent.txt"), "threat_list"),
        (bad.clone(), "line 1"),
    ] {
        let out = std::process::Command::new(bin)
            .arg("serve")
            .env_clear()
            .env("SHORTLINE_DATA_DIR", dir.path().join("data"))
            .env("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0")
            .env("SHORTLINE_THREAT_LIST", &path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{stderr}");
    }
}

#[test]
fn reports_are_queued_and_resolved() {
    let control = start_with(&[
        ("SHORTLINE_RATE_LIMIT_REPORT_PER_MINUTE", "100"),
        ("SHORTLINE_REPORTS_OPEN_MAX", "4"),
    ]);
    let alice = control.new_key("alice", "user");
    let phish = code_of(&control.create(json!({"url": "https://phish.example/"})));
    let spam = code_of(&control.create(json!({"url": "https://spam.example/"})));
    let fine = code_of(&control.create(json!({"url": "https://fine.example/"})));

    let report = |code: &str, body: Value| {
        control.request(
            "POST",
            &format!("/api/v1/links/{code}/report"),
            None,
            Some(&body),
        )
    };
    let first = report(
        &phish,
        json!({"category": "phishing", "comment": "asks for my bank login"}),
    );
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(first.body["state"], "open");
    let first_id = first.body["id"].as_str().unwrap().to_owned();
    assert_eq!(report(&phish, json!({"category": "malware"})).status, 202);
    assert_eq!(report(&spam, json!({"category": "spam"})).status, 202);
    assert_eq!(report(&fine, json!({"category": "other"})).status, 202);
    // The queue holds four: the fifth waits.
    assert_problem(&report(&fine, json!({"category": "other"})), 503, None);
    assert_problem(
        &report("nosuchcode", json!({"category": "spam"})),
        404,
        None,
    );
    assert_problem(
        &report("bad%20code", json!({"category": "spam"})),
        404,
        None,
    );
    assert_problem(
        &report(&fine, json!({"category": "lies"})),
        422,
        Some("category"),
    );
    assert_problem(
        &report(
            &fine,
            json!({"category": "other", "comment": "x".repeat(2001)}),
        ),
        422,
        Some("comment"),
    );

    // Only admins see the queue.
    assert_problem(
        &control.request("GET", "/api/v1/reports", Some(&alice), None),
        403,
        None,
    );
    let queue = control.get("/api/v1/reports");
    assert_eq!(queue.status, 200);
    let items = queue.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["id"], first_id.as_str(), "oldest first");
    assert_eq!(items[0]["comment"], "asks for my bank login");
    let paged = control.get("/api/v1/reports?limit=3");
    assert_eq!(paged.body["items"].as_array().unwrap().len(), 3);
    let cursor = paged.body["next_cursor"].as_str().unwrap();
    let rest = control.get(&format!("/api/v1/reports?limit=3&cursor={cursor}"));
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["next_cursor"], Value::Null);

    let resolve = |id: &str, action: &str| {
        control.request(
            "POST",
            &format!("/api/v1/reports/{id}/resolve"),
            Some(&control.token),
            Some(&json!({ "action": action })),
        )
    };
    // Flagging resolves both reports of the link.
    let flagged = resolve(&first_id, "flag");
    assert_eq!(flagged.status, 200, "{flagged:?}");
    assert_eq!(flagged.body["reports_resolved"], 2);
    assert_eq!(flagged.body["report"]["action"], "flag");
    assert_eq!(
        link_status(&control, &phish),
        ("flagged".into(), Some("report".into()))
    );
    assert_problem(&resolve(&first_id, "dismiss"), 409, None);
    assert_problem(&resolve("000000000000ffffffff", "dismiss"), 404, None);

    let open = control.get("/api/v1/reports").body["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(open.len(), 2);
    let id_of = |code: &str| {
        open.iter().find(|r| r["code"] == code).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(resolve(&id_of(&spam), "disable").status, 200);
    assert_eq!(link_status(&control, &spam).0, "disabled");
    assert_eq!(resolve(&id_of(&fine), "dismiss").status, 200);
    assert_eq!(link_status(&control, &fine).0, "active");
    assert_eq!(
        control.get("/api/v1/reports").body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        control.get("/api/v1/reports?state=all").body["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_problem(
        &control.get("/api/v1/reports?state=closed"),
        422,
        Some("state"),
    );
    // The queue has room again.
    assert_eq!(report(&fine, json!({"category": "other"})).status, 202);
}

#[test]
fn reports_are_rate_limited_per_address() {
    let control = start_with(&[("SHORTLINE_RATE_LIMIT_REPORT_PER_MINUTE", "3")]);
    let code = code_of(&control.create(json!({"url": "https://x.example/"})));
    let path = format!("/api/v1/links/{code}/report");
    for _ in 0..3 {
        assert_eq!(
            control
                .request("POST", &path, None, Some(&json!({"category": "spam"})))
                .status,
            202
        );
    }
    let limited = control.request("POST", &path, None, Some(&json!({"category": "spam"})));
    assert_problem(&limited, 429, None);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

#[test]
fn anonymous_creation_is_off_by_default_and_limited_when_on() {
    let off = start();
    assert_problem(
        &off.request(
            "POST",
            "/api/v1/links",
            None,
            Some(&json!({"url": "https://x.example/"})),
        ),
        401,
        None,
    );
    drop(off);

    let on = start_with(&[
        ("SHORTLINE_ANONYMOUS_CREATE", "true"),
        ("SHORTLINE_RATE_LIMIT_ANONYMOUS_PER_MINUTE", "3"),
    ]);
    let made = on.request(
        "POST",
        "/api/v1/links",
        None,
        Some(&json!({"url": "https://x.example/"})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(made.body["owner"], "anonymous");
    assert_problem(
        &on.request(
            "POST",
            "/api/v1/links",
            None,
            Some(&json!({"url": "https://x.example/", "alias": "mine"})),
        ),
        403,
        None,
    );
    // Validation applies as for everyone (and every attempt counts).
    assert_problem(
        &on.request(
            "POST",
            "/api/v1/links",
            None,
            Some(&json!({"url": "javascript:alert(1)"})),
        ),
        422,
        Some("url"),
    );
    let limited = on.request(
        "POST",
        "/api/v1/links",
        None,
        Some(&json!({"url": "https://y.example/"})),
    );
    assert_problem(&limited, 429, None);
    assert!(limited.header("retry-after").is_some());
    // A bad key is still refused rather than treated as anonymous.
    assert_problem(
        &on.request(
            "POST",
            "/api/v1/links",
            Some("sl_wrong_wrong_wrong"),
            Some(&json!({"url": "https://x.example/"})),
        ),
        401,
        None,
    );
    // No user key may take over the anonymous owner's links.
    assert_problem(
        &on.post(
            "/api/v1/keys",
            json!({"name": "squatter", "role": "user", "owner": "anonymous"}),
        ),
        422,
        Some("owner"),
    );
}

#[test]
fn rate_limits_are_per_role() {
    let control = start_with(&[("SHORTLINE_RATE_LIMIT_USER_PER_SECOND", "1")]);
    let user = control.new_key("u", "user");
    // A user key has a burst of two seconds' worth, then waits.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let answer = control.request(
            "POST",
            "/api/v1/links",
            Some(&user),
            Some(&json!({"url": format!("https://x.example/{i}")})),
        );
        if answer.status == 429 {
            assert!(answer.header("retry-after").is_some());
        }
        statuses.push(answer.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // The admin key has its own, larger allowance.
    for i in 0..20 {
        assert_eq!(
            control
                .post(
                    "/api/v1/links",
                    json!({"url": format!("https://y.example/{i}")})
                )
                .status,
            201
        );
    }
}

/// A blocklist entry over many links answers within about a second with how
/// far its sweep got, and the sweep goes on in the background; killed
/// mid-sweep, control resumes it at start-up from where it stopped, and
/// every covered link ends flagged, counted once.
#[test]
fn a_long_blocklist_sweep_runs_in_the_background_and_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut control = crate::start_in(dir.path(), &[]);
    let total = 6_000;
    let mut codes = Vec::new();
    for batch in 0..total / 1000 {
        let links: Vec<Value> = (0..1000)
            .map(|i| json!({"url": format!("https://h{}.spam.example/{batch}/{i}", i % 7)}))
            .collect();
        let answer = control.post("/api/v1/links/batch", json!({ "links": links }));
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            answer.body["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == 201)
        );
        codes.extend(
            answer.body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| code_of(&r["link"])),
        );
    }
    // Every 97th link, spread over the host index's pages.
    let sample: Vec<&String> = codes.iter().step_by(97).collect();
    let spared = code_of(&control.create(json!({"url": "https://spam.example.org/"})));
    let put = control.request(
        "PUT",
        "/api/v1/blocklist/spam.example",
        Some(&control.token),
        None,
    );
    assert_eq!(put.status, 201, "{put:?}");
    let state = put.body["sweep"]["state"].as_str().unwrap().to_owned();
    assert!(state == "running" || state == "done", "{put:?}");
    assert_eq!(
        put.body["links_flagged"],
        put.body["sweep"]["links_flagged"]
    );
    // Killed at once: whatever pages were not committed are left to the
    // restart.
    control.kill();
    let control = crate::start_in(dir.path(), &[]);
    wait_for(120, "the sweep to finish", || {
        control.get("/api/v1/blocklist/spam.example").body["sweep"]["state"] == "done"
    });
    let entry = control.get("/api/v1/blocklist/spam.example");
    assert_eq!(entry.body["sweep"]["links_flagged"], total, "{entry:?}");
    for code in &sample {
        assert_eq!(
            link_status(&control, code),
            ("flagged".into(), Some("blocklist:spam.example".into())),
            "{code}"
        );
    }
    assert_eq!(link_status(&control, &spared).0, "active");

    // Removing it lifts every flag, in the background too.
    let removed = control.request(
        "DELETE",
        "/api/v1/blocklist/spam.example",
        Some(&control.token),
        None,
    );
    assert_eq!(removed.status, 204);
    wait_for(120, "every flag lifted", || {
        sample
            .iter()
            .all(|code| link_status(&control, code).0 == "active")
    });
}

/// The re-check of every link runs once per list: a restart with the same
/// list (written in another order, with a comment) does not run it again,
/// and a changed list does.
#[test]
fn the_threat_recheck_runs_once_per_list_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let list = dir.path().join("threats.txt");
    let a = hash_line("a.example/", 4);
    let b = hash_line("b.example/", 4);
    std::fs::write(&list, format!("{a}\n{b}\n")).unwrap();
    let list_text = list.to_str().unwrap().to_owned();
    let env = [("SHORTLINE_THREAT_LIST", list_text.as_str())];
    let rechecks = |control: &Control, outcome: &str| {
        control.metric(&format!(
            "control_threat_list_rechecks_total{{outcome=\"{outcome}\"}}"
        ))
    };
    let mut control = crate::start_in(&data, &env);
    let kept = code_of(&control.create(json!({"url": "https://c.example/"})));
    wait_for(60, "the first re-check", || {
        rechecks(&control, "finished") == 1.0
    });
    control.kill();

    std::fs::write(&list, format!("# same set\n{b}\n{a}\n{a}\n")).unwrap();
    let mut control = crate::start_in(&data, &env);
    wait_for(60, "the re-check to be skipped", || {
        rechecks(&control, "unchanged") == 1.0
    });
    assert_eq!(rechecks(&control, "finished"), 0.0);
    control.kill();

    std::fs::write(&list, format!("{a}\n{}\n", hash_line("c.example/", 4))).unwrap();
    let control = crate::start_in(&data, &env);
    wait_for(60, "a re-check against the new list", || {
        rechecks(&control, "finished") == 1.0
    });
    assert_eq!(link_status(&control, &kept).0, "flagged");
}
