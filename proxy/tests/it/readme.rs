//! The README's "Using it" commands, run as written against `up` (only the
//! addresses and the binaries' folder are swapped for the test's), each
//! answering as the README says. A command the README gains without a check
//! here fails the test.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::up::Up;

/// The commands of the first `sh` block under "## Using it", continuation
/// lines joined, comment lines dropped.
fn using_it_commands() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split_once("## Using it")
        .expect("the README has a \"Using it\" section")
        .1;
    let section = section.split("\n## ").next().unwrap();
    let block = section
        .split_once("```sh\n")
        .expect("\"Using it\" has a sh block")
        .1
        .split_once("```")
        .unwrap()
        .0;
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// What a command must answer, judged from its exit status and output.
type Check = fn(&std::process::Output, &str) -> Result<(), String>;

fn index(out: &std::process::Output, text: &str) -> Result<(), String> {
    let ok = out.status.success() && text.contains("\"openapi\":\"/api/v1/openapi.json\"");
    ok.then_some(()).ok_or_else(|| "no API index".into())
}

fn created(out: &std::process::Output, text: &str) -> Result<(), String> {
    let ok = out.status.success()
        && text.contains("\"code\":\"docs-home\"")
        && text.contains("\"short_url\":\"http://localhost:8080/docs-home\"");
    ok.then_some(())
        .ok_or_else(|| "not created as docs-home".into())
}

fn redirected(_: &std::process::Output, text: &str) -> Result<(), String> {
    let ok = text.starts_with("HTTP/1.1 302 Found")
        && text.contains("Location: https://example.com/a/long/path");
    ok.then_some(())
        .ok_or_else(|| "no 302 to the target".into())
}

fn previewed(_: &std::process::Output, text: &str) -> Result<(), String> {
    let ok = text.contains("<html") && text.contains("https://example.com/a/long/path");
    ok.then_some(()).ok_or_else(|| "no preview page".into())
}

fn counted_as_a_bot(_: &std::process::Output, text: &str) -> Result<(), String> {
    let stats: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let total = stats["total_clicks"].as_u64().ok_or("no total_clicks")?;
    let ok = stats["code"] == "docs-home"
        && total >= 1
        && stats["human_clicks"] == 0
        && stats["bot_clicks"] == total;
    ok.then_some(())
        .ok_or_else(|| "curl's clicks not counted as a bot's".into())
}

fn load_tested(out: &std::process::Output, text: &str) -> Result<(), String> {
    let ok = out.status.success()
        && text.contains("errors: 0  mismatches: 0")
        && text.contains("deleted this run's 10000 links");
    ok.then_some(())
        .ok_or_else(|| "the load test did not pass".into())
}

/// The check for a README command, and whether it may be retried (reads
/// may be, until what they read has arrived; writes run once).
fn check_for(command: &str) -> (Check, bool) {
    if command.contains("shortline-loadtest") {
        (load_tested, false)
    } else if command.contains("-X POST") && command.contains("/api/v1/links") {
        (created, false)
    } else if command.ends_with("/api/v1") {
        (index, true)
    } else if command.contains("/stats") {
        (counted_as_a_bot, true)
    } else if command.ends_with("/docs-home+") {
        (previewed, true)
    } else if command.ends_with("/docs-home") {
        (redirected, true)
    } else {
        panic!("a README command without a check in tests/it/readme.rs: {command}")
    }
}

#[test]
fn the_readme_commands_answer_as_it_says() {
    let commands = using_it_commands();
    assert!(
        commands.len() >= 6,
        "the README's commands were not found: {commands:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(dir.path(), &[]);
    let token = up
        .wait_for_line("admin token:")
        .rsplit_once(": ")
        .map(|(_, t)| t.trim().to_owned())
        .unwrap();
    let control = up.control().to_string();
    let proxy = format!("127.0.0.1:{}", up.proxy_port);
    let bin_dir = crate::target_dir_binary("shortline-loadtest")
        .parent()
        .unwrap()
        .display()
        .to_string();
    for written in &commands {
        if written.starts_with("TOKEN=") {
            continue;
        }
        let (check, retry) = check_for(written);
        let command = written
            .replace("localhost:8081", &control)
            .replace("127.0.0.1:8081", &control)
            .replace("localhost:8080", &proxy)
            .replace("127.0.0.1:8080", &proxy)
            .replace("./target/release/", &format!("{bin_dir}/"));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = Command::new("bash")
                .args(["-c", &command])
                .env("TOKEN", &token)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            match check(&out, &text) {
                Ok(()) => break,
                Err(why) if retry && Instant::now() < deadline => {
                    let _ = why;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(why) => panic!("{written}\n{why} ({}); it printed:\n{text}", out.status),
            }
        }
    }
    assert!(up.signal_group(libc::SIGINT).success());
}
