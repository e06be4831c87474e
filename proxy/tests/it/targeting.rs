//! Targeting rules and splits, answered by the proxy from its table: each
//! client goes where the first rule that holds for it says, the others
//! split by weight, and a client keeps its variant by a cookie.

use std::collections::HashMap;

use serde_json::json;
use shortline_common::testing::eventually;

use crate::system;

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
const PIXEL: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
const MAC: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:121.0) Gecko/20100101 Firefox/121.0";

#[test]
fn each_client_goes_where_the_first_rule_that_holds_says() {
    let sys = system(&[], &[]);
    let code = sys.create_visible(json!({
        "url": "https://example.com/default",
        "rules": [
            {"os": ["ios"], "url": "https://apps.example/app"},
            {"os": ["android"], "device": ["mobile", "tablet"], "url": "https://play.example/app"},
            {"language": ["de"], "url": "https://example.com/de"},
            {"query": {"name": "ref", "value": "mail"}, "url": "https://example.com/mail"},
            {"until": "2000-01-01T00:00:00Z", "url": "https://example.com/over"},
        ],
    }));
    let path = format!("/{code}");
    let ask = |path: &str, headers: &str| {
        let answer = sys.proxy.request("GET", path, headers);
        assert_eq!(answer.status, 302, "{answer:?}");
        assert_eq!(answer.header("cache-control"), Some("private, no-store"));
        assert_eq!(answer.header("set-cookie"), None, "no split, no cookie");
        answer.header("location").unwrap().to_owned()
    };
    assert_eq!(
        ask(&path, &format!("User-Agent: {IPHONE}\r\n")),
        "https://apps.example/app"
    );
    assert_eq!(
        ask(&path, &format!("User-Agent: {PIXEL}\r\n")),
        "https://play.example/app"
    );
    assert_eq!(
        ask(
            &path,
            &format!("User-Agent: {MAC}\r\nAccept-Language: fr;q=0.4, de-AT, en;q=0.8\r\n")
        ),
        "https://example.com/de"
    );
    assert_eq!(
        ask(
            &path,
            &format!("User-Agent: {MAC}\r\nAccept-Language: fr, de;q=0.9\r\n")
        ),
        "https://example.com/default",
        "German is not the preferred language"
    );
    assert_eq!(
        ask(&format!("{path}?x=1&ref=mail"), ""),
        "https://example.com/mail"
    );
    assert_eq!(
        ask(&format!("{path}?ref=post"), ""),
        "https://example.com/default"
    );
    assert_eq!(ask(&path, ""), "https://example.com/default");

    // The preview page hides none of the places the link sends clicks.
    let preview = sys.proxy.get(&format!("/{code}+")).body;
    for shown in [
        "system ios: <a href=\"https://apps.example/app\"",
        "device mobile or tablet, system android",
        "language de",
        "query ref=mail",
        "until Sat, 01 Jan 2000",
    ] {
        assert!(preview.contains(shown), "{shown:?} in {preview}");
    }

    // Rules replaced by a patch reach the proxy like any change.
    let (status, out) = sys.control.request(
        "PATCH",
        &format!("/api/v1/links/{code}"),
        Some(json!({"rules": [{"browser": ["firefox"], "url": "https://example.com/fx"}]})),
    );
    assert_eq!(status, 200, "{out}");
    eventually(10, "the new rules to reach the proxy", || {
        sys.proxy
            .request("GET", &path, &format!("User-Agent: {MAC}\r\n"))
            .header("location")
            == Some("https://example.com/fx")
    });
    assert_eq!(
        ask(&path, &format!("User-Agent: {IPHONE}\r\n")),
        "https://example.com/default"
    );
}

#[test]
fn a_split_shares_clicks_by_weight_and_a_client_keeps_its_variant() {
    let sys = system(&[], &[]);
    let code = sys.create_visible(json!({
        "url": "https://example.com/control",
        "variants": [
            {"url": "https://example.com/a", "weight": 1},
            {"url": "https://example.com/b", "weight": 1},
        ],
        "rules": [{"os": ["ios"], "url": "https://apps.example/app"}],
    }));
    let path = format!("/{code}");
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut cookies = Vec::new();
    for _ in 0..200 {
        let answer = sys.proxy.get(&path);
        assert_eq!(answer.status, 302);
        *seen
            .entry(answer.header("location").unwrap().to_owned())
            .or_default() += 1;
        let cookie = answer
            .header("set-cookie")
            .expect("a sticky split places the client");
        assert!(
            cookie.starts_with("sl_v=") && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        cookies.push(cookie.split(';').next().unwrap().to_owned());
    }
    // Half and half: fewer than 60 of 200 on one side is a chance of about
    // one in ten million.
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 60), "{seen:?}");

    // With its cookie, a client goes where it went before, every time,
    // and is not given another.
    for cookie in cookies.iter().take(10) {
        let first = sys
            .proxy
            .request("GET", &path, &format!("Cookie: {cookie}\r\n"));
        for _ in 0..10 {
            let again = sys
                .proxy
                .request("GET", &path, &format!("Cookie: other=1; {cookie}\r\n"));
            assert_eq!(again.header("location"), first.header("location"));
            assert_eq!(again.header("set-cookie"), None);
        }
    }
    let preview = sys.proxy.get(&format!("/{code}+")).body;
    assert!(
        preview.contains("50.0% of visitors: <a href=\"https://example.com/b\""),
        "{preview}"
    );

    // A rule still comes first.
    let iphone = sys
        .proxy
        .request("GET", &path, &format!("User-Agent: {IPHONE}\r\n"));
    assert_eq!(iphone.header("location"), Some("https://apps.example/app"));
    assert_eq!(iphone.header("set-cookie"), None);

    // Not sticky: no cookie, and a cookie does not hold a client.
    let loose = sys.create_visible(json!({
        "url": "https://example.com/control",
        "variants": [
            {"url": "https://example.com/x", "weight": 1},
            {"url": "https://example.com/y", "weight": 1},
        ],
        "sticky_variants": false,
    }));
    let mut places = std::collections::HashSet::new();
    for _ in 0..100 {
        let answer = sys.proxy.request(
            "GET",
            &format!("/{loose}"),
            &format!("Cookie: {}\r\n", cookies[0]),
        );
        assert_eq!(answer.header("set-cookie"), None);
        places.insert(answer.header("location").unwrap().to_owned());
    }
    assert_eq!(places.len(), 2, "{places:?}");
}

