//! The REST contract, end to end.

use serde_json::json;

use crate::{assert_problem, start};

#[test]
fn create_get_patch_list_delete() {
    let control = start();
    let link = control.create(json!({
        "url": "https://example.com/a?b=1",
        "tags": ["news", "launch"],
        "title": "Launch post",
        "redirect": 301,
        "forward_query": true,
        "ttl_seconds": 3600,
        "max_clicks": 10
    }));
    let code = link["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 7, "default counter codes are 7 characters");
    assert_eq!(link["short_url"], format!("http://localhost:8080/{code}"));
    assert_eq!(link["url"], "https://example.com/a?b=1");
    assert_eq!(link["redirect"], 301);
    assert_eq!(link["status"], "active");
    assert_eq!(link["forward_query"], true);
    assert_eq!(link["tags"], json!(["launch", "news"]));
    assert_eq!(link["max_clicks"], 10);
    assert_eq!(link["clicks"], 0);
    assert_eq!(link["owner"], "admin");
    assert!(link["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(link["created_at"].as_str().unwrap().ends_with('Z'));

    let fetched = control.get(&format!("/api/v1/links/{code}"));
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, link);

    let patched = control.request(
        "PATCH",
        &format!("/api/v1/links/{code}"),
        Some(&control.token),
        Some(&json!({"url": "https://example.org/new", "status": "disabled", "tags": ["news"], "title": null, "expires_at": null})),
    );
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body["url"], "https://example.org/new");
    assert_eq!(patched.body["status"], "disabled");
    assert_eq!(patched.body["title"], json!(null));
    assert_eq!(patched.body["expires_at"], json!(null));
    assert_eq!(
        patched.body["max_clicks"], 10,
        "absent fields are left alone"
    );

    let by_tag = control.get("/api/v1/links?tag=news");
    assert_eq!(by_tag.body["items"].as_array().unwrap().len(), 1);
    let by_old_tag = control.get("/api/v1/links?tag=launch");
    assert_eq!(
        by_old_tag.body["items"].as_array().unwrap().len(),
        0,
        "the tag index follows patches"
    );

    let deleted = control.request(
        "DELETE",
        &format!("/api/v1/links/{code}"),
        Some(&control.token),
        None,
    );
    assert_eq!(deleted.status, 204);
    assert_problem(&control.get(&format!("/api/v1/links/{code}")), 404, None);
    assert_problem(
        &control.request(
            "DELETE",
            &format!("/api/v1/links/{code}"),
            Some(&control.token),
            None,
        ),
        404,
        None,
    );
}

#[test]
fn list_pages_with_a_cursor_and_filters() {
    let control = start();
    for i in 0..25 {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        control.create(json!({"url": format!("https://example.com/{i}"), "tags": [tag]}));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/links?limit=10&cursor={c}"),
            None => "/api/v1/links?limit=10".to_owned(),
        };
        let page = control.get(&path);
        assert_eq!(page.status, 200, "{page:?}");
        for item in page.body["items"].as_array().unwrap() {
            seen.push(item["code"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages are in code order with no repeats");
    let even = control.get("/api/v1/links?tag=even&limit=100");
    assert_eq!(even.body["items"].as_array().unwrap().len(), 13);
    assert_problem(&control.get("/api/v1/links?limit=0"), 422, Some("limit"));
    assert_problem(
        &control.get("/api/v1/links?limit=100000"),
        422,
        Some("limit"),
    );
    assert_problem(
        &control.get("/api/v1/links?cursor=%2F%2F"),
        422,
        Some("cursor"),
    );
}

#[test]
fn strategies_aliases_and_batches() {
    let control = start();
    let random = control.create(json!({"url": "https://example.com/r", "strategy": "random"}));
    assert_eq!(random["code"].as_str().unwrap().len(), 7);
    let uuid = control.create(json!({"url": "https://example.com/u", "strategy": "uuid"}));
    assert_eq!(uuid["code"].as_str().unwrap().len(), 22);
    let hash = control.create(json!({"url": "https://example.com/h", "strategy": "hash"}));
    let again = control.post(
        "/api/v1/links",
        json!({"url": "https://example.com/h", "strategy": "hash"}),
    );
    assert_eq!(
        again.status, 200,
        "the same URL and owner give the same link"
    );
    assert_eq!(again.body["code"], hash["code"]);
    let alias = control.create(json!({"url": "https://example.com/a", "alias": "My_Alias-1"}));
    assert_eq!(alias["code"], "My_Alias-1");
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://example.com/b", "alias": "My_Alias-1"}),
        ),
        409,
        Some("alias"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "alias": "admin"}),
        ),
        422,
        Some("alias"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "alias": "ab"}),
        ),
        422,
        Some("alias"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "alias": "a b c"}),
        ),
        422,
        Some("alias"),
    );

    // A deleted alias is never handed out again.
    let deleted = control.request(
        "DELETE",
        "/api/v1/links/My_Alias-1",
        Some(&control.token),
        None,
    );
    assert_eq!(deleted.status, 204);
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "alias": "My_Alias-1"}),
        ),
        409,
        Some("alias"),
    );

    let batch = control.post(
        "/api/v1/links/batch",
        json!({"links": [
            {"url": "https://example.com/1"},
            {"url": "ftp://example.com/2"},
            {"url": "https://example.com/3", "alias": "batch-one"},
            {"url": "https://example.com/4", "alias": "batch-one"}
        ]}),
    );
    assert_eq!(batch.status, 200, "{batch:?}");
    let results = batch.body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 422, 201, 409]);
    assert_eq!(results[1]["error"]["field"], "url");
    assert_eq!(results[3]["error"]["field"], "alias");
    assert_eq!(results[2]["link"]["code"], "batch-one");

    let too_many: Vec<_> = (0..1001)
        .map(|i| json!({"url": format!("https://e.com/{i}")}))
        .collect();
    assert_problem(
        &control.post("/api/v1/links/batch", json!({"links": too_many})),
        422,
        Some("links"),
    );
    assert_problem(
        &control.post("/api/v1/links/batch", json!({"links": []})),
        422,
        Some("links"),
    );
}

