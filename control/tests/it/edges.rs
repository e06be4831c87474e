//! Rough edges a newcomer met in the first hour, each pinned down.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{ADMIN_TOKEN, assert_problem, start, start_with};

/// RFC 3339 in UTC to the second, as every time in the API is written.
fn assert_seconds_precision(what: &str, value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    let bytes = text.as_bytes();
    let shape_ok = text.len() == 20
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[19] == b'Z'
        && text
            .bytes()
            .enumerate()
            .all(|(i, b)| matches!(i, 4 | 7 | 10 | 13 | 16 | 19) || b.is_ascii_digit());
    assert!(shape_ok, "{what} is not YYYY-MM-DDTHH:MM:SSZ: {text}");
}

#[test]
fn the_root_and_the_api_base_say_where_things_are() {
    let control = start();
    for path in ["/", "/api/v1"] {
        let answer = control.request("GET", path, None, None);
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert_eq!(answer.body["openapi"], "/api/v1/openapi.json", "{answer:?}");
        assert_eq!(answer.body["api"], "/api/v1", "{answer:?}");
        assert!(answer.body["short_links"].is_string(), "{answer:?}");
    }
}

#[test]
fn an_error_names_its_field_once() {
    let control = start();
    let bad_role = control.post("/api/v1/keys", json!({"name": "x", "role": "boss"}));
    assert_problem(&bad_role, 422, Some("role"));
    let detail = bad_role.body["detail"].as_str().unwrap();
    assert_eq!(detail.matches("role:").count(), 1, "{detail}");
    assert!(detail.contains("unknown variant"), "{detail}");

    let bad_item = control.post("/api/v1/links/batch", json!({"links": [1]}));
    assert_problem(&bad_item, 422, Some("links[0]"));
    let detail = bad_item.body["detail"].as_str().unwrap();
    assert_eq!(detail.matches("links[0]:").count(), 1, "{detail}");
}

