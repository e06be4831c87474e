//! Certificates over ACME, end to end against a real ACME server on
//! loopback (Debian's `pebble`, with `pebble-challtestsrv` as its DNS,
//! which resolves every name to 127.0.0.1): control orders the
//! certificate, pebble validates the HTTP-01 challenge through the proxy,
//! the proxy serves the certificate over HTTPS by SNI without a restart,
//! and renews it ahead of its end.
//!
//! Without pebble installed the test says so and passes, unless
//! `SHORTLINE_TEST_REQUIRE_PEBBLE=1` (as CI sets it) makes that a failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

use crate::tls::Authority;
use crate::{eventually, free_ports, link, raw_request, system};

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pebble_installed() -> bool {
    let found = Command::new("pebble")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("SHORTLINE_TEST_REQUIRE_PEBBLE").is_none(),
            "pebble is not installed (apt-get install pebble)"
        );
        eprintln!("SKIPPED: the ACME test needs Debian's pebble (apt-get install pebble)");
    }
    found
}

/// A TLS client trusting `roots` (DER), without session resumption.
fn client(roots: &[Vec<u8>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(CertificateDer::from(root.clone())).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// `GET path` over TLS with SNI `name`: the raw answer and the leaf
/// certificate the server showed.
fn fetch(
    port: u16,
    name: &str,
    path: &str,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<(String, Vec<u8>)> {
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
    // pebble's management listener may end without close_notify.
    let _ = tls.read_to_end(&mut raw);
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((String::from_utf8_lossy(&raw).into_owned(), leaf))
}

#[test]
fn a_certificate_is_ordered_validated_through_the_proxy_served_and_renewed() {
    if !pebble_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // pebble's own HTTPS listener, with a certificate from a test authority
    // that control is told to trust (acme_ca_file).
    let listener_ca = Authority::new();
    listener_ca.issue(work.path(), "pebble", &["localhost", "127.0.0.1"], None);
    let ca_file = work.path().join("listener-ca.pem");
    std::fs::write(&ca_file, listener_ca.pem()).unwrap();
    let [
        acme_port,
        management_port,
        dns_port,
        dns_management_port,
        tls_alpn_port,
        tls_port,
    ] = free_ports();

    let directory = format!("https://127.0.0.1:{acme_port}/dir");
    let ca_text = ca_file.to_string_lossy().into_owned();
    let listen = format!("127.0.0.1:{tls_port}");
    let sys = system(
        &[
            ("SHORTLINE_ACME_DIRECTORY_URL", directory.as_str()),
            ("SHORTLINE_ACME_CA_FILE", ca_text.as_str()),
            ("SHORTLINE_ACME_CONTACT", "mailto:ops@example.com"),
            ("SHORTLINE_ACME_CHECK_INTERVAL_MS", "200"),
            ("SHORTLINE_ACME_RETRY_MIN_MS", "200"),
            ("SHORTLINE_ACME_RETRY_MAX_MS", "2000"),
            // pebble issues for an hour (below): renewed 20 s after issue.
            ("SHORTLINE_ACME_RENEW_BEFORE_SECONDS", "3580"),
        ],
        &[
            ("SHORTLINE_PROXY_TLS_LISTEN", listen.as_str()),
            ("SHORTLINE_PROXY_TLS_RELOAD_MS", "100"),
        ],
    );

    let _dns = Killed(
        Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{dns_management_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv"),
    );
    let config = json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme_port}"),
        "managementListenAddress": format!("127.0.0.1:{management_port}"),
        "certificate": work.path().join("pebble.crt"),
        "privateKey": work.path().join("pebble.key"),
        // HTTP-01 is validated on the proxy's plain listener.
        "httpPort": sys.proxy.port,
        "tlsPort": tls_alpn_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "certificateValidityPeriod": 3600,
    }});
    let config_file = work.path().join("pebble.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let _pebble = Killed(
        Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble"),
    );
    let listener_client = client(&[listener_ca.der()]);
    let mut issuer_root = None;
    eventually(60, "pebble to answer with its issuing root", || {
        let root = fetch(management_port, "localhost", "/roots/0", &listener_client);
        issuer_root = root
            .ok()
            .filter(|(raw, _)| raw.starts_with("HTTP/1.1 200"))
            .and_then(|(raw, _)| {
                let pem = raw.split_once("\r\n\r\n")?.1.to_owned();
                let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
                Some(parsed.contents)
            });
        issuer_root.is_some()
    });
    let proxy_client = client(&[issuer_root.unwrap()]);

    let (status, domain) = sys.control.request(
        "POST",
        "/api/v1/domains",
        Some(json!({"name": "secure.test", "https": true, "acme": true})),
    );
    assert_eq!(status, 201, "{domain}");
    let mut body = link("https://example.com/over-acme");
    body["domain"] = json!("secure.test");
    let (status, made) = sys.control.request("POST", "/api/v1/links", Some(body));
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        made["short_url"].as_str().unwrap(),
        format!("https://secure.test/{}", made["code"].as_str().unwrap())
    );
    let path = format!("/{}", made["code"].as_str().unwrap());

    // Ordered, validated through the proxy, written for it, served by SNI.
    let mut first = Vec::new();
    eventually(120, "the ACME certificate to serve secure.test", || {
        fetch(tls_port, "secure.test", &path, &proxy_client).is_ok_and(|(raw, leaf)| {
            first = leaf;
            raw.starts_with("HTTP/1.1 302")
                && raw.contains("Location: https://example.com/over-acme")
        })
    });
    assert!(
        sys.proxy
            .metric("proxy_requests_total{status=\"200\",kind=\"acme_challenge\"}")
            >= 1.0,
        "pebble fetched the challenge's answer from the proxy"
    );
    let (_, shown) = sys
        .control
        .request("GET", "/api/v1/domains/secure.test", None);
    assert!(shown["certificate"]["not_after"].is_string(), "{shown}");
    assert_eq!(shown["certificate"]["last_error"], json!(null), "{shown}");
    assert!(
        sys.control
            .metric("control_acme_orders_total{outcome=\"issued\"}")
            >= 1.0
    );
    let key = std::fs::metadata(sys.dir.path().join("tls/secure.test.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600,
        "the key is the owner's alone"
    );

    // Renewed ahead of its end, and served without a restart.
    eventually(120, "a renewed certificate to serve", || {
        fetch(tls_port, "secure.test", &path, &proxy_client)
            .is_ok_and(|(_, leaf)| !leaf.is_empty() && leaf != first)
    });
    assert!(
        sys.control
            .metric("control_acme_orders_total{outcome=\"issued\"}")
            >= 2.0
    );
    // Answered challenges are withdrawn.
    let stale = raw_request(
        sys.proxy.port,
        "GET /.well-known/acme-challenge/none HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(stale.status, 404);
}
