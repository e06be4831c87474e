//! `shortline-control import`: rows checked as the create API checks them,
//! refused ones reported by row, and an import cut short by SIGKILL run
//! again to the end without a row created twice.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{ADMIN_TOKEN, fdb_env, start_in};

/// The import command for `data`, configured as `start_in` configures
/// control (the same store, on either backend).
fn command(data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shortline-control"));
    command
        .arg("import")
        .arg("--data-dir")
        .arg(data)
        .env_clear()
        .env("SHORTLINE_ADMIN_TOKEN", ADMIN_TOKEN);
    for (k, v) in fdb_env(data) {
        command.env(k, v);
    }
    command
}

fn import(data: &Path, file: &Path, extra: &[&str]) -> std::process::Output {
    command(data)
        .args(extra)
        .arg(file)
        .output()
        .expect("run import")
}

#[test]
fn rows_are_checked_reported_and_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("links.csv");
    std::fs::write(
        &file,
        "url,code,title,tags,expires_at,max_clicks,redirect,created_at\n\
         https://example.com/a,,First,news|promo,,,,\n\
         not a url,,,,,,,\n\
         https://example.com/b,kept-code,,,,,301,2020-01-02T03:04:05Z\n\
         https://example.com/c,kept-code,,,,,,\n\
         \"https://example.com/d?x=1,2\",,\"a, b\",,2099-01-01T00:00:00Z,5,,\n\
         https://example.com/e,,,,,,999,\n",
    )
    .unwrap();

    let dry = import(&data, &file, &["--dry-run"]);
    let report = String::from_utf8_lossy(&dry.stdout);
    assert!(!dry.status.success());
    assert!(report.starts_with("2,url:"), "{report}");
    assert!(report.contains("\n6,\"redirect: 999"), "{report}");
    assert!(String::from_utf8_lossy(&dry.stderr).contains("nothing was written"));

    let first = import(&data, &file, &[]);
    let report = String::from_utf8_lossy(&first.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(!first.status.success(), "refused rows make it fail");
    let rows: Vec<&str> = report
        .lines()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(rows, ["2", "4", "6"], "{report}");
    assert!(
        report.contains("kept-code") && report.contains("taken"),
        "{report}"
    );
    assert!(stderr.contains("created 3"), "{stderr}");

    // Run again: every row was committed before; nothing is created twice.
    let again = import(&data, &file, &[]);
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("skipped (imported before) 6"),
        "{again:?}"
    );

    let control = start_in(&data, &[]);
    let kept = control.get("/api/v1/links/kept-code");
    assert_eq!(kept.status, 200, "{kept:?}");
    assert_eq!(kept.body["url"], "https://example.com/b");
    assert_eq!(kept.body["redirect"], 301);
    assert_eq!(kept.body["owner"], "import");
    assert_eq!(kept.body["created_at"], "2020-01-02T03:04:05Z");
    let listed = control.get("/api/v1/links?limit=100");
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{listed:?}");
    let first = items
        .iter()
        .find(|l| l["url"] == "https://example.com/a")
        .unwrap();
    assert_eq!(first["title"], "First");
    assert_eq!(first["tags"], serde_json::json!(["news", "promo"]));
    let quoted = items
        .iter()
        .find(|l| l["url"] == "https://example.com/d?x=1,2")
        .unwrap();
    assert_eq!(quoted["title"], "a, b");
    assert_eq!(quoted["max_clicks"], 5);
}

#[test]
fn a_killed_import_run_again_creates_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("links.csv");
    let rows = 20_000;
    let mut csv = String::from("url\n");
    for i in 0..rows {
        csv.push_str(&format!("https://example.com/many/{i}\n"));
    }
    std::fs::write(&file, csv).unwrap();
    let mut child = command(&data)
        .args(["--batch", "500"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once a batch is committed (or at the end, on a fast machine).
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.starts_with("rows "))
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let again = import(&data, &file, &[]);
    assert!(again.status.success(), "{again:?}");
    let stderr = String::from_utf8_lossy(&again.stderr);
    let skipped: u64 = stderr
        .lines()
        .last()
        .and_then(|l| l.split("skipped (imported before) ").nth(1))
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        skipped >= 500,
        "the committed batch is not imported again: {stderr}"
    );
    let control = start_in(&data, &[]);
    crate::eventually(60, "a snapshot of every link", || {
        control.metric("control_snapshot_links") == f64::from(rows)
    });
}
