//! `shortline`, the API's command line: a login kept readable by its owner
//! alone, links, keys, users, webhooks and domains end to end against the
//! real control plane, `--json` for scripts, and the API's refusals as
//! clear errors.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::{Control, start};

/// Runs `shortline` with `args`, its login kept in `dir`, `stdin` fed in.
fn shortline(control: &Control, dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shortline"))
        .args(args)
        .env_clear()
        .env("SHORTLINE_CLI_CONFIG", dir.join("cli.json"))
        .env("SHORTLINE_SERVER", format!("http://{}", control.addr))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shortline binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; its standard output.
fn ok(control: &Control, dir: &Path, args: &[&str]) -> String {
    let out = shortline(control, dir, args, "");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; its standard error.
fn refused(control: &Control, dir: &Path, args: &[&str]) -> String {
    let out = shortline(control, dir, args, "");
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_login_then_links_keys_and_domains_from_the_command_line() {
    let control = start();
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();

    let not_yet = refused(&control, dir, &["links", "list"]);
    assert!(not_yet.contains("not logged in"), "{not_yet}");
    let bad = shortline(&control, dir, &["login"], "sl_not_a_token\n");
    assert_eq!(bad.status.code(), Some(1));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        said.contains("the token was not accepted") && said.contains("401"),
        "{said}"
    );
    assert!(
        !dir.join("cli.json").exists(),
        "a refused token is not kept"
    );

    let login = shortline(&control, dir, &["login"], &format!("{}\n", control.token));
    assert!(login.status.success(), "{login:?}");
    let kept = dir.join("cli.json");
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is its owner's alone");

    // Create prints the short URL alone, for `$(shortline links create ...)`.
    let short = ok(
        &control,
        dir,
        &[
            "links",
            "create",
            "https://example.com/cli",
            "--alias",
            "cli-made",
            "--tag",
            "docs",
            "--tag",
            "cli",
            "--title",
            "From the CLI",
            "--max-clicks",
            "10",
        ],
    );
    assert!(short.trim().ends_with("/cli-made"), "{short}");
    let link = control.get("/api/v1/links/cli-made").body;
    assert_eq!(link["url"], "https://example.com/cli");
    assert_eq!(link["tags"], serde_json::json!(["cli", "docs"]), "sorted");
    assert_eq!(link["title"], "From the CLI");
    assert_eq!(link["max_clicks"], 10);

    let table = ok(&control, dir, &["links", "list", "--tag", "docs"]);
    assert!(
        table.contains("cli-made") && table.contains("https://example.com/cli"),
        "{table}"
    );
    let listed: Value =
        serde_json::from_str(&ok(&control, dir, &["links", "list", "--json"])).unwrap();
    assert_eq!(listed["items"][0]["code"], "cli-made");
    ok(
        &control,
        dir,
        &[
            "links",
            "create",
            "https://example.com/second",
            "--alias",
            "cli-two",
        ],
    );
    let one: Value = serde_json::from_str(&ok(
        &control,
        dir,
        &["links", "list", "--limit", "1", "--json"],
    ))
    .unwrap();
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    assert!(one["next_cursor"].is_string(), "{one}");
    let every: Value = serde_json::from_str(&ok(
        &control,
        dir,
        &["links", "list", "--limit", "1", "--all", "--json"],
    ))
    .unwrap();
    let codes: Vec<&str> = every["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 2, "every page: {every}");
    assert!(codes.contains(&"cli-made") && codes.contains(&"cli-two"));
    assert_eq!(
        shortline(&control, dir, &["links", "list", "--no-such-flag"], "")
            .status
            .code(),
        Some(2),
        "a usage error"
    );

    let updated: Value = serde_json::from_str(&ok(
        &control,
        dir,
        &[
            "--json",
            "links",
            "update",
            "cli-made",
            "--url",
            "https://example.com/moved",
            "--status",
            "disabled",
            "--clear-tags",
        ],
    ))
    .unwrap();
    assert_eq!(updated["url"], "https://example.com/moved");
    assert_eq!(updated["status"], "disabled");
    assert_eq!(updated["tags"], serde_json::json!([]));
    let history = ok(&control, dir, &["links", "history", "cli-made"]);
    assert!(
        history.contains("https://example.com/cli")
            && history.contains("https://example.com/moved"),
        "{history}"
    );
    let stats: Value = serde_json::from_str(&ok(
        &control,
        dir,
        &["links", "stats", "cli-made", "--json"],
    ))
    .unwrap();
    assert_eq!(stats["total_clicks"], 0);
    assert!(ok(&control, dir, &["links", "stats", "cli-made"]).contains("human_clicks"));

    // The QR code decodes to the short URL.
    let qr = dir.join("code.png");
    ok(
        &control,
        dir,
        &["links", "qr", "cli-made", "-o", qr.to_str().unwrap()],
    );
    assert_eq!(
        crate::qr::decode_png(&std::fs::read(&qr).unwrap()),
        short.trim()
    );

    // The API's refusals, with their field.
    let bad_url = refused(&control, dir, &["links", "create", "ftp://example.com/x"]);
    assert!(
        bad_url.starts_with("error: ")
            && bad_url.contains("422")
            && bad_url.contains("[field: url]"),
        "{bad_url}"
    );
    let taken = refused(
        &control,
        dir,
        &[
            "links",
            "create",
            "https://example.com/2",
            "--alias",
            "cli-made",
        ],
    );
    assert!(taken.contains("409"), "{taken}");
    let nothing = refused(&control, dir, &["links", "update", "cli-made"]);
    assert!(nothing.contains("nothing to change"), "{nothing}");

    ok(&control, dir, &["links", "delete", "cli-made"]);
    assert_eq!(control.get("/api/v1/links/cli-made").status, 404);
    assert!(refused(&control, dir, &["links", "get", "cli-made"]).contains("404"));

    // Keys: the token is printed once, and works.
    let key: Value = serde_json::from_str(&ok(
        &control,
        dir,
        &["--json", "keys", "create", "ann", "--role", "user"],
    ))
    .unwrap();
    let ann = key["token"].as_str().unwrap().to_owned();
    let as_ann = control.request("GET", "/api/v1/links", Some(&ann), None);
    assert_eq!(as_ann.status, 200);
    assert!(ok(&control, dir, &["keys", "list"]).contains("ann"));
    let id = key["id"].as_str().unwrap();
    ok(&control, dir, &["keys", "delete", id]);
    assert_eq!(
        control
            .request("GET", "/api/v1/links", Some(&ann), None)
            .status,
        401
    );

    // Accounts: an invitation, a key of the user's, a reset, disabling.
    let made: Value = serde_json::from_str(&ok(
        &control,
        dir,
        &[
            "--json",
            "users",
            "create",
            "Dee@Example.com",
            "--role",
            "member",
        ],
    ))
    .unwrap();
    let user = made["user"]["id"].as_str().unwrap().to_owned();
    let invitation = made["invitation"]["token"].as_str().unwrap();
    let set = control.request(
        "POST",
        "/api/v1/auth/redeem",
        None,
        Some(&serde_json::json!({"token": invitation, "password": "a long enough password"})),
    );
    assert_eq!(set.status, 200, "{set:?}");
    let listed = ok(&control, dir, &["users", "list"]);
    assert!(
        listed.contains("dee@example.com") && listed.contains("member"),
        "{listed}"
    );
    let key: Value = serde_json::from_str(&ok(
        &control,
        dir,
        &["--json", "keys", "create", "dee-ci", "--user", &user],
    ))
    .unwrap();
    assert_eq!(key["owner"], "dee@example.com");
    let reset = ok(&control, dir, &["users", "reset", &user]);
    assert!(reset.contains("rst_"), "{reset}");
    let disabled = ok(&control, dir, &["users", "update", &user, "--disable"]);
    assert!(disabled.contains("true"), "{disabled}");
    let dee = key["token"].as_str().unwrap();
    assert_eq!(
        control
            .request("GET", "/api/v1/links", Some(dee), None)
            .status,
        401,
        "a disabled user's key stops"
    );
    ok(&control, dir, &["users", "sign-out", &user]);
    ok(&control, dir, &["users", "delete", &user]);
    let gone = refused(&control, dir, &["users", "get", &user]);
    assert!(gone.contains("404"), "{gone}");

    // Webhooks: the secret once, then the subscription's state.
    let hook: Value = serde_json::from_str(&ok(
        &control,
        dir,
        &[
            "--json",
            "webhooks",
            "create",
            "https://93.184.215.14/in",
            "--event",
            "link.created",
            "--event",
            "link.clicks",
        ],
    ))
    .unwrap();
    assert!(
        hook["secret"].as_str().unwrap().starts_with("whsec_"),
        "{hook}"
    );
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let listed = ok(&control, dir, &["webhooks", "list"]);
    assert!(
        listed.contains(&hook_id) && listed.contains("link.clicks"),
        "{listed}"
    );
    let off = ok(&control, dir, &["--json", "webhooks", "disable", &hook_id]);
    assert_eq!(
        serde_json::from_str::<Value>(&off).unwrap()["enabled"],
        false
    );
    ok(&control, dir, &["webhooks", "enable", &hook_id]);
    ok(&control, dir, &["webhooks", "deliveries", &hook_id]);
    let refused_hook = refused(
        &control,
        dir,
        &[
            "webhooks",
            "create",
            "http://127.0.0.1:1/",
            "--event",
            "link.created",
        ],
    );
    assert!(refused_hook.contains("loopback"), "{refused_hook}");
    ok(&control, dir, &["webhooks", "delete", &hook_id]);

    ok(&control, dir, &["domains", "create", "go.cli.test"]);
    assert!(ok(&control, dir, &["domains", "list"]).contains("go.cli.test"));
    ok(&control, dir, &["domains", "delete", "go.cli.test"]);
    assert!(!ok(&control, dir, &["domains", "list"]).contains("go.cli.test"));

    let completions = ok(&control, dir, &["completions", "bash"]);
    assert!(completions.contains("_shortline"), "{completions}");

    ok(&control, dir, &["logout"]);
    assert!(!kept.exists());
    assert!(refused(&control, dir, &["links", "list"]).contains("not logged in"));
}
