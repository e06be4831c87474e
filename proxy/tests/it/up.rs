//! `shortline-control up`, the README's one-command start: it starts whole or
//! not at all, stops on Ctrl-C without losing a click, and a lost admin
//! token can be replaced.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{
    ADMIN_TOKEN, eventually, eventually_eq, free_port, free_ports, start_control, target_dir_binary,
};

/// A running `up`, in a process group of its own (as a shell's job is).
pub struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Everything printed so far.
    pub seen: Vec<String>,
    pub proxy_port: u16,
}

/// The environment of an `up` in `dir`, its proxy on `proxy_port` and
/// control and the proxy's metrics on free ports. The three are picked
/// together: a port picked alone and released could be handed to control's
/// listener before the proxy binds it.
fn up_command(dir: &Path, proxy_port: u16, extra: &[(&str, &str)]) -> Command {
    let [control_port, metrics_port] = loop {
        let ports = free_ports::<2>();
        if !ports.contains(&proxy_port) {
            break ports;
        }
    };
    let mut command = Command::new(target_dir_binary("shortline-control"));
    command
        .arg("up")
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir)
        .env(
            "SHORTLINE_CONTROL_LISTEN",
            format!("127.0.0.1:{control_port}"),
        )
        .env("SHORTLINE_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
        .env(
            "SHORTLINE_PROXY_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in crate::fdb_env(dir) {
        command.env(k, v);
    }
    for (k, v) in extra {
        command.env(k, v);
    }
    command
}

impl Up {
    pub fn start(dir: &Path, extra: &[(&str, &str)]) -> Self {
        let proxy_port = free_port();
        let mut child = up_command(dir, proxy_port, extra).spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        // Only the readers hold senders: the channel closes when `up` exits.
        drop(tx);
        let mut up = Self {
            child,
            lines,
            seen: Vec::new(),
            proxy_port,
        };
        up.wait_for_line("shortline is up");
        up
    }

    /// Reads output until a line contains `text`; returns that line.
    pub fn wait_for_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no line with {text:?} ({e}); up printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn control(&self) -> SocketAddr {
        self.seen
            .iter()
            .find_map(|l| l.strip_prefix("control listening on http://"))
            .expect("up prints control's address")
            .parse()
            .unwrap()
    }

