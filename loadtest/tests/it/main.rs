//! The load tester against real control and proxy binaries: a clean run
//! passes, and a wrong answer fails the run.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "loadtest-admin-token-0123456";

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo test --workspace`",
        path.display()
    );
    path
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts control and a proxy; returns them with the control and proxy URLs.
fn system(dir: &Path) -> (Guard, Guard, String, String) {
    let mut control = Command::new(binary("shortline-control"))
        .arg("serve")
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir)
        .env("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0")
        .env("SHORTLINE_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(control.stdout.take().unwrap()).lines();
    let control_url = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(url) = line.strip_prefix("control listening on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let port = free_port();
    let proxy = Command::new(binary("shortline-proxy"))
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir)
        .env(
            "SHORTLINE_CONTROL_LISTEN",
            control_url.trim_start_matches("http://"),
        )
        .env("SHORTLINE_PROXY_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "SHORTLINE_PROXY_METRICS_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        Guard(control),
        Guard(proxy),
        control_url,
        format!("http://127.0.0.1:{port}"),
    )
}

fn loadtest(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shortline-loadtest"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_clean_run_passes_and_a_wrong_answer_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_control, _proxy, control, target) = system(dir.path());
    let report = dir.path().join("report.json");
    // Seeded links need a moment to reach the proxy; the mixed scenario
    // creates as it goes.
    let (code, text) = loadtest(&[
        "--target",
        &target,
        "--control",
        &control,
        "--token",
        TOKEN,
        "--seed-links",
        "300",
        "--weights",
        "redirect-zipf:50,redirect-uniform:50,create:1,stats:1",
        "--connections",
        "4",
        "--ramp-seconds",
        "0.5",
        "--seconds",
        "1",
        "--json",
        report.to_str().unwrap(),
        "--plot",
        dir.path().join("latency.svg").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let svg = std::fs::read_to_string(dir.path().join("latency.svg")).unwrap();
    assert_eq!(
        svg.matches("<polyline").count(),
        4,
        "a line per transaction"
    );
    assert!(text.contains("errors: 0  mismatches: 0"), "{text}");
    assert!(text.contains("seeding: 300 of 300 links created"), "{text}");
    assert!(
        text.contains("deleted this run's") && text.contains("links (tagged loadtest-"),
        "{text}"
    );
    let left = get_json(&control, "/api/v1/links?tag=loadtest&limit=1000");
    assert_eq!(
        left["items"].as_array().map(Vec::len),
        Some(0),
        "seeded and created links are deleted: {left}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(report["requests"].as_u64().unwrap() > 100, "{report}");
    assert!(report["creates"].as_u64().unwrap() > 0, "{report}");
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    for transaction in ["redirect-zipf", "redirect-uniform", "create", "stats"] {
        assert!(
            report["transactions"][transaction]["requests"]
                .as_u64()
                .unwrap()
                > 0,
            "{transaction}: {report}"
        );
    }

    // A link file whose target is wrong: every answer mismatches.
    let links = dir.path().join("links.tsv");
    std::fs::write(&links, "nonexistent\thttps://example.com/\n").unwrap();
    let (code, text) = loadtest(&[
        "--target",
        &target,
        "--links",
        links.to_str().unwrap(),
        "--connections",
        "2",
        "--seconds",
        "0.5",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(!text.contains("mismatches: 0"), "{text}");
    // What was asked, what was expected and what came back, then counts
    // (404, or 429 once the proxy's enumeration guard refuses the client).
    assert!(
        text.contains("GET /nonexistent: expected a redirect to https://example.com/, got 4"),
        "{text}"
    );
    assert!(text.contains("failures by kind:"), "{text}");
    assert!(
        text.contains("mismatch: redirect-uniform: status 4"),
        "{text}"
    );
}

/// A GET to control with the admin token, as JSON.
fn get_json(control: &str, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let authority = control.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn bad_arguments_are_clear_errors() {
    let (code, text) = loadtest(&["--scenario", "mixed", "--links", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(text.contains("--control"), "{text}");
    let (code, text) = loadtest(&["--weights", "redirect:1", "--links", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(text.contains("unknown transaction"), "{text}");
    let (code, text) = loadtest(&["--links", "/nonexistent/links.tsv"]);
    assert_eq!(code, 2);
    assert!(text.contains("/nonexistent/links.tsv"), "{text}");
}
