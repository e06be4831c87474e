//! Click analytics end to end: a known mix of browsers, bots, preview
//! fetchers, HEAD requests, referrers and countries through the proxy, and
//! the exact counts back from the stats API, across a control SIGKILL.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::{eventually, link, start_control, start_proxy};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const SLACK: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";
const FACEBOOK: &str = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)";

/// A two-network country database, built here in the MaxMind format:
/// 203.0.113.0/24 is NZ, 198.51.100.0/24 is DE.
pub fn write_geoip(path: &Path) {
    use maxminddb_writer::Database;
    use maxminddb_writer::paths::IpAddrWithMask;
    #[derive(serde::Serialize)]
    struct Country {
        iso_code: &'static str,
    }
    #[derive(serde::Serialize)]
    struct Record {
        country: Country,
    }
    let mut db = Database::default();
    db.metadata.database_type = "Shortline-Test-Country".into();
    db.metadata.binary_format_major_version = 2;
    db.metadata.languages = vec!["en".into()];
    for (network, iso_code) in [("203.0.113.0/24", "NZ"), ("198.51.100.0/24", "DE")] {
        let data = db
            .insert_value(Record {
                country: Country { iso_code },
            })
            .unwrap();
        db.insert_node(network.parse::<IpAddrWithMask>().unwrap(), data);
    }
    let file = std::fs::File::create(path).unwrap();
    db.write_to(std::io::BufWriter::new(file)).unwrap();
}

struct Hit {
    method: &'static str,
    user_agent: &'static str,
    referrer: Option<&'static str>,
    client: &'static str,
}

fn send(proxy: &crate::Proxy, code: &str, hit: &Hit, times: usize) {
    let mut headers = format!(
        "User-Agent: {}\r\nX-Forwarded-For: 10.0.0.1, {}\r\n",
        hit.user_agent, hit.client
    );
    if let Some(referrer) = hit.referrer {
        headers.push_str(&format!("Referer: {referrer}\r\n"));
    }
    for _ in 0..times {
        let answer = proxy.request(hit.method, &format!("/{code}"), &headers);
        assert_eq!(answer.status, 302, "{}", answer.body);
    }
}

