//! Bad configuration and a bad data directory give clear errors; `--help`
//! works on every subcommand.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shortline-control"));
    command.args(args).env_clear();
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run shortline-control");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn bad_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let cases = [
        (
            "SHORTLINE_CONTROL_LISTEN",
            "not-an-address",
            "control_listen",
        ),
        ("SHORTLINE_CODE_LENGTH", "2", "code_length"),
        ("SHORTLINE_CODE_LENGTH", "seven", "code_length"),
        ("SHORTLINE_PUBLIC_URL", "nope", "public_url"),
        ("SHORTLINE_DEFAULT_STRATEGY", "dice", "default_strategy"),
        ("SHORTLINE_LOG_FORMAT", "xml", "log_format"),
        ("SHORTLINE_ADMIN_TOKEN", "short", "admin_token"),
    ];
    for (key, value, named) in cases {
        let (code, text) = run(&["serve"], &[("SHORTLINE_DATA_DIR", data), (key, value)]);
        assert_ne!(code, 0, "{key}={value} started");
        assert!(text.contains(named), "{key}={value}: {text}");
    }
    let file = dir.path().join("control.toml");
    std::fs::write(&file, "code_lenght = 8\n").unwrap();
    let (code, text) = run(
        &["serve", "--config", file.to_str().unwrap()],
        &[("SHORTLINE_DATA_DIR", data)],
    );
    assert_ne!(code, 0);
    assert!(text.contains("code_lenght"), "{text}");
    let (code, text) = run(&["serve", "--config", "/nonexistent/control.toml"], &[]);
    assert_ne!(code, 0);
    assert!(text.contains("/nonexistent/control.toml"), "{text}");
}

#[test]
fn bad_data_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (code, text) = run(
        &["serve"],
        &[
            ("SHORTLINE_DATA_DIR", file.to_str().unwrap()),
            ("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_ne!(code, 0);
    assert!(text.contains("not a directory"), "{text}");

    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("shortline.redb"), vec![7u8; 8192]).unwrap();
    let (code, text) = run(
        &["serve"],
        &[
            ("SHORTLINE_DATA_DIR", data.to_str().unwrap()),
            ("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_ne!(code, 0);
    assert!(text.contains("cannot open the store"), "{text}");

    let secret = dir.path().join("data2");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("permutation.key"), b"too short").unwrap();
    let (code, text) = run(
        &["serve"],
        &[
            ("SHORTLINE_DATA_DIR", secret.to_str().unwrap()),
            ("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_ne!(code, 0);
    assert!(text.contains("permutation.key"), "{text}");
}

#[test]
fn help_on_every_subcommand() {
    for args in [&["--help"][..], &["serve", "--help"], &["up", "--help"]] {
        let (code, text) = run(args, &[]);
        assert_eq!(code, 0, "{args:?}");
        assert!(text.contains("Usage"), "{args:?}: {text}");
    }
}

#[test]
fn a_generated_admin_token_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let control = {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shortline-control"));
        command
            .arg("serve")
            .env_clear()
            .env("SHORTLINE_DATA_DIR", dir.path())
            .env("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        command.spawn().unwrap()
    };
    let mut control = ChildGuard(control);
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(control.0.stdout.take().unwrap()).lines();
    let token_line = lines.next().unwrap().unwrap();
    let token = token_line.rsplit(' ').next().unwrap().to_owned();
    assert!(token.starts_with("sl_"), "{token_line}");
    let listening = lines.next().unwrap().unwrap();
    let addr = listening
        .strip_prefix("control listening on ")
        .unwrap()
        .to_owned();
    let answer = crate::agent()
        .get(&format!("{addr}/api/v1/keys"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    drop(control);

    // A second start finds the admin key and prints no new token.
    let mut command = Command::new(env!("CARGO_BIN_EXE_shortline-control"));
    command
        .arg("serve")
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir.path())
        .env("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut again = ChildGuard(command.spawn().unwrap());
    let first = std::io::BufReader::new(again.0.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(first.starts_with("control listening on"), "{first}");
}

struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
