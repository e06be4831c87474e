//! `shortline-control import`: rows checked as the create API checks them,
//! refused ones reported by row, and an import cut short by SIGKILL run
//! again to the end without a row created twice.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{ADMIN_TOKEN, fdb_env, start_in};

/// The import command for `data`, configured as `start_in` configures
/// control (the same store, on either backend).
pub(crate) fn command(data: &Path) -> Command {
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

pub(crate) fn import(data: &Path, file: &Path, extra: &[&str]) -> std::process::Output {
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

/// The number after `label` on the last progress line that has one.
fn last_count(stderr: &str, label: &str) -> u64 {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.split(label).nth(1))
        .and_then(|rest| rest.split([',', ';']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in {stderr}"))
}

fn many_rows(file: &Path, rows: u32) {
    let mut csv = String::from("url\n");
    for i in 0..rows {
        csv.push_str(&format!("https://example.com/many/{i}\n"));
    }
    std::fs::write(file, csv).unwrap();
}

/// Starts an import of `file` and kills it with SIGKILL once a progress
/// line passes `cut` (or at the end, on a fast machine).
fn kill_import_after(data: &Path, file: &Path, extra: &[&str], cut: impl Fn(&str) -> bool) {
    let mut child = command(data)
        .args(extra)
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(lines.by_ref().map_while(Result::ok).any(|l| cut(&l)));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_killed_import_run_again_creates_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A store with links takes the import in transactions, a batch each.
    let seed = dir.path().join("seed.csv");
    std::fs::write(&seed, "url\nhttps://example.com/seed\n").unwrap();
    assert!(import(&data, &seed, &[]).status.success());
    let file = dir.path().join("links.csv");
    let rows = 20_000;
    many_rows(&file, rows);
    // Killed once a batch is committed.
    kill_import_after(&data, &file, &["--batch", "500"], |l| {
        l.starts_with("rows ")
    });

    let again = import(&data, &file, &[]);
    assert!(again.status.success(), "{again:?}");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        last_count(&stderr, "skipped (imported before) ") >= 500,
        "the committed batch is not imported again: {stderr}"
    );
    let control = start_in(&data, &[]);
    crate::eventually(60, "a snapshot of every link", || {
        control.metric("control_snapshot_links") == f64::from(rows + 1)
    });
}

#[test]
fn a_bulk_import_killed_while_writing_is_undone_and_run_again() {
    if crate::embedded_only("the bulk load") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("links.csv");
    let rows = 50_000;
    many_rows(&file, rows);
    // An empty store takes the bulk load: killed as it writes.
    kill_import_after(&data, &file, &[], |l| l.contains("writing to the store"));

    let again = import(&data, &file, &[]);
    assert!(again.status.success(), "{again:?}");
    let stderr = String::from_utf8_lossy(&again.stderr);
    // Either the load was undone whole and made again, or it had ended
    // before the kill and every row is skipped: never a part.
    let created = last_count(&stderr, "created ");
    let skipped = last_count(&stderr, "skipped (imported before) ");
    assert!(
        (created, skipped) == (u64::from(rows), 0) || (created, skipped) == (0, u64::from(rows)),
        "{stderr}"
    );
    assert!(
        !data.join("import-sort").exists(),
        "the sort files are removed"
    );
    let control = start_in(&data, &[]);
    crate::eventually(60, "a snapshot of every link", || {
        control.metric("control_snapshot_links") == f64::from(rows)
    });
    let listed = control.get("/api/v1/links?limit=1000");
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1000);
    // A link made after the load gets a code no loaded link has.
    let made = control.create(serde_json::json!({"url": "https://example.com/after"}));
    assert_eq!(made["url"], "https://example.com/after");
}

#[test]
fn a_bulk_import_finds_rows_that_share_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("links.csv");
    // With the hash strategy, the same target is the same link.
    std::fs::write(
        &file,
        "url,code\n\
         https://example.com/same,\n\
         https://example.com/other,\n\
         https://example.com/same,\n\
         https://example.com/x,taken\n\
         https://example.com/y,taken\n",
    )
    .unwrap();
    let out = command(&data)
        .env("SHORTLINE_DEFAULT_STRATEGY", "hash")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.starts_with("5,") && report.contains("taken"),
        "{report}"
    );
    assert_eq!(report.lines().count(), 1, "{report}");
    assert_eq!(last_count(&stderr, "created "), 3, "{stderr}");
    assert_eq!(last_count(&stderr, "existing "), 1, "{stderr}");
    let control = start_in(&data, &[("SHORTLINE_DEFAULT_STRATEGY", "hash")]);
    assert_eq!(
        control.get("/api/v1/links/taken").body["url"],
        "https://example.com/x"
    );
    let listed = control.get("/api/v1/links?limit=10");
    let urls: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 3, "{listed:?}");
    assert_eq!(
        urls.iter()
            .filter(|u| **u == "https://example.com/same")
            .count(),
        1
    );
}
