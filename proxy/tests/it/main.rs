//! Integration tests: the real `shortline-proxy` and `shortline-control`
//! binaries on loopback ports, driven over HTTP.
//!
//! The control binary is taken from the same target directory; `cargo test
//! --workspace` builds it (the control package's own tests need it).

mod acme;
mod alloc;
mod analytics;
mod answering;
mod clicks;
mod domains;
mod http_edges;
mod lifecycle;
mod readme;
mod sidecars;
mod staying_current;
mod targeting;
mod tls;
mod up;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "proxy-tests-admin-token-0123";

pub fn target_dir_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo test --workspace` (or `cargo build -p shortline-control`) first",
        path.display()
    );
    path
}

/// A free loopback port (bound, then released for the child to bind).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports for one process's listeners: all are
/// held open while they are picked, so the kernel cannot hand the same port
/// out twice among them.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A running control plane.
#[allow(missing_debug_implementations)]
pub struct Control {
    child: Child,
    pub addr: SocketAddr,
    agent: ureq::Agent,
}

pub fn agent() -> ureq::Agent {
    // No connection reuse: a server may close a keep-alive connection after
    // answering without reading the body (a 401 before a POST's JSON), and a
    // POST sent on such a stale connection fails without a retry.
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(0)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// Starts control on `addr` (port 0 for any) in `dir`.
pub fn start_control(dir: &Path, addr: &str, env: &[(&str, &str)]) -> Control {
    let mut command = Command::new(target_dir_binary("shortline-control"));
    command
        .arg("serve")
        .env_clear()
        .env("SHORTLINE_DATA_DIR", dir)
        .env("SHORTLINE_CONTROL_LISTEN", addr)
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
    let mut child = command.spawn().expect("spawn control");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("control listening on http://") {
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("control address");
    Control {
        child,
        addr,
        agent: agent(),
    }
}

impl Control {
    pub fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.request_as(ADMIN_TOKEN, method, path, body)
    }

    /// A request with the key `token`.
    pub fn request_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("http://{}{path}", self.addr);
        let auth = format!("Bearer {token}");
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(&b),
            ("PATCH", Some(b)) => self
                .agent
                .patch(&url)
                .header("Authorization", &auth)
                .send_json(&b),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(&b),
            other => panic!("unsupported {other:?}"),
        };
        let mut response = response.expect("control request");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A sample from control's `/metrics`, 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let url = format!("http://{}/metrics", self.addr);
        let text = self
            .agent
            .get(&url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Creates a link; returns its code.
    pub fn create(&self, body: Value) -> String {
        let (status, link) = self.request("POST", "/api/v1/links", Some(body));
        assert_eq!(status, 201, "{link}");
        link["code"].as_str().unwrap().to_owned()
    }

    pub fn clicks(&self, code: &str) -> u64 {
        let (status, link) = self.request("GET", &format!("/api/v1/links/{code}"), None);
        assert_eq!(status, 200, "{link}");
        link["clicks"].as_u64().unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running proxy.
#[allow(missing_debug_implementations)]
pub struct Proxy {
    child: Child,
    pub port: u16,
    pub metrics_port: u16,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

/// Starts a proxy sharing `dir` with a control plane at `control`.
pub fn start_proxy(dir: &Path, control: SocketAddr, env: &[(&str, &str)]) -> Proxy {
    let [port, metrics_port] = free_ports();
    let mut all: Vec<(String, String)> = vec![
        (
            "SHORTLINE_DATA_DIR".into(),
            dir.to_string_lossy().into_owned(),
        ),
        ("SHORTLINE_CONTROL_LISTEN".into(), control.to_string()),
        ("SHORTLINE_PROXY_LISTEN".into(), format!("127.0.0.1:{port}")),
        (
            "SHORTLINE_PROXY_METRICS_LISTEN".into(),
            format!("127.0.0.1:{metrics_port}"),
        ),
        ("SHORTLINE_CLICK_FLUSH_INTERVAL_MS".into(), "50".into()),
        ("SHORTLINE_GRACE_PERIOD_SECONDS".into(), "1".into()),
        ("SHORTLINE_RECONNECT_BACKOFF_MAX_MS".into(), "200".into()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    for (k, v) in env {
        all.push(((*k).into(), (*v).into()));
    }
    let proxy = spawn_proxy(&all, &[], port, metrics_port, dir);
    proxy.wait_ready();
    proxy
}

fn spawn_proxy(
    env: &[(String, String)],
    args: &[&str],
    port: u16,
    metrics_port: u16,
    dir: &Path,
) -> Proxy {
    let mut command = Command::new(target_dir_binary("shortline-proxy"));
    command
        .args(args)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    Proxy {
        child: command.spawn().expect("spawn proxy"),
        port,
        metrics_port,
        dir: dir.to_path_buf(),
        env: env.to_vec(),
    }
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on a new connection and reads the whole answer.
pub fn raw_request(port: u16, request: &str) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_answer(&raw)
}

/// An HTTP answer as read whole from a connection.
pub fn parse_answer(raw: &[u8]) -> std::io::Result<Answer> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

impl Proxy {
    /// `GET path` with `Connection: close`.
    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, "")
    }

    pub fn request(&self, method: &str, path: &str, extra_headers: &str) -> Answer {
        raw_request(
            self.port,
            &format!("{method} {path} HTTP/1.1\r\nHost: s.example\r\n{extra_headers}Connection: close\r\n\r\n"),
        )
        .expect("proxy answered")
    }

    pub fn metrics(&self) -> String {
        raw_request(
            self.metrics_port,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .map(|a| a.body)
        .unwrap_or_default()
    }

    pub fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while raw_request(
            self.port,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .is_err()
        {
            assert!(Instant::now() < deadline, "proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a second process that takes over this one's sockets
    /// (`-u`), then tells this one to hand them over (SIGQUIT).
    pub fn upgrade(&mut self) {
        // The new process binds the upgrade socket anew; wait for that before
        // telling the old one to hand its listeners over.
        let socket = self.dir.join("proxy-upgrade.sock");
        let _ = std::fs::remove_file(&socket);
        let mut next = spawn_proxy(&self.env, &["-u"], self.port, self.metrics_port, &self.dir);
        eventually(60, "the new process to wait on the upgrade socket", || {
            socket.exists()
        });
        self.signal(libc::SIGQUIT);
        std::mem::swap(self, &mut next);
        // `next` is now the old process: wait for it to finish draining.
        let _ = next.child.wait();
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid with a valid signal.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// SIGTERM and wait.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A control plane and a proxy sharing a fresh data directory.
#[allow(missing_debug_implementations)]
pub struct System {
    pub proxy: Proxy,
    pub control: Control,
    pub dir: tempfile::TempDir,
}

pub fn system(control_env: &[(&str, &str)], proxy_env: &[(&str, &str)]) -> System {
    let dir = tempfile::tempdir().unwrap();
    let control = start_control(dir.path(), "127.0.0.1:0", control_env);
    let proxy = start_proxy(dir.path(), control.addr, proxy_env);
    System {
        proxy,
        control,
        dir,
    }
}

impl System {
    /// Creates a link and waits until the proxy answers it.
    pub fn create_visible(&self, body: Value) -> String {
        let code = self.control.create(body);
        // The preview page, so the check itself is neither a click nor a HEAD.
        eventually(10, "the new code to reach the proxy", || {
            self.proxy.get(&format!("/{code}+")).status != 404
        });
        code
    }
}

pub fn link(url: &str) -> Value {
    json!({ "url": url })
}

pub use shortline_common::testing::{
    embedded_only, eventually, eventually_eq, fdb_cluster, fdb_env,
};
