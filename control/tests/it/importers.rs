//! `shortline-control import --format`: the exports of bit.ly, YOURLS,
//! Shlink and Kutt (the samples in docs/import/) keep their codes, domains,
//! targets, titles, tags, times and visit counts; what cannot be kept is
//! refused by row with why; a file can be fetched from a URL.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::import::{command, import};
use crate::start_in;

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/import")
        .join(name)
}

/// Runs an import of a sample and returns its report of refused rows.
fn import_sample(data: &Path, name: &str, extra: &[&str]) -> String {
    let out = import(data, &sample(name), extra);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.success(),
        report.is_empty(),
        "{name}: {report}\n{stderr}"
    );
    assert!(stderr.contains("100% of the file read"), "{name}: {stderr}");
    report
}

#[test]
fn every_format_keeps_codes_targets_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let control = start_in(&data, &[]);
        for name in ["go.acme.test", "sho.test", "s.test", "kutt.test"] {
            let made = control.post("/api/v1/domains", json!({"name": name}));
            assert_eq!(made.status, 201, "{made:?}");
        }
    }

    // The store has no links: this one is the bulk load.
    let report = import_sample(&data, "shlink.json", &["--format", "shlink"]);
    assert_eq!(report, "", "device-specific targets become rules");
    // The rest go through transactions.
    let report = import_sample(&data, "shlink.csv", &["--format", "shlink"]);
    assert!(
        report.starts_with("1,") && report.contains("\"\"12C18\"\" is taken"),
        "{report}"
    );
    assert_eq!(report.lines().count(), 1, "{report}");
    let report = import_sample(&data, "bitly.json", &["--format", "bitly"]);
    assert!(
        report.starts_with("1,") && report.contains("bit.ly\"\" is not a short domain here"),
        "the code on bit.ly's own domain cannot move: {report}"
    );
    assert_eq!(report.lines().count(), 1, "{report}");
    let report = import_sample(&data, "yourls.csv", &["--format", "yourls"]);
    assert!(
        report.starts_with("4,") && report.contains("spam"),
        "{report}"
    );
    assert_eq!(report.lines().count(), 1, "{report}");
    assert_eq!(
        import_sample(&data, "yourls.json", &["--format", "yourls"]),
        ""
    );
    let report = import_sample(&data, "kutt.json", &["--format", "kutt"]);
    let rows: Vec<&str> = report.lines().collect();
    assert_eq!(rows.len(), 2, "{report}");
    assert!(rows[0].starts_with("2,") && rows[0].contains("password"));
    assert!(rows[1].starts_with("3,") && rows[1].contains("banned"));

    let control = start_in(&data, &[]);
    let link = |code: &str, domain: Option<&str>| {
        let path = match domain {
            Some(d) => format!("/api/v1/links/{code}?domain={d}"),
            None => format!("/api/v1/links/{code}"),
        };
        let answer = control.get(&path);
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        answer.body
    };

    let steam = link("12C18", Some("s.test"));
    assert_eq!(steam["url"], "https://store.steampowered.com/");
    assert_eq!(steam["short_url"], "http://s.test/12C18");
    assert_eq!(steam["title"], "Welcome to Steam");
    assert_eq!(steam["tags"], json!(["games", "tech"]));
    assert_eq!(steam["created_at"], "2016-08-21T18:34:16Z");
    assert_eq!(steam["clicks"], 328);
    assert_eq!(steam["max_clicks"], 1000);
    assert_eq!(steam["forward_query"], true);
    assert_eq!(steam["status"], "active");
    // Its visits reached its maxVisits: it arrives exhausted.
    let limited = link("ran", Some("s.test"));
    assert_eq!(limited["status"], "exhausted");
    assert_eq!(limited["clicks"], 100);
    assert_eq!(limited["expires_at"], "2099-12-31T00:00:00Z");
    assert_eq!(link("guide", Some("s.test"))["clicks"], 5);
    // Shlink's device-specific targets are targeting rules.
    let app = link("app", Some("s.test"));
    assert_eq!(app["url"], "https://www.example.test/app");
    assert_eq!(
        app["rules"],
        json!([
            {"url": "https://apps.example.test/app", "os": ["ios"]},
            {"url": "https://play.example.test/app", "os": ["android"]},
        ])
    );
    assert_eq!(app["clicks"], 7);

    let sale = link("spring-sale", Some("go.acme.test"));
    assert_eq!(
        sale["url"],
        "https://www.acme.test/sales/spring?utm_source=bitly"
    );
    assert_eq!(sale["tags"], json!(["sales", "spring"]));
    assert_eq!(sale["created_at"], "2023-04-12T14:03:51Z");
    assert_eq!(
        link("careers", Some("go.acme.test"))["url"],
        "https://jobs.acme.test/"
    );

    // The table export has no host: its codes go to the default domain,
    // one-character codes included.
    let ozh = link("ozh", None);
    assert_eq!(ozh["clicks"], 412);
    assert_eq!(ozh["title"], "Ozh's blog");
    assert_eq!(ozh["created_at"], "2009-09-28T15:51:12Z");
    assert_eq!(link("1", None)["url"], "https://example.test/first");
    assert_eq!(link("yourls", Some("sho.test"))["clicks"], 98);

    let docs = link("kutt-docs", Some("kutt.test"));
    assert_eq!(docs["url"], "https://docs.kutt.it/");
    assert_eq!(docs["title"], "Kutt documentation");
    assert_eq!(docs["clicks"], 17);
    assert_eq!(docs["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(docs["created_at"], "2020-07-13T19:59:23Z");
    assert_eq!(
        control.get("/api/v1/links/secret?domain=kutt.test").status,
        404
    );
}

/// Serves `body` once, to the first connection, over loopback HTTP.
fn serve_once(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
    });
    format!("http://{addr}/api/v2/links")
}

#[test]
fn an_export_is_fetched_from_a_url_and_put_on_one_domain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let control = start_in(&data, &[]);
        let made = control.post("/api/v1/domains", json!({"name": "go.example"}));
        assert_eq!(made.status, 201, "{made:?}");
    }
    // The server answers once: the dry run fetches the file, and the run
    // after it reads the copy the dry run kept.
    let url = serve_once(std::fs::read(sample("kutt.json")).unwrap());
    let import_url = |extra: &[&str]| {
        command(&data)
            .args(["--format", "kutt", "--domain", "go.example"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let dry = import_url(&["--dry-run"]);
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert!(stderr.contains("fetched"), "{stderr}");
    let out = import_url(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("by an import that did not end"), "{stderr}");
    assert!(stderr.contains("created 1"), "{stderr}");
    // The import ended: its copy is gone.
    let kept = std::fs::read_dir(data.join("import-download"))
        .unwrap()
        .count();
    assert_eq!(kept, 0);

    // The wrong format is named, not guessed at.
    let wrong = import(&data, &sample("yourls.csv"), &["--format", "kutt"]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("a kutt export is JSON"),
        "{wrong:?}"
    );
    let wrong = import(&data, &sample("kutt.json"), &[]);
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("not JSON"),
        "{wrong:?}"
    );

    let control = start_in(&data, &[]);
    let docs = control.get("/api/v1/links/kutt-docs?domain=go.example");
    assert_eq!(docs.status, 200, "{docs:?}");
    assert_eq!(docs.body["clicks"], 17);
    assert_eq!(
        control
            .get("/api/v1/links/kutt-docs?domain=kutt.test")
            .status,
        422,
        "kutt.test is not a domain here"
    );
}