    /// Sends `signal` to the whole process group, as a terminal's Ctrl-C
    /// does, and waits for `up` to exit.
    pub fn signal_group(&mut self, signal: i32) -> ExitStatus {
        let group = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's process group with a valid signal.
        unsafe {
            libc::kill(-group, signal);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.child.id()) {
            // SAFETY: as above; the group is ours.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

fn get(port: u16, path: &str) -> std::io::Result<crate::Answer> {
    crate::raw_request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

fn create(control: SocketAddr, token: &str, url: &str) -> String {
    let mut created = crate::agent()
        .post(&format!("http://{control}/api/v1/links"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(serde_json::json!({ "url": url }))
        .unwrap();
    let status = created.status().as_u16();
    let link: serde_json::Value = created.body_mut().read_json().unwrap();
    assert_eq!(status, 201, "{link}");
    link["code"].as_str().unwrap().to_owned()
}

/// The README's one-command start: `up` runs control and a proxy beside it;
/// SIGTERM stops both.
#[test]
fn up_starts_a_working_shortener_and_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(dir.path(), &[("SHORTLINE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    // "up" means up: the proxy answers at once.
    assert_eq!(get(up.proxy_port, "/healthz").unwrap().status, 200);
    let code = create(up.control(), ADMIN_TOKEN, "https://example.com/up");
    eventually(30, "the proxy started by up to redirect", || {
        get(up.proxy_port, &format!("/{code}")).is_ok_and(|a| {
            a.status == 302 && a.header("location") == Some("https://example.com/up")
        })
    });
    // SAFETY: kill(2) on our own child's pid with a valid signal.
    unsafe {
        libc::kill(i32::try_from(up.child.id()).unwrap(), libc::SIGTERM);
    }
    let status = up.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        get(up.proxy_port, &format!("/{code}")).is_err(),
        "the proxy stopped with control"
    );
}

/// Ctrl-C reaches the whole foreground group; `up` alone handles it, stops
/// the proxy first (which ships its queued clicks) and control after it.
#[test]
fn ctrl_c_on_up_counts_every_click() {
    let dir = tempfile::tempdir().unwrap();
    // Clicks stay queued in the proxy until it stops.
    let mut up = Up::start(
        dir.path(),
        &[
            ("SHORTLINE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("SHORTLINE_CLICK_FLUSH_INTERVAL_MS", "60000"),
        ],
    );
    let control = up.control();
    let code = create(control, ADMIN_TOKEN, "https://example.com/ctrl-c");
    eventually(60, "the link to reach the proxy", || {
        get(up.proxy_port, &format!("/{code}")).is_ok_and(|a| a.status == 302)
    });
    let clicks = 40;
    for _ in 1..clicks {
        assert_eq!(get(up.proxy_port, &format!("/{code}")).unwrap().status, 302);
    }
    let status = up.signal_group(libc::SIGINT);
    assert!(
        status.success(),
        "{status:?}; up printed:\n{}",
        up.seen.join("\n")
    );
    let control = start_control(dir.path(), "127.0.0.1:0", &[]);
    eventually_eq(
        60,
        "every click before Ctrl-C counted",
        || control.clicks(&code),
        clicks,
    );
}

/// A taken port stops `up` at once, naming the setting, its variable and
/// its flag, before anything is created or printed.
#[test]
fn a_taken_port_stops_up_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let out = up_command(&data, free_port(), &[])
        .env("SHORTLINE_PROXY_METRICS_LISTEN", &taken_addr)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    for part in [
        "proxy_metrics_listen",
        "SHORTLINE_PROXY_METRICS_LISTEN",
        "--proxy-metrics-listen",
        taken_addr.as_str(),
    ] {
        assert!(stderr.contains(part), "{part} missing from: {stderr}");
    }
    assert!(
        stdout.is_empty(),
        "nothing printed (no admin token): {stdout}"
    );
    assert!(!data.exists(), "nothing created in the data directory");
    drop(taken);
}

/// The proxy alone refuses a taken port at once with the setting's name
/// (Pingora would retry the bind for half a minute, then abort).
#[test]
fn a_proxy_on_a_taken_port_says_which_setting() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(target_dir_binary("shortline-proxy"))
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir.path())
        .env(
            "SHORTLINE_PROXY_LISTEN",
            taken.local_addr().unwrap().to_string(),
        )
        .env(
            "SHORTLINE_PROXY_METRICS_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("proxy_listen") && stderr.contains("SHORTLINE_PROXY_LISTEN"),
        "{stderr}"
    );
}

/// An idle proxy stops as soon as it has drained, not after its grace
/// period: with a ten-minute grace period it still exits.
#[test]
fn an_idle_proxy_stops_without_waiting_out_its_grace_period() {
    let sys = crate::system(&[], &[("SHORTLINE_GRACE_PERIOD_SECONDS", "600")]);
    let mut proxy = sys.proxy;
    let status = proxy.terminate();
    assert!(status.success(), "{status:?}");
    // Ctrl-C on a proxy run by hand drains the same way.
    let mut proxy = crate::start_proxy(
        sys.dir.path(),
        sys.control.addr,
        &[("SHORTLINE_GRACE_PERIOD_SECONDS", "600")],
    );
    proxy.signal(libc::SIGINT);
    let status = proxy.wait();
    assert!(status.success(), "{status:?}");
}

/// `shortline-control admin-token` mints a working admin key for an existing
/// data directory, and refuses while control holds the store.
#[test]
fn a_lost_admin_token_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(dir.path(), &[]);
    let printed = up.wait_for_line("admin token:");
    assert!(printed.contains("sl_"), "{printed}");
    let mint = || {
        Command::new(target_dir_binary("shortline-control"))
            .args(["admin-token", "--name", "lost and found"])
            .env_clear()
            .envs(crate::fdb_env(dir.path()))
            .env("SHORTLINE_DATA_DIR", dir.path())
            .output()
            .unwrap()
    };
    // The running control plane holds the embedded store's file; a shared
    // FoundationDB store takes keys from any process at any time.
    if crate::fdb_cluster().is_none() {
        let refused = mint();
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("stop it first"), "{stderr}");
    }
    assert!(up.signal_group(libc::SIGTERM).success());

    let minted = mint();
    let stdout = String::from_utf8_lossy(&minted.stdout);
    assert!(
        minted.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = stdout
        .lines()
        .find_map(|l| l.rsplit_once(": ").map(|(_, t)| t.trim().to_owned()))
        .filter(|t| t.starts_with("sl_"))
        .unwrap_or_else(|| panic!("no token in: {stdout}"));
    let control = start_control(dir.path(), "127.0.0.1:0", &[]);
    let mut keys = crate::agent()
        .get(&format!("http://{}/api/v1/keys", control.addr))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(keys.status().as_u16(), 200);
    let keys: serde_json::Value = keys.body_mut().read_json().unwrap();
    assert!(
        keys.to_string().contains("lost and found"),
        "the new key is listed by its name: {keys}"
    );
}
