//! The stats endpoints' access rules and input checks, and the click ingest
//! endpoint's refusals and de-duplication.

use serde_json::json;
use shortline_store::clickwire::{CONTENT_TYPE, Encoder};

use crate::{assert_problem, start};

#[test]
fn stats_are_for_the_owner_and_admins_only() {
    let control = start();
    let alice = control.new_key("alice", "user");
    let bob = control.new_key("bob", "user");
    let link = control.request(
        "POST",
        "/api/v1/links",
        Some(&alice),
        Some(&json!({"url": "https://example.com/mine"})),
    );
    assert_eq!(link.status, 201, "{link:?}");
    let path = format!(
        "/api/v1/links/{}/stats",
        link.body["code"].as_str().unwrap()
    );
    let own = control.request("GET", &path, Some(&alice), None);
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(own.body["total_clicks"], 0);
    assert_eq!(own.body["granularity"], "day");
    assert_eq!(control.get(&path).status, 200, "admins see every link");
    assert_problem(&control.request("GET", &path, Some(&bob), None), 404, None);
    assert_problem(&control.request("GET", &path, None, None), 401, None);
    assert_problem(&control.get("/api/v1/links/nosuchcode/stats"), 404, None);
    assert_problem(
        &control.request("GET", "/api/v1/stats/top", Some(&alice), None),
        403,
        None,
    );
    let top = control.get("/api/v1/stats/top");
    assert_eq!(top.status, 200, "{top:?}");
    assert_eq!(top.body["items"], json!([]));
}

#[test]
fn bad_periods_are_refused_with_the_field() {
    let control = start();
    let code = control.create(json!({"url": "https://example.com/p"}))["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let stats = |query: &str| control.get(&format!("/api/v1/links/{code}/stats{query}"));
    assert_problem(&stats("?granularity=week"), 422, Some("query"));
    assert_problem(&stats("?from=yesterday"), 422, Some("from"));
    assert_problem(
        &stats("?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
        422,
        Some("from"),
    );
    assert_problem(
        &stats("?granularity=hour&from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
        422,
        Some("from"),
    );
    assert_problem(&stats("?colour=blue"), 422, Some("query"));
    let ok = stats("?granularity=hour&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body["series"], json!([]));
    assert_problem(
        &control.get("/api/v1/stats/top?limit=0"),
        422,
        Some("limit"),
    );
    assert_problem(
        &control.get("/api/v1/stats/top?from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
        422,
        Some("from"),
    );
}

#[test]
fn click_batches_are_checked_and_counted_once() {
    let control = start();
    let url = control.url("/internal/v1/clicks");
    let token = format!("Bearer {}", control.internal_token());
    let agent = crate::agent();
    let post = |content_type: &str, auth: Option<&str>, body: &[u8]| {
        let mut request = agent.post(&url).header("Content-Type", content_type);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let mut response = request.send(body).unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
        )
    };
    let mut encoder = Encoder::new();
    encoder.push(999_999, 1_700_000_000_000, false, None, b"curl/8", b"");
    let batch = encoder.finish("proxy-test", 1);
    assert_eq!(post(CONTENT_TYPE, None, &batch).0, 401);
    assert_eq!(post("application/json", Some(&token), b"{}").0, 415);
    let (status, problem) = post(CONTENT_TYPE, Some(&token), b"SLCB\x01garbage");
    assert_eq!(
        (status, problem["field"].as_str()),
        (422, Some("body")),
        "{problem}"
    );
    let (status, first) = post(CONTENT_TYPE, Some(&token), &batch);
    assert_eq!(status, 200, "{first}");
    assert_eq!(first, json!({"accepted": 1, "duplicate": false}));
    let (status, again) = post(CONTENT_TYPE, Some(&token), &batch);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, json!({"accepted": 1, "duplicate": true}));
}
