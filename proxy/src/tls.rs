//! HTTPS on the redirect listener: certificates from a directory, chosen by
//! SNI, put in force again when the files change.
//!
//! `proxy_tls_dir` holds pairs of PEM files, `NAME.crt` (the chain, leaf
//! first) with `NAME.key` (its private key). A certificate serves the DNS
//! names of its subjectAltName, wildcards (`*.example.com`) included; a
//! client without SNI gets the first file's. A pair is refused, with the
//! file and the reason, when the key does not fit the certificate, when the
//! certificate has expired or is not valid yet, or when it names no DNS
//! name: at start-up the proxy does not start, and at a reload the set in
//! force stays and the error is logged and counted. The directory is read
//! again every `proxy_tls_reload_ms`; a changed set serves the handshakes
//! that follow, while connections already open go on.
//!
//! TLS is rustls (pure Rust, memory safe, with its ring provider):
//! TLS 1.2 and 1.3 only, with rustls's cipher suites, all AEAD with
//! forward secrecy; ALPN `http/1.1`; resumption by session tickets, whose
//! keys rotate every six hours and are shared by every worker thread (one
//! configuration per process), and by a session cache for clients without
//! tickets. After the handshake the connection is served by the same loop
//! as plain HTTP ([`RedirectApp::serve`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::app::{RedirectApp, peer_of};
use crate::metrics::Metrics;

/// Sessions the server-side cache holds, for clients without tickets.
const SESSION_CACHE_ENTRIES: usize = 16_384;

/// Seconds since the Unix epoch, now.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What one certificate file serves.
#[derive(Debug, Clone)]
pub struct Served {
    pub file: PathBuf,
    pub names: Vec<String>,
    /// When it expires, in Unix seconds.
    pub not_after: i64,
}

/// A certificate directory as read: what serves each name.
#[derive(Debug, Default)]
pub struct Certificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com`, keyed `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For clients that send no SNI: the first file's.
    fallback: Option<Arc<CertifiedKey>>,
    pub served: Vec<Served>,
    /// The files read, with their modification times and sizes.
    stamp: Stamp,
}

type Stamp = Vec<(PathBuf, SystemTime, u64)>;

/// The `.crt` and `.key` files of `dir`, sorted, with what says they changed.
fn stamp(dir: &Path) -> Result<Stamp> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the certificate directory {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "crt" || e == "key") {
            let meta = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            files.push((path, meta.modified()?, meta.len()));
        }
    }
    files.sort();
    Ok(files)
}

impl Certificates {
    /// Reads every pair in `dir`, checked at `now` (Unix seconds).
    pub fn load(dir: &Path, now: i64) -> Result<Self> {
        let stamp = stamp(dir)?;
        let mut set = Self::default();
        for (file, _, _) in &stamp {
            if file.extension().is_some_and(|e| e == "crt") {
                let (served, key) = load_pair(file, now)?;
                let key = Arc::new(key);
                for name in &served.names {
                    match name.strip_prefix("*.") {
                        Some(parent) => set.wildcard.insert(parent.to_owned(), Arc::clone(&key)),
                        None => set.exact.insert(name.clone(), Arc::clone(&key)),
                    };
                }
                set.fallback.get_or_insert(key);
                set.served.push(served);
            }
        }
        set.stamp = stamp;
        Ok(set)
    }

    /// The certificate for a server name, exact first, then by wildcard.
    fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(Arc::clone(key));
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }

    /// When the first served certificate expires.
    fn expires_first(&self) -> i64 {
        self.served.iter().map(|s| s.not_after).min().unwrap_or(0)
    }
}

/// Reads `file` and the key beside it, and checks them.
fn load_pair(file: &Path, now: i64) -> Result<(Served, CertifiedKey)> {
    let key_file = file.with_extension("key");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{}: not a PEM certificate chain: {e}", file.display()))?;
    if chain.is_empty() {
        bail!("{}: holds no certificate", file.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
        anyhow!(
            "{}: no private key for {} ({e})",
            key_file.display(),
            file.display()
        )
    })?;
    let leaf = chain[0].clone();
    let certified = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| {
        anyhow!(
            "{}: the key in {} does not fit the certificate: {e}",
            file.display(),
            key_file.display()
        )
    })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| anyhow!("{}: the certificate does not parse: {e}", file.display()))?;
    let validity = parsed.validity();
    let not_after = validity.not_after.timestamp();
    if now > not_after {
        bail!(
            "{}: the certificate expired at {}",
            file.display(),
            validity.not_after
        );
    }
    if now < validity.not_before.timestamp() {
        bail!(
            "{}: the certificate is not valid before {}",
            file.display(),
            validity.not_before
        );
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(name) = name {
                names.push(name.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        bail!(
            "{}: the certificate names no DNS name (subjectAltName)",
            file.display()
        );
    }
    let served = Served {
        file: file.to_owned(),
        names,
        not_after,
    };
    Ok((served, certified))
}

/// Picks a certificate by SNI from the set in force.
#[derive(Debug)]
pub struct Resolver {
    current: ArcSwap<Certificates>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        match hello.server_name() {
            Some(name) => set.find(name),
            None => set.fallback.clone(),
        }
    }
}