/// A country rule holds by the proxy's GeoIP database; a proxy without
/// one never matches it.
#[test]
fn a_country_rule_holds_by_the_proxys_geoip_database() {
    let dir = tempfile::tempdir().unwrap();
    let countries = dir.path().join("countries.mmdb");
    crate::analytics::write_geoip(&countries);
    let geoip = countries.to_str().unwrap();
    let sys = system(
        &[],
        &[
            ("SHORTLINE_GEOIP_DATABASE", geoip),
            ("SHORTLINE_TRUST_FORWARDED_FOR", "true"),
        ],
    );
    let code = sys.create_visible(json!({
        "url": "https://example.com/world",
        "rules": [{"country": ["nz", "AU"], "url": "https://example.co.nz/"}],
    }));
    let from = |address: &str| {
        sys.proxy
            .request(
                "GET",
                &format!("/{code}"),
                &format!("X-Forwarded-For: {address}\r\n"),
            )
            .header("location")
            .unwrap()
            .to_owned()
    };
    assert_eq!(from("203.0.113.9"), "https://example.co.nz/");
    assert_eq!(from("198.51.100.9"), "https://example.com/world", "DE");
    assert_eq!(from("192.0.2.1"), "https://example.com/world", "unknown");

    let bare = system(&[], &[("SHORTLINE_TRUST_FORWARDED_FOR", "true")]);
    let code = bare.create_visible(json!({
        "url": "https://example.com/world",
        "rules": [{"country": ["NZ"], "url": "https://example.co.nz/"}],
    }));
    let answer = bare.proxy.request(
        "GET",
        &format!("/{code}"),
        "X-Forwarded-For: 203.0.113.9\r\n",
    );
    assert_eq!(answer.header("location"), Some("https://example.com/world"));

    // A database that is not one stops the proxy with a clear error.
    let junk = dir.path().join("junk.mmdb");
    std::fs::write(&junk, b"not a database").unwrap();
    let refused = std::process::Command::new(crate::target_dir_binary("shortline-proxy"))
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir.path())
        .env("SHORTLINE_GEOIP_DATABASE", &junk)
        .env("SHORTLINE_PROXY_LISTEN", "127.0.0.1:0")
        .env("SHORTLINE_PROXY_METRICS_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("cannot open the GeoIP database"), "{said}");
}

/// Analytics counts a routed link's human clicks by where they went: each
/// rule, each variant, and the link's own target.
#[test]
fn stats_count_clicks_per_rule_and_per_variant() {
    let sys = system(&[], &[]);
    let code = sys.create_visible(json!({
        "url": "https://example.com/control",
        "rules": [
            {"os": ["ios"], "url": "https://apps.example/app"},
            {"query": {"name": "plain"}, "url": "https://example.com/q"},
        ],
        "variants": [
            {"url": "https://example.com/a", "weight": 1},
            {"url": "https://example.com/b", "weight": 1},
        ],
    }));
    let path = format!("/{code}");
    let mut sent: HashMap<String, u64> = HashMap::new();
    for (agent, path, clicks) in [
        (IPHONE, path.clone(), 7),
        (MAC, path.clone(), 20),
        (PIXEL, format!("{path}?plain"), 3),
    ] {
        for _ in 0..clicks {
            let answer = sys
                .proxy
                .request("GET", &path, &format!("User-Agent: {agent}\r\n"));
            let place = match answer.header("location").unwrap() {
                "https://apps.example/app" => "rule 1",
                "https://example.com/q" => "rule 2",
                "https://example.com/a" => "variant 1",
                "https://example.com/b" => "variant 2",
                other => panic!("{other}"),
            };
            *sent.entry(place.to_owned()).or_default() += 1;
        }
    }
    let stats = |sys: &crate::System| {
        let (status, body) =
            sys.control
                .request("GET", &format!("/api/v1/links/{code}/stats"), None);
        assert_eq!(status, 200, "{body}");
        body
    };
    eventually(60, "every click counted", || {
        stats(&sys)["human_clicks"] == 30
    });
    let counted: HashMap<String, u64> = stats(&sys)["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["value"].as_str().unwrap().to_owned(),
                c["clicks"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counted, sent);
    assert_eq!(counted["rule 1"], 7);
    assert_eq!(counted["rule 2"], 3);

    // A plain link has no routes.
    let plain = sys.create_visible(json!({"url": "https://example.com/plain"}));
    sys.proxy.request(
        "GET",
        &format!("/{plain}"),
        &format!("User-Agent: {MAC}\r\n"),
    );
    eventually(60, "the plain click counted", || {
        let (_, body) = sys
            .control
            .request("GET", &format!("/api/v1/links/{plain}/stats"), None);
        body["human_clicks"] == 1 && body["routes"] == json!([])
    });
}