fn breakdown(stats: &Value, field: &str) -> BTreeMap<String, u64> {
    stats[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {stats}"))
        .iter()
        .map(|c| {
            (
                c["value"].as_str().unwrap().to_owned(),
                c["clicks"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn stats(control: &crate::Control, code: &str, query: &str) -> Value {
    let (status, body) =
        control.request("GET", &format!("/api/v1/links/{code}/stats{query}"), None);
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn a_known_mix_is_counted_exactly_across_a_control_crash() {
    let dir = tempfile::tempdir().unwrap();
    let geoip = dir.path().join("countries.mmdb");
    write_geoip(&geoip);
    let export = dir.path().join("export");
    let addr = format!("127.0.0.1:{}", crate::free_port());
    let control_env = [
        ("SHORTLINE_GEOIP_DATABASE", geoip.to_str().unwrap()),
        ("SHORTLINE_CLICK_EXPORT_DIR", export.to_str().unwrap()),
    ];
    let mut control = start_control(dir.path(), &addr, &control_env);
    let proxy = start_proxy(
        dir.path(),
        control.addr,
        &[
            ("SHORTLINE_TRUST_FORWARDED_FOR", "true"),
            ("SHORTLINE_CLICK_FLUSH_INTERVAL_MS", "50"),
        ],
    );
    let code = control.create(link("https://example.com/analytics"));
    eventually(10, "visible", || {
        proxy.get(&format!("/{code}+")).status == 200
    });

    let human = |user_agent, referrer, client| Hit {
        method: "GET",
        user_agent,
        referrer,
        client,
    };
    send(
        &proxy,
        &code,
        &human(
            CHROME,
            Some("https://www.news.example/a?b=c"),
            "203.0.113.7",
        ),
        5,
    );
    send(
        &proxy,
        &code,
        &human(SAFARI_IPHONE, None, "198.51.100.9"),
        3,
    );
    send(
        &proxy,
        &code,
        &human(FIREFOX, Some("https://social.example/post/1"), "192.0.2.1"),
        2,
    );
    send(&proxy, &code, &human(GOOGLEBOT, None, "203.0.113.8"), 4);
    send(&proxy, &code, &human(SLACK, None, "203.0.113.9"), 2);
    send(&proxy, &code, &human(FACEBOOK, None, "203.0.113.9"), 1);
    let head = Hit {
        method: "HEAD",
        user_agent: CHROME,
        referrer: None,
        client: "203.0.113.7",
    };
    send(&proxy, &code, &head, 6);

    eventually(15, "the first mix counted", || {
        let s = stats(&control, &code, "");
        s["total_clicks"] == 17 && s["head_requests"] == 6
    });
    let check = |s: &Value, extra_chrome: u64, extra_bots: u64| {
        assert_eq!(s["human_clicks"], 10 + extra_chrome, "{s}");
        assert_eq!(s["bot_clicks"], 4 + extra_bots, "{s}");
        assert_eq!(s["preview_clicks"], 3, "{s}");
        assert_eq!(s["head_requests"], 6, "{s}");
        assert_eq!(s["total_clicks"], 17 + extra_chrome + extra_bots, "{s}");
        assert_eq!(
            breakdown(s, "referrers"),
            map(&[
                ("news.example", 5 + extra_chrome),
                ("direct", 3),
                ("social.example", 2)
            ])
        );
        assert_eq!(
            breakdown(s, "countries"),
            map(&[("NZ", 5 + extra_chrome), ("DE", 3), ("unknown", 2)])
        );
        assert_eq!(
            breakdown(s, "browsers"),
            map(&[("Chrome", 5 + extra_chrome), ("Safari", 3), ("Firefox", 2)])
        );
        assert_eq!(
            breakdown(s, "devices"),
            map(&[("desktop", 7 + extra_chrome), ("mobile", 3)])
        );
        assert_eq!(
            breakdown(s, "os"),
            map(&[
                ("Windows 10", 5 + extra_chrome),
                ("iPhone", 3),
                ("Linux", 2)
            ])
        );
    };
    check(&stats(&control, &code, ""), 0, 0);
    let hourly = stats(&control, &code, "?granularity=hour");
    check(&hourly, 0, 0);
    let series = hourly["series"].as_array().unwrap();
    let summed: u64 = series.iter().map(|p| p["human"].as_u64().unwrap()).sum();
    assert_eq!(summed, 10, "{hourly}");
    assert_eq!(control.clicks(&code), 17, "the link's clicks are every GET");

    // Acknowledged clicks survive SIGKILL; clicks sent while control is down
    // wait at the proxy and are counted once after the restart.
    control.kill();
    send(
        &proxy,
        &code,
        &human(CHROME, Some("https://news.example/"), "203.0.113.1"),
        2,
    );
    send(&proxy, &code, &human(GOOGLEBOT, None, "203.0.113.8"), 1);
    let control = start_control(dir.path(), &addr, &control_env);
    eventually(20, "the second mix counted", || {
        stats(&control, &code, "")["total_clicks"] == 20
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    check(&stats(&control, &code, ""), 2, 1);

    // The admin's top links over the period.
    let (status, top) = control.request("GET", "/api/v1/stats/top?limit=5", None);
    assert_eq!(status, 200, "{top}");
    assert_eq!(
        top["items"][0],
        json!({"code": code, "domain": "localhost", "human_clicks": 12}),
        "{top}"
    );

    // Raw addresses are neither stored nor exported; the export has every click.
    // (The embedded store's file is read whole; FoundationDB keeps no file here.)
    if crate::fdb_cluster().is_none() {
        let store = std::fs::read(dir.path().join("shortline.redb")).unwrap();
        for ip in ["203.0.113.7", "198.51.100.9", "192.0.2.1"] {
            assert!(
                !store.windows(ip.len()).any(|w| w == ip.as_bytes()),
                "{ip} is in the store"
            );
        }
    }
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&export).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("203.0.113"), "addresses are not exported");
        lines.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    // De-duplicated by (proxy_id, batch_seq, index) as the schema says.
    let unique: std::collections::HashSet<String> = lines
        .iter()
        .map(|l| format!("{}/{}/{}", l["proxy_id"], l["batch_seq"], l["index"]))
        .collect();
    assert_eq!(unique.len(), 26, "20 clicks and 6 HEADs exported");
    let humans = lines.iter().filter(|l| l["class"] == "human").count();
    assert!(humans >= 12, "{humans}");
}

#[test]
fn max_clicks_exhausts_a_link_at_every_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let control = start_control(dir.path(), "127.0.0.1:0", &[]);
    let proxy = start_proxy(
        dir.path(),
        control.addr,
        &[("SHORTLINE_CLICK_FLUSH_INTERVAL_MS", "20")],
    );
    let code = control.create(json!({"url": "https://example.com/limited", "max_clicks": 3}));
    eventually(10, "visible", || {
        proxy.get(&format!("/{code}+")).status == 200
    });
    let bot = Hit {
        method: "GET",
        user_agent: GOOGLEBOT,
        referrer: None,
        client: "192.0.2.1",
    };
    send(&proxy, &code, &bot, 5);
    let person = Hit {
        method: "GET",
        user_agent: CHROME,
        referrer: None,
        client: "192.0.2.1",
    };
    send(&proxy, &code, &person, 2);
    eventually(10, "seven clicks counted", || control.clicks(&code) == 7);
    assert_eq!(
        proxy.get(&format!("/{code}")).status,
        302,
        "bots do not use up max_clicks"
    );
    send(&proxy, &code, &person, 1);
    eventually(10, "the link exhausted at the proxy", || {
        proxy.get(&format!("/{code}")).status == 410
    });
    let (_, doc) = control.request("GET", &format!("/api/v1/links/{code}"), None);
    assert_eq!(doc["status"], "exhausted", "{doc}");
    // Raising the limit revives it; lowering it below the count exhausts it at once.
    let (status, doc) = control.request(
        "PATCH",
        &format!("/api/v1/links/{code}"),
        Some(json!({"max_clicks": 100})),
    );
    assert_eq!(
        (status, doc["status"].as_str()),
        (200, Some("active")),
        "{doc}"
    );
    let (status, doc) = control.request(
        "PATCH",
        &format!("/api/v1/links/{code}"),
        Some(json!({"max_clicks": 2})),
    );
    assert_eq!(
        (status, doc["status"].as_str()),
        (200, Some("exhausted")),
        "{doc}"
    );
}

#[test]
fn acknowledged_clicks_survive_a_sigkill_before_their_flush() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", crate::free_port());
    // A flush interval far longer than the test: the counts exist only in
    // the click log when control is killed.
    let mut control = start_control(
        dir.path(),
        &addr,
        &[("SHORTLINE_ANALYTICS_FLUSH_MS", "60000")],
    );
    let proxy = start_proxy(
        dir.path(),
        control.addr,
        &[("SHORTLINE_CLICK_FLUSH_INTERVAL_MS", "20")],
    );
    let code = control.create(link("https://example.com/logged"));
    eventually(10, "visible", || {
        proxy.get(&format!("/{code}+")).status == 200
    });
    let person = Hit {
        method: "GET",
        user_agent: CHROME,
        referrer: None,
        client: "192.0.2.1",
    };
    send(&proxy, &code, &person, 7);
    eventually(10, "the batch acknowledged", || {
        proxy.metric("proxy_clicks_shipped_total") == 7.0
    });
    assert_eq!(control.clicks(&code), 0, "not flushed yet");
    control.kill();
    let control = start_control(dir.path(), &addr, &[]);
    eventually(10, "replayed from the click log", || {
        control.clicks(&code) == 7
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(control.clicks(&code), 7, "counted once");
    assert_eq!(stats(&control, &code, "")["human_clicks"], 7);
}