/// The HTTPS side of the proxy: its certificates and its TLS configuration.
#[derive(Debug)]
pub struct Tls {
    dir: PathBuf,
    resolver: Arc<Resolver>,
    /// The files of the last set refused, so it is not read (and logged)
    /// again until they change.
    refused: std::sync::Mutex<Option<Stamp>>,
    config: Arc<ServerConfig>,
    metrics: Arc<Metrics>,
}

impl Tls {
    /// Reads the certificate directory; any bad pair is an error that
    /// names it.
    pub fn load(dir: &Path, metrics: Arc<Metrics>) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| {
            format!("cannot create the certificate directory {}", dir.display())
        })?;
        let set = Certificates::load(dir, unix_now())?;
        if set.served.is_empty() {
            tracing::warn!(
                dir = %dir.display(),
                "no certificate yet: handshakes are refused until NAME.crt and NAME.key appear (by hand or from ACME)"
            );
        }
        metrics.tls_loads.fetch_add(1, Relaxed);
        metrics
            .tls_expires_first_unix
            .store(set.expires_first(), Relaxed);
        for served in &set.served {
            tracing::info!(file = %served.file.display(), names = ?served.names, "certificate loaded");
        }
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(set),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS versions")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.ticketer = rustls::crypto::ring::Ticketer::new().context("TLS session tickets")?;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        Ok(Self {
            dir: dir.to_owned(),
            resolver,
            refused: std::sync::Mutex::default(),
            config: Arc::new(config),
            metrics,
        })
    }

    /// Reads the directory again if its files changed. A bad set is
    /// refused and the one in force stays. Returns whether a new set is in
    /// force.
    pub fn reload(&self) -> bool {
        let files = match stamp(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                self.refused(&e, Vec::new());
                return false;
            }
        };
        if files == self.resolver.current.load().stamp
            || self
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                == Some(&files)
        {
            return false;
        }
        match Certificates::load(&self.dir, unix_now()) {
            Ok(set) if set.served.is_empty() && !self.resolver.current.load().served.is_empty() => {
                let e = anyhow::anyhow!(
                    "no certificate left in {}; the set in force stays",
                    self.dir.display()
                );
                self.refused(&e, files);
                false
            }
            Ok(set) => {
                for served in &set.served {
                    tracing::info!(file = %served.file.display(), names = ?served.names, "certificate loaded");
                }
                self.metrics
                    .tls_expires_first_unix
                    .store(set.expires_first(), Relaxed);
                self.metrics.tls_loads.fetch_add(1, Relaxed);
                self.resolver.current.store(Arc::new(set));
                true
            }
            Err(e) => {
                self.refused(&e, files);
                false
            }
        }
    }

    fn refused(&self, error: &anyhow::Error, files: Stamp) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(files);
        self.metrics.tls_load_errors.fetch_add(1, Relaxed);
        tracing::error!(error = %format!("{error:#}"), "certificates not reloaded; the ones in force stay");
    }

    /// Reloads every `every` until the process ends, on a thread of its own.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let tls = Arc::clone(self);
        std::thread::Builder::new()
            .name("tls-reload".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    tls.reload();
                }
            })
            .expect("spawn the certificate reloader");
    }

    /// The application that serves the HTTPS listener.
    #[must_use]
    pub fn app(&self, app: Arc<RedirectApp>, handshake_timeout: Duration) -> TlsRedirect {
        TlsRedirect {
            app,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config)),
            handshake_timeout,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The redirect application behind a TLS handshake.
pub struct TlsRedirect {
    app: Arc<RedirectApp>,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TlsRedirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRedirect")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ServerApp for TlsRedirect {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = peer_of(&stream);
        let handshake =
            tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await;
        match handshake {
            Ok(Ok(tls)) => {
                self.metrics.tls_handshakes.fetch_add(1, Relaxed);
                if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    self.metrics.tls_resumed.fetch_add(1, Relaxed);
                }
                let mut tls = tls;
                self.app.serve(&mut tls, peer, true, shutdown).await;
                // close_notify, so the client knows the answer is whole.
                let _ = tokio::time::timeout(
                    self.handshake_timeout,
                    tokio::io::AsyncWriteExt::shutdown(&mut tls),
                )
                .await;
            }
            Ok(Err(e)) => {
                self.metrics.tls_handshake_failures.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, ?peer, "TLS handshake failed");
            }
            Err(_) => {
                self.metrics.tls_handshake_failures.fetch_add(1, Relaxed);
                tracing::debug!(?peer, "TLS handshake timed out");
            }
        }
        None
    }
}