#[test]
fn an_expired_link_says_so_before_the_sweep() {
    // No sweep for an hour: only the answer's own check can say "expired".
    let control = start_with(&[("SHORTLINE_SWEEP_INTERVAL_MS", "3600000")]);
    let link = control.create(json!({"url": "https://example.com/brief", "ttl_seconds": 1}));
    let path = format!("/api/v1/links/{}", link["code"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = control.get(&path);
        if now.body["status"] == "expired" {
            break;
        }
        assert_eq!(now.body["status"], "active", "{now:?}");
        assert!(Instant::now() < deadline, "never shown as expired: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn patch_takes_ttl_seconds_as_create_does() {
    let control = start();
    let link = control.create(json!({"url": "https://example.com/ttl"}));
    let path = format!("/api/v1/links/{}", link["code"].as_str().unwrap());
    let patch = |body: Value| control.request("PATCH", &path, Some(ADMIN_TOKEN), Some(&body));

    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let set = patch(json!({"ttl_seconds": 3600}));
    assert_eq!(set.status, 200, "{set:?}");
    let expires = time::OffsetDateTime::parse(
        set.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(
        (before + 3600..=before + 3600 + 600).contains(&expires),
        "{set:?}"
    );
    assert_problem(
        &patch(json!({"ttl_seconds": 60, "expires_at": "2999-01-01T00:00:00Z"})),
        422,
        Some("ttl_seconds"),
    );
    assert_problem(&patch(json!({"ttl_seconds": 0})), 422, Some("ttl_seconds"));
    let cleared = patch(json!({"expires_at": null}));
    assert_eq!(cleared.status, 200, "{cleared:?}");
    assert!(cleared.body["expires_at"].is_null(), "{cleared:?}");
}

#[test]
fn times_are_to_the_second_and_authors_are_named() {
    let control = start();
    let link = control.create(json!({"url": "https://example.com/times"}));
    assert_seconds_precision("link created_at", &link["created_at"]);

    let put = control.request(
        "PUT",
        "/api/v1/blocklist/evil.example",
        Some(ADMIN_TOKEN),
        Some(&json!({"reason": "first"})),
    );
    assert_eq!(put.status, 201, "{put:?}");
    assert_seconds_precision("blocklist created_at", &put.body["created_at"]);
    assert_eq!(put.body["created_by"], "bootstrap admin", "{put:?}");

    // Replaced by another admin: the reason changes, the origin stays.
    let second = control.new_key("second admin", "admin");
    let again = control.request(
        "PUT",
        "/api/v1/blocklist/evil.example",
        Some(&second),
        Some(&json!({"reason": "second"})),
    );
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["reason"], "second", "{again:?}");
    assert_eq!(again.body["created_by"], "bootstrap admin", "{again:?}");
    assert_eq!(
        again.body["created_at"], put.body["created_at"],
        "{again:?}"
    );

    let code = link["code"].as_str().unwrap();
    let filed = control.request(
        "POST",
        &format!("/api/v1/links/{code}/report"),
        None,
        Some(&json!({"category": "spam"})),
    );
    assert_eq!(filed.status, 202, "{filed:?}");
    let id = filed.body["id"].as_str().unwrap();
    let resolve = |token: &str| {
        control.request(
            "POST",
            &format!("/api/v1/reports/{id}/resolve"),
            Some(token),
            Some(&json!({"action": "dismiss"})),
        )
    };
    let resolved = resolve(&second);
    assert_eq!(resolved.status, 200, "{resolved:?}");
    let report = &resolved.body["report"];
    assert_seconds_precision("report created_at", &report["created_at"]);
    assert_seconds_precision("report resolved_at", &report["resolved_at"]);
    assert_eq!(report["resolved_by"], "second admin", "{resolved:?}");
    let twice = resolve(ADMIN_TOKEN);
    assert_problem(&twice, 409, Some("id"));
    assert!(
        twice.body["detail"]
            .as_str()
            .unwrap()
            .ends_with("is already resolved (dismissed)"),
        "{twice:?}"
    );
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("control.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shortline-control"))
        .arg("serve")
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir.path().join("data"))
        .env("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0")
        .env("SHORTLINE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("control did not start")
        .starts_with("control listening on ")
    {}
    // SAFETY: kill(2) on our own child's pid with a valid signal.
    unsafe {
        libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("control plane listening"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
}

#[test]
fn times_past_year_9999_in_utc_are_refused() {
    let control = start();
    // Year 9999 in its own offset, year 10000 in UTC: the API could not show it.
    let late = "9999-12-31T23:59:59-23:59";
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "expires_at": late}),
        ),
        422,
        Some("expires_at"),
    );
    let link = control.create(json!({"url": "https://e.com/"}));
    let code = link["code"].as_str().unwrap();
    assert_problem(
        &control.get(&format!("/api/v1/links/{code}/stats?to={late}")),
        422,
        Some("to"),
    );
    assert_problem(
        &control.get(&format!(
            "/api/v1/links/{code}/stats?from=1969-12-31T23:00:00Z"
        )),
        422,
        Some("from"),
    );
    // The last second the API can show is still taken.
    let last =
        control.create(json!({"url": "https://e.com/", "expires_at": "9999-12-31T23:59:59Z"}));
    assert_eq!(last["expires_at"], "9999-12-31T23:59:59Z");
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let control = start();
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let answer = ureq_get(
            &control.url("/api/v1/links"),
            &format!("{scheme} {}", control.token),
        );
        assert_eq!(answer, 200, "{scheme}");
    }
    assert_eq!(
        ureq_get(
            &control.url("/api/v1/links"),
            &format!("Basic {}", control.token)
        ),
        401
    );
}

fn ureq_get(url: &str, authorization: &str) -> u16 {
    crate::agent()
        .get(url)
        .header("Authorization", authorization)
        .call()
        .expect("transport")
        .status()
        .as_u16()
}

#[test]
fn a_malformed_path_is_a_problem_document() {
    let control = start();
    // `%ff` decodes to a byte that is not UTF-8; `%zz` is not an escape at all.
    for path in [
        "/api/v1/links/%ff",
        "/api/v1/links/%ff/stats",
        "/api/v1/blocklist/%c3%28",
    ] {
        let answer = control.get(path);
        assert_problem(&answer, 400, None);
        assert!(
            answer.body["detail"]
                .as_str()
                .unwrap()
                .starts_with("the request path is not valid"),
            "{path}: {answer:?}"
        );
    }
}

#[test]
fn unknown_routes_and_methods_are_problem_documents() {
    let control = start();
    assert_problem(&control.get("/api/v1/nothing-here"), 404, None);
    let answer = control.get("/api/v1/keys/abc");
    assert_problem(&answer, 405, None);
    assert_eq!(answer.header("allow"), Some("DELETE"), "{answer:?}");
}
