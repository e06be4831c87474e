//! Integration tests: the real `shortline-control` binary on an ephemeral
//! loopback port, driven over HTTP.

mod abuse;
mod accounts;
mod api;
mod auth;
mod backup;
mod cli;
mod domains;
mod durability;
mod edges;
mod history;
mod import;
mod importers;
mod layers;
mod limits;
mod matrix;
mod qr;
mod startup;
mod stats;
mod stream;
mod targeting;
mod uniqueness;
mod validation;
mod webhooks;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// A running control plane.
#[allow(missing_debug_implementations)]
pub struct Control {
    child: Child,
    pub addr: SocketAddr,
    /// The bootstrap admin token.
    pub token: String,
    pub dir: PathBuf,
    agent: ureq::Agent,
    _keep: Option<tempfile::TempDir>,
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Starts control in a fresh data directory.
pub fn start() -> Control {
    start_with(&[])
}

/// Starts control with extra `SHORTLINE_*` variables, in a fresh data directory.
pub fn start_with(env: &[(&str, &str)]) -> Control {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let mut control = start_in(&path, env);
    control._keep = Some(dir);
    control
}

/// Starts control in `dir` (which may hold a previous run's data).
pub fn start_in(dir: &Path, env: &[(&str, &str)]) -> Control {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shortline-control"));
    command
        .arg("serve")
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir)
        .env("SHORTLINE_CONTROL_LISTEN", "127.0.0.1:0")
        .env("SHORTLINE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in fdb_env(dir) {
        command.env(k, v);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn shortline-control");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("control listening on http://") {
                let _ = tx.send(addr.parse::<SocketAddr>().expect("address"));
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("control did not report its address");
    Control {
        child,
        addr,
        token: ADMIN_TOKEN.to_owned(),
        dir: dir.to_path_buf(),
        agent: agent(),
        _keep: None,
    }
}

/// An HTTP client that returns 4xx and 5xx answers instead of failing.
pub fn agent() -> ureq::Agent {
    // No connection reuse: a server may close a keep-alive connection after
    // answering without reading the body (a 401 before a POST's JSON), and a
    // POST sent on such a stale connection fails without a retry.
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A status and a JSON (or text) body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut response = response.expect("request failed at the transport level");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect::<Vec<_>>();
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        content_type,
        body,
        headers,
    }
}

impl Control {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        self.request_with(method, path, &headers, body)
    }

    /// A request with the given headers (a cookie, a CSRF token).
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Answer {
        let url = self.url(path);
        let with_auth = |mut b: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b
        };
        let without_body = |mut b: ureq::RequestBuilder<ureq::typestate::WithoutBody>| {
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b
        };
        answer(match (method, body) {
            ("GET", _) => without_body(self.agent.get(&url)).call(),
            ("DELETE", _) => without_body(self.agent.delete(&url)).call(),
            ("POST", Some(b)) => with_auth(self.agent.post(&url)).send_json(b),
            ("POST", None) => with_auth(self.agent.post(&url)).send_empty(),
            ("PATCH", Some(b)) => with_auth(self.agent.patch(&url)).send_json(b),
            ("PUT", Some(b)) => with_auth(self.agent.put(&url)).send_json(b),
            ("PUT", None) => with_auth(self.agent.put(&url)).send_empty(),
            ("PATCH", None) => with_auth(self.agent.patch(&url)).send_empty(),
            other => panic!("unsupported request {other:?}"),
        })
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, Some(&self.token.clone()), None)
    }

    pub fn post(&self, path: &str, body: Value) -> Answer {
        self.request("POST", path, Some(&self.token.clone()), Some(&body))
    }

    /// Creates a link as admin and returns it; panics unless 201.
    pub fn create(&self, body: Value) -> Value {
        let answer = self.post("/api/v1/links", body);
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body
    }

    /// Creates a key and returns its token.
    pub fn new_key(&self, name: &str, role: &str) -> String {
        let answer = self.post("/api/v1/keys", json!({"name": name, "role": role}));
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body["token"].as_str().expect("token").to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value of one sample in `/metrics` (`name` with its labels), or 0
    /// when it is not there yet.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.request("GET", "/metrics", None, None);
        text.body
            .as_str()
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Sends SIGKILL and waits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid with a valid signal.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().expect("wait")
    }

    pub fn internal_token(&self) -> String {
        let secret = std::fs::read(self.dir.join("internal.token")).expect("internal token file");
        secret.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asserts a problem+json answer with `status` naming `field`.
pub fn assert_problem(answer: &Answer, status: u16, field: Option<&str>) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(
        answer.content_type, "application/problem+json",
        "{answer:?}"
    );
    assert_eq!(answer.body["status"], status, "{answer:?}");
    assert!(
        answer.body["type"].as_str().is_some_and(|t| !t.is_empty()),
        "{answer:?}"
    );
    assert!(answer.body["title"].is_string(), "{answer:?}");
    assert!(
        answer.body["detail"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{answer:?}"
    );
    if let Some(field) = field {
        assert_eq!(answer.body["field"], field, "{answer:?}");
    }
}

pub use shortline_common::testing::{embedded_only, eventually, fdb_cluster, fdb_env};
