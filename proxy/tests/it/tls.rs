//! HTTPS on the redirect listener: each SNI name gets its own certificate,
//! sessions resume, certificates replaced on disk serve new handshakes
//! with no request failing, and a bad certificate is refused with its
//! reason, at start-up and at a reload.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::{Answer, eventually, free_ports, link, parse_answer, system, target_dir_binary};

/// A certificate authority for the tests, trusted by their clients.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// The authority's certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// The authority's certificate, DER.
    pub fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// Writes `dir/file.crt` and `dir/file.key` for `names`, valid until
    /// `until` (a year) when given; returns the certificate as DER. The
    /// key is written first and both are renamed into place, as an
    /// operator or an ACME client replaces them.
    pub fn issue(&self, dir: &Path, file: &str, names: &[&str], until: Option<i32>) -> Vec<u8> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        if let Some(year) = until {
            params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        for (extension, text) in [("key", key.serialize_pem()), ("crt", cert.pem())] {
            let tmp = dir.join(format!(".{file}.{extension}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(format!("{file}.{extension}"))).unwrap();
        }
        cert.der().to_vec()
    }

    /// A client that keeps session tickets, so its handshakes resume.
    fn client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        Arc::new(self.config(versions))
    }

    /// A client that never resumes: each handshake shows the certificate
    /// in force (a resumed one shows the session's first).
    pub fn fresh_client(&self) -> Arc<rustls::ClientConfig> {
        let mut config = self.config(&[&rustls::version::TLS13, &rustls::version::TLS12]);
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    fn config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// What one HTTPS request saw.
pub struct Seen {
    pub answer: Answer,
    certificate: Vec<u8>,
    resumed: bool,
    alpn: Option<Vec<u8>>,
}

/// `GET path` over a new TLS connection with SNI `name`.
pub fn https_get(
    port: u16,
    name: &str,
    path: &str,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<Seen> {
    let server = ServerName::try_from(name.to_owned()).map_err(std::io::Error::other)?;
    let conn =
        rustls::ClientConnection::new(Arc::clone(config), server).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut raw = Vec::new();
    // Strict: an answer not ended by close_notify is an error here.
    tls.read_to_end(&mut raw)?;
    let certificate = tls
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c: &CertificateDer<'_>| c.to_vec())
        .unwrap_or_default();
    Ok(Seen {
        answer: parse_answer(&raw)?,
        certificate,
        resumed: tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        alpn: tls.conn.alpn_protocol().map(<[u8]>::to_vec),
    })
}

#[test]
fn each_name_gets_its_certificate_and_replaced_ones_serve_without_a_failure() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Authority::new();
    let a = ca.issue(certs.path(), "a", &["a.test"], None);
    let b = ca.issue(certs.path(), "b", &["b.test", "*.b.test"], None);
    let c = ca.issue(certs.path(), "c", &["c.test"], None);
    let [port] = free_ports();
    let listen = format!("127.0.0.1:{port}");
    let dir = certs.path().to_string_lossy().into_owned();
    let sys = system(
        &[],
        &[
            ("SHORTLINE_PROXY_TLS_LISTEN", listen.as_str()),
            ("SHORTLINE_PROXY_TLS_DIR", dir.as_str()),
            ("SHORTLINE_PROXY_TLS_RELOAD_MS", "100"),
        ],
    );
    let code = sys.create_visible(link("https://example.com/secure"));
    let path = format!("/{code}");
    let client = ca.client(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    let fresh = ca.fresh_client();

    for (name, expected) in [
        ("a.test", &a),
        ("b.test", &b),
        ("www.b.test", &b),
        ("c.test", &c),
    ] {
        let seen = https_get(port, name, &path, &fresh).unwrap();
        assert_eq!(seen.answer.status, 302, "{name}: {:?}", seen.answer);
        assert_eq!(
            seen.answer.header("location"),
            Some("https://example.com/secure")
        );
        assert_eq!(
            &seen.certificate, expected,
            "{name} gets its own certificate"
        );
        assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    }
    // A name no certificate serves: no handshake.
    assert!(https_get(port, "nothing.test", &path, &client).is_err());
    // TLS 1.2 alone is served too.
    let old = ca.client(&[&rustls::version::TLS12]);
    assert_eq!(
        https_get(port, "a.test", &path, &old)
            .unwrap()
            .answer
            .status,
        302
    );
    // The client kept a ticket: the next handshake resumes.
    eventually(30, "a resumed session", || {
        https_get(port, "a.test", &path, &client).is_ok_and(|s| s.resumed)
    });
    assert!(sys.proxy.metric("proxy_tls_resumed_total") >= 1.0);
    assert!(sys.proxy.metric("proxy_tls_certificate_expiry_seconds") > 86_400.0);

    // Replaced under load: new connections all the while, none fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, done, failed) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&failed));
        let (client, path) = (Arc::clone(&client), path.clone());
        std::thread::spawn(move || {
            // Bounded: it stops when told, or after this many requests.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match https_get(port, "a.test", &path, &client) {
                    Ok(seen) if seen.answer.status == 302 => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    eventually(60, "requests under load", || {
        done.load(Ordering::Relaxed) >= 20
    });
    let renewed = ca.issue(certs.path(), "a", &["a.test"], None);
    eventually(60, "the new certificate in force", || {
        https_get(port, "a.test", &path, &fresh).is_ok_and(|s| s.certificate == renewed)
    });
    let before = done.load(Ordering::Relaxed);
    eventually(60, "more requests after the change", || {
        done.load(Ordering::Relaxed) >= before + 20
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");

    // An expired replacement is refused; the certificate in force stays.
    let errors = sys.proxy.metric("proxy_tls_certificate_load_errors_total");
    ca.issue(certs.path(), "c", &["c.test"], Some(2001));
    eventually(60, "the expired certificate refused", || {
        sys.proxy.metric("proxy_tls_certificate_load_errors_total") > errors
    });
    assert_eq!(
        https_get(port, "c.test", &path, &fresh)
            .unwrap()
            .certificate,
        c
    );
}

/// Starts a proxy with HTTPS on `certs` and returns what it printed.
fn failed_start(certs: &Path) -> String {
    let data = tempfile::tempdir().unwrap();
    let [port, tls, metrics] = free_ports();
    let out = Command::new(target_dir_binary("shortline-proxy"))
        .env_clear()
        .env("SHORTLINE_DATA_DIR", data.path())
        .env("SHORTLINE_PROXY_LISTEN", format!("127.0.0.1:{port}"))
        .env("SHORTLINE_PROXY_TLS_LISTEN", format!("127.0.0.1:{tls}"))
        .env(
            "SHORTLINE_PROXY_METRICS_LISTEN",
            format!("127.0.0.1:{metrics}"),
        )
        .env("SHORTLINE_PROXY_TLS_DIR", certs)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a bad certificate must stop the start"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_certificate_stops_the_start_with_its_reason() {
    let ca = Authority::new();
    let expired = tempfile::tempdir().unwrap();
    ca.issue(expired.path(), "old", &["old.test"], Some(2001));
    let stderr = failed_start(expired.path());
    assert!(
        stderr.contains("old.crt") && stderr.contains("expired"),
        "{stderr}"
    );

    let mismatched = tempfile::tempdir().unwrap();
    ca.issue(mismatched.path(), "one", &["one.test"], None);
    ca.issue(mismatched.path(), "two", &["two.test"], None);
    std::fs::copy(
        mismatched.path().join("two.key"),
        mismatched.path().join("one.key"),
    )
    .unwrap();
    let stderr = failed_start(mismatched.path());
    assert!(
        stderr.contains("one.crt") && stderr.contains("does not fit"),
        "{stderr}"
    );
}

#[test]
fn without_certificates_yet_the_listener_starts_and_serves_once_one_arrives() {
    let certs = tempfile::tempdir().unwrap();
    // Not there yet: the proxy makes it, as ACME's first certificate is
    // written into it after the proxy started.
    let dir = certs.path().join("tls");
    let [port] = free_ports();
    let listen = format!("127.0.0.1:{port}");
    let dir_text = dir.to_string_lossy().into_owned();
    let sys = system(
        &[],
        &[
            ("SHORTLINE_PROXY_TLS_LISTEN", listen.as_str()),
            ("SHORTLINE_PROXY_TLS_DIR", dir_text.as_str()),
            ("SHORTLINE_PROXY_TLS_RELOAD_MS", "100"),
        ],
    );
    let code = sys.create_visible(link("https://example.com/later"));
    let path = format!("/{code}");
    let ca = Authority::new();
    let client = ca.fresh_client();
    assert!(
        https_get(port, "late.test", &path, &client).is_err(),
        "no certificate, no handshake"
    );
    ca.issue(&dir, "late", &["late.test"], None);
    eventually(30, "the new certificate to serve", || {
        https_get(port, "late.test", &path, &client).is_ok_and(|s| s.answer.status == 302)
    });
    // Every file gone: the set in force stays.
    std::fs::remove_file(dir.join("late.crt")).unwrap();
    std::fs::remove_file(dir.join("late.key")).unwrap();
    eventually(30, "the emptied directory to be refused", || {
        sys.proxy.metric("proxy_tls_certificate_load_errors_total") >= 1.0
    });
    assert_eq!(
        https_get(port, "late.test", &path, &client)
            .unwrap()
            .answer
            .status,
        302
    );
}

#[test]
fn a_graceful_upgrade_with_https_fails_no_request() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Authority::new();
    ca.issue(certs.path(), "up", &["up.test"], None);
    let [port] = free_ports();
    let listen = format!("127.0.0.1:{port}");
    let dir = certs.path().to_string_lossy().into_owned();
    let sys = system(
        &[],
        &[
            ("SHORTLINE_PROXY_TLS_LISTEN", listen.as_str()),
            ("SHORTLINE_PROXY_TLS_DIR", dir.as_str()),
        ],
    );
    let code = sys.create_visible(link("https://example.com/upgraded"));
    let path = format!("/{code}");
    let mut proxy = sys.proxy;
    let client = ca.client(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // New connections all the while, over HTTPS and plain HTTP; bounded by
    // a request cap and stopped when told.
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            let (client, path, plain) = (Arc::clone(&client), path.clone(), proxy.port);
            std::thread::spawn(move || {
                for _ in 0..1_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let status = if i % 2 == 0 {
                        https_get(port, "up.test", &path, &client).map(|s| s.answer.status)
                    } else {
                        crate::raw_request(
                            plain,
                            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                        )
                        .map(|a| a.status)
                    };
                    match status {
                        Ok(302) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed request: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let served_since = |before: u64, what: &str| {
        eventually(120, what, || ok.load(Ordering::Relaxed) >= before + 50);
    };
    served_since(0, "the first process to serve under load");
    proxy.upgrade();
    served_since(ok.load(Ordering::Relaxed), "the second process to serve");
    proxy.upgrade();
    served_since(ok.load(Ordering::Relaxed), "the third process to serve");
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the upgrades ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(
        https_get(port, "up.test", &path, &client)
            .unwrap()
            .answer
            .status,
        302
    );
    drop(sys.control);
}
