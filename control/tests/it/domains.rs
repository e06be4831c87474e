//! Short domains through the API: the first made once from `public_url`,
//! names normalised, settings checked, codes per domain, lists and stats
//! that name the domain.

use serde_json::json;

use crate::{start_in, start_with};

#[test]
fn the_first_domain_is_made_once_and_others_are_checked_and_normalised() {
    let mut control = start_with(&[("SHORTLINE_PUBLIC_URL", "https://acme.link")]);
    let made = control.create(json!({"url": "https://example.com/before", "alias": "before"}));
    assert_eq!(made["short_url"], "https://acme.link/before");
    assert_eq!(made["domain"], "acme.link");

    // A new public_url does not make another first domain.
    control.kill();
    let dir = control.dir.clone();
    let mut control = start_in(
        &dir,
        &[("SHORTLINE_PUBLIC_URL", "http://other.example:9000")],
    );
    let list = control.get("/api/v1/domains");
    assert_eq!(list.status, 200, "{list:?}");
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme.link"]);
    let before = control.get("/api/v1/links/before");
    assert_eq!(
        before.body["short_url"], "https://acme.link/before",
        "{before:?}"
    );

    let idn = control.post("/api/v1/domains", json!({"name": "Bücher.Example."}));
    assert_eq!(idn.status, 201, "{idn:?}");
    assert_eq!(idn.body["name"], "xn--bcher-kva.example");
    assert_eq!(idn.body["display_name"], "bücher.example");
    assert_eq!(idn.body["base_url"], "http://xn--bcher-kva.example");
    let fetched = control.get("/api/v1/domains/B%C3%BCcher.example");
    assert_eq!(fetched.status, 200, "{fetched:?}");
    assert_eq!(control.get("/api/v1/domains/none.example").status, 404);

    for (body, field) in [
        (json!({"name": ""}), "name"),
        (
            json!({"name": "a.example", "hsts_max_age": 999_999_999}),
            "hsts_max_age",
        ),
        (
            json!({"name": "a.example", "root_redirect": "https://acme.link/x"}),
            "root_redirect",
        ),
        (
            json!({"name": "a.example", "not_found_redirect": "javascript:alert(1)"}),
            "not_found_redirect",
        ),
        (json!({"name": "a.example", "colour": "blue"}), ""),
    ] {
        let refused = control.post("/api/v1/domains", body.clone());
        assert_eq!(refused.status, 422, "{body}: {refused:?}");
        assert!(
            refused.body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{refused:?}"
        );
    }
    let patch = |name: &str, body| {
        control.request(
            "PATCH",
            &format!("/api/v1/domains/{name}"),
            Some(&control.token.clone()),
            Some(&body),
        )
    };
    assert_eq!(patch("acme.link", json!({"default": false})).status, 422);
    assert_eq!(
        patch("none.example", json!({"hsts_max_age": 1})).status,
        404
    );
    let cleared = patch(
        "xn--bcher-kva.example",
        json!({"root_redirect": "https://example.com/"}),
    );
    assert_eq!(cleared.body["root_redirect"], "https://example.com/");
    let cleared = patch("xn--bcher-kva.example", json!({"root_redirect": null}));
    assert_eq!(cleared.body["root_redirect"], json!(null), "{cleared:?}");

    // Codes per domain; lists page through scoped codes and name domains.
    for i in 0..3 {
        let link = control.create(json!({
            "url": format!("https://example.com/{i}"),
            "alias": format!("bk{i}"),
            "domain": "bücher.example",
        }));
        assert_eq!(
            link["short_url"],
            format!("http://xn--bcher-kva.example/bk{i}")
        );
    }
    let missing = control.get("/api/v1/links/bk0");
    assert_eq!(missing.status, 404, "bk0 is not on the default domain");
    let whole_key = control.get("/api/v1/links/xn--bcher-kva.example%2Fbk0");
    assert_eq!(
        whole_key.status, 404,
        "a table key is not a way around domain"
    );
    let found = control.get("/api/v1/links/bk0?domain=xn--bcher-kva.example");
    assert_eq!(found.status, 200, "{found:?}");
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = control.get(&format!("/api/v1/links?limit=2{cursor}"));
        assert_eq!(page.status, 200, "{page:?}");
        for item in page.body["items"].as_array().unwrap() {
            seen.push(format!(
                "{}/{}",
                item["domain"].as_str().unwrap(),
                item["code"].as_str().unwrap()
            ));
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={}", urlencode(next)),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "acme.link/before",
            "xn--bcher-kva.example/bk0",
            "xn--bcher-kva.example/bk1",
            "xn--bcher-kva.example/bk2"
        ]
    );
    let stats = control.get("/api/v1/links/bk1/stats?domain=bücher.example");
    assert_eq!(
        (stats.status, &stats.body["domain"], &stats.body["code"]),
        (200, &json!("xn--bcher-kva.example"), &json!("bk1")),
        "{stats:?}"
    );
    let bad = control.get("/api/v1/links/bk1?domain=not%20a%20domain");
    assert_eq!(bad.status, 422, "{bad:?}");
    control.kill();
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
