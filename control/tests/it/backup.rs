//! Online backup and restore: a backup taken while control runs restores
//! into an empty data directory with every link, key, counter, blocklist
//! entry and report; a cut-off file or a non-empty target is refused.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;

use crate::{ADMIN_TOKEN, assert_problem, start_in};

fn control_command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shortline-control"));
    command
        .args(args)
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run shortline-control")
}

#[test]
fn a_backup_taken_online_restores_everything() {
    // FoundationDB is backed up with its own tools; the API says so (409).
    if crate::embedded_only("the online backup") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("source");
    let control = start_in(&source, &[]);
    let alice = control.new_key("alice", "user");
    let mut codes = Vec::new();
    for i in 0..30 {
        codes.push(control.create(json!({"url": format!("https://site{i}.example/"), "tags": ["t"]}))["code"]
            .as_str()
            .unwrap()
            .to_owned());
    }
    let alices = control.request(
        "POST",
        "/api/v1/links",
        Some(&alice),
        Some(&json!({"url": "https://alice.example/", "alias": "alice-home", "max_clicks": 9})),
    );
    assert_eq!(alices.status, 201);
    let gone = control.create(json!({"url": "https://deleted.example/", "alias": "retired-one"}));
    assert_eq!(
        control
            .request(
                "DELETE",
                "/api/v1/links/retired-one",
                Some(&control.token),
                None
            )
            .status,
        204
    );
    assert_eq!(gone["code"], "retired-one");
    assert_eq!(
        control
            .request(
                "PUT",
                "/api/v1/blocklist/blocked.example",
                Some(&control.token),
                None
            )
            .status,
        201
    );
    assert_eq!(
        control
            .request(
                "POST",
                &format!("/api/v1/links/{}/report", codes[0]),
                None,
                Some(&json!({"category": "spam"}))
            )
            .status,
        202
    );

    // Only admins may take a backup.
    assert_problem(
        &control.request("GET", "/api/v1/backup", Some(&alice), None),
        403,
        None,
    );
    let file = root.path().join("shortline.backup");
    let listen = control.addr.to_string();
    let taken = control_command(
        &source,
        &[
            "backup",
            "--out",
            file.to_str().unwrap(),
            "--token",
            ADMIN_TOKEN,
        ],
        &[("SHORTLINE_CONTROL_LISTEN", &listen)],
    );
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    assert!(String::from_utf8_lossy(&taken.stdout).contains("records"));
    // Written after the backup: not in it.
    let later = control.create(json!({"url": "https://later.example/"}))["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let before: Vec<_> = codes
        .iter()
        .map(|c| control.get(&format!("/api/v1/links/{c}")).body)
        .collect();
    drop(control);

    // A cut-off copy is refused before anything is written.
    let text = std::fs::read_to_string(&file).unwrap();
    let cut = root.path().join("cut.backup");
    let without_end: Vec<&str> = text.lines().collect();
    std::fs::write(&cut, without_end[..without_end.len() - 1].join("\n")).unwrap();
    let empty = root.path().join("empty");
    let refused = control_command(&empty, &["restore", "--from", cut.to_str().unwrap()], &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cut off"),
        "{refused:?}"
    );

    let target = root.path().join("target");
    let restored = control_command(&target, &["restore", "--from", file.to_str().unwrap()], &[]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    // A second restore into the now-populated store is refused.
    let again = control_command(&target, &["restore", "--from", file.to_str().unwrap()], &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("empty data_dir"));

    let control = start_in(&target, &[]);
    for (code, old) in codes.iter().zip(&before) {
        let now = control.get(&format!("/api/v1/links/{code}")).body;
        assert_eq!(&now, old, "{code}");
    }
    assert_problem(&control.get(&format!("/api/v1/links/{later}")), 404, None);
    // Keys, retired codes, the blocklist and reports came along.
    let mine = control.request("GET", "/api/v1/links/alice-home", Some(&alice), None);
    assert_eq!(mine.status, 200);
    assert_eq!(mine.body["max_clicks"], 9);
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://x.example/", "alias": "retired-one"}),
        ),
        409,
        Some("alias"),
    );
    assert_problem(
        &control.post(
            "/api/v1/links",
            json!({"url": "https://www.blocked.example/"}),
        ),
        422,
        Some("url"),
    );
    assert_eq!(
        control.get("/api/v1/reports").body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // New links get fresh codes, and the change sequence moved far ahead, so
    // proxies that saw newer changes before the restore reload a snapshot.
    let fresh = control.create(json!({"url": "https://fresh.example/"}));
    assert!(!codes.contains(&fresh["code"].as_str().unwrap().to_owned()));
    let metrics = control.get("/metrics").body.as_str().unwrap().to_owned();
    let seq: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("control_snapshot_sequence "))
        .expect("snapshot sequence metric")
        .parse()
        .unwrap();
    assert!(seq >= (1u64 << 40) as f64, "{seq}");
}