#[test]
fn health_metrics_and_openapi() {
    let control = start();
    assert_eq!(control.request("GET", "/healthz", None, None).status, 200);
    assert_eq!(control.request("GET", "/readyz", None, None).status, 200);
    control.create(json!({"url": "https://example.com/"}));
    let metrics = control.request("GET", "/metrics", None, None);
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("control_http_requests_total"), "{text}");
    assert!(
        text.contains("control_creates_total{strategy=\"counter\"} 1"),
        "{text}"
    );
    assert!(text.contains("control_store_commit_seconds"), "{text}");
    assert!(text.contains("control_snapshot_build_seconds"), "{text}");
    let doc = control.request("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    assert_eq!(
        doc.body["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    for path in [
        "/api/v1/links",
        "/api/v1/links/{code}",
        "/api/v1/links/batch",
        "/api/v1/keys",
        "/api/v1/keys/{id}",
    ] {
        assert!(
            doc.body["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(
        doc.body["paths"]["/internal/v1/changes"].is_null(),
        "internal endpoints stay off the public API"
    );
    assert!(doc.body["components"]["schemas"]["LinkOut"].is_object());
}

#[test]
fn malformed_requests_are_problems() {
    let control = start();
    assert_problem(
        &control.post("/api/v1/links", json!({"url": 3})),
        422,
        Some("url"),
    );
    assert_problem(&control.post("/api/v1/links", json!({})), 422, Some("url"));
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "colour": "red"}),
        ),
        422,
        Some("colour"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "redirect": 200}),
        ),
        422,
        Some("redirect"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "max_clicks": 0}),
        ),
        422,
        Some("max_clicks"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "ttl_seconds": 0}),
        ),
        422,
        Some("ttl_seconds"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "expires_at": "2001-01-01T00:00:00Z"}),
        ),
        422,
        Some("expires_at"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "expires_at": "tomorrow"}),
        ),
        422,
        Some("expires_at"),
    );
    assert_problem(
        &control.post("/api/v1/links", json!({"url": "https://e.com/", "expires_at": "2099-01-01T00:00:00Z", "ttl_seconds": 5})),
        422,
        Some("ttl_seconds"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "tags": ["a\u{0}b"]}),
        ),
        422,
        Some("tags"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "title": "x".repeat(600)}),
        ),
        422,
        Some("title"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "alias": "abc", "strategy": "random"}),
        ),
        422,
        Some("alias"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://e.com/", "strategy": "dice"}),
        ),
        422,
        Some("strategy"),
    );
    let patch = control.request(
        "PATCH",
        "/api/v1/links/nothing",
        Some(&control.token),
        Some(&json!({"status": "flagged"})),
    );
    assert_problem(&patch, 404, None);
    let link = control.create(json!({"url": "https://e.com/"}));
    let path = format!("/api/v1/links/{}", link["code"].as_str().unwrap());
    let bad_status = control.request(
        "PATCH",
        &path,
        Some(&control.token),
        Some(&json!({"status": "expired"})),
    );
    assert_problem(&bad_status, 422, Some("status"));

    // Not JSON at all.
    let raw = crate::agent()
        .post(&control.url("/api/v1/links"))
        .header("Authorization", &format!("Bearer {}", control.token))
        .header("Content-Type", "application/json")
        .send("{not json")
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    // Larger than the body limit.
    let huge = "x".repeat(5 << 20);
    let raw = crate::agent()
        .post(&control.url("/api/v1/links"))
        .header("Authorization", &format!("Bearer {}", control.token))
        .header("Content-Type", "application/json")
        .send(format!("{{\"url\": \"{huge}\"}}"))
        .map(|r| r.status().as_u16());
    assert!(matches!(raw, Ok(400 | 413) | Err(_)), "{raw:?}");
}

#[test]
fn expired_links_are_swept() {
    let control = start_with_sweep();
    let link = control.create(json!({"url": "https://example.com/soon", "ttl_seconds": 1}));
    let path = format!("/api/v1/links/{}", link["code"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let now = control.get(&path);
        if now.body["status"] == "expired" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not swept: {now:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn start_with_sweep() -> crate::Control {
    crate::start_with(&[("SHORTLINE_SWEEP_INTERVAL_MS", "200")])
}
