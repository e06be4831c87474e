//! The control plane's shared state and start-up: secrets, the bootstrap
//! admin key, id leasing and rate limiters.

pub mod domains;
pub mod keys;
pub mod streams;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore;
use shortline_store::Seq;
use tokio::sync::{Mutex, watch};

use crate::commit::CommitError;
use crate::commit::Committer;
use crate::config::Config;
use crate::db::{Backend, Space};
use crate::domain::auth::{self, Principal};
use crate::domain::codes::Permutation;
use crate::domain::validate::Validator;
use crate::model::{KeyDoc, Role};
use keys::KeyCache;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub backend: Arc<dyn Backend>,
    pub committer: Committer,
    pub analytics: Arc<crate::analytics::Analytics>,
    pub validator: Validator,
    pub permutation: Permutation,
    pub keys: KeyCache,
    pub internal_token: String,
    /// The newest committed change sequence.
    pub committed: watch::Receiver<crate::commit::Committed>,
    committed_tx: Arc<watch::Sender<crate::commit::Committed>>,
    /// The sequence of the newest snapshot file.
    pub snapshot: watch::Sender<Seq>,
    /// Set once shutdown begins: long-lived streams end so the server can drain.
    pub shutdown: watch::Sender<bool>,
    ids: Mutex<IdBlock>,
    limiters: Limiters,
    /// The threat list in force (empty when none is configured).
    pub threats: crate::domain::threats::Shared,
    /// The short domains, as last read.
    pub domains: domains::Domains,
    /// How far each change-stream subscriber was sent.
    pub streams: streams::Streams,
}

/// Write rate limits: per key by role, per client address, and the tighter
/// per-address limits of unauthenticated writes.
#[derive(Debug)]
struct Limiters {
    admin: DefaultKeyedRateLimiter<String>,
    user: DefaultKeyedRateLimiter<String>,
    ip: DefaultKeyedRateLimiter<IpAddr>,
    anonymous: DefaultKeyedRateLimiter<IpAddr>,
    report: DefaultKeyedRateLimiter<IpAddr>,
    login: DefaultKeyedRateLimiter<IpAddr>,
}

impl Limiters {
    fn new(config: &Config) -> Self {
        fn nonzero(n: u32) -> NonZeroU32 {
            NonZeroU32::new(n).expect("checked at load")
        }
        fn per_second<K: std::hash::Hash + Eq + Clone>(
            rate: u32,
            burst: u32,
        ) -> DefaultKeyedRateLimiter<K> {
            RateLimiter::keyed(Quota::per_second(nonzero(rate)).allow_burst(nonzero(burst)))
        }
        fn per_minute(rate: u32) -> DefaultKeyedRateLimiter<IpAddr> {
            RateLimiter::keyed(Quota::per_minute(nonzero(rate)).allow_burst(nonzero(rate)))
        }
        Self {
            admin: per_second(config.rate_limit_admin_per_second, config.rate_limit_burst),
            user: per_second(
                config.rate_limit_user_per_second,
                config.rate_limit_user_per_second.saturating_mul(2),
            ),
            ip: per_second(config.rate_limit_ip_per_second, config.rate_limit_burst),
            anonymous: per_minute(config.rate_limit_anonymous_per_minute),
            report: per_minute(config.rate_limit_report_per_minute),
            login: per_minute(config.rate_limit_login_per_minute),
        }
    }
}

/// A write refused by a rate limit: which one, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded ({limit}); retry in {retry_after_seconds} s")]
pub struct RateLimited {
    pub limit: &'static str,
    pub retry_after_seconds: u64,
}

/// Which kind of unauthenticated request a client makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    Create,
    Report,
    /// A public read (a link's destination history): the per-address
    /// limit only.
    Read,
    /// A sign-in or a password set with a one-time token.
    Login,
}

fn too_many(
    not_until: governor::NotUntil<governor::clock::QuantaInstant>,
    kind: &'static str,
) -> RateLimited {
    let wait = not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::QuantaClock::default(),
    ));
    metrics::counter!("control_rate_limited_total", "limit" => kind).increment(1);
    RateLimited {
        limit: kind,
        retry_after_seconds: wait.as_secs().max(1),
    }
}

#[derive(Debug, Default)]
struct IdBlock {
    next: u64,
    end: u64,
}

/// What start-up tells the operator once.
#[derive(Debug, Default)]
pub struct Bootstrap {
    /// A generated admin token, printed once and never stored.
    pub generated_admin_token: Option<String>,
}

impl AppState {
    /// Builds the state over an opened backend; starts the committer.
    pub fn start(config: Config, backend: Arc<dyn Backend>) -> Result<(Arc<Self>, Bootstrap)> {
        let permutation =
            Permutation::new(&load_or_create_secret(&config.layout().permutation_key())?);
        let internal_token = match &config.internal_token {
            Some(token) => token.clone(),
            None => {
                let secret = load_or_create_secret(&config.layout().internal_token_file())?;
                shortline_common::layout::token_of(&secret)
            }
        };
        let last = backend.read(|txn| txn.last_seq())?;
        let (committed_tx, committed) = watch::channel(crate::commit::Committed {
            seq: last,
            at: std::time::Instant::now(),
        });
        let committed_tx = Arc::new(committed_tx);
        let committer = Committer::start(
            Arc::clone(&backend),
            config.commit_queue_max,
            config.commit_batch_max,
            Arc::clone(&committed_tx),
        )
        .context("cannot start the committer thread")?;
        let now = crate::model::now_unix();
        let public_url = config.public_url.clone();
        let mut migrated = false;
        backend.write(&mut |txn| {
            migrated = crate::domain::domains::migrate(txn, &public_url, now)?;
            Ok(())
        })?;
        if migrated {
            tracing::info!(%public_url, "made the first short domain from public_url");
        }
        let domains = domains::Domains::default();
        domains.refresh(&*backend)?;
        let bootstrap = bootstrap_admin(&config, &*backend)?;
        let through = backend.read(|txn| crate::analytics::Analytics::stored_through(txn))?;
        let analytics = Arc::new(analytics_from(&config, through)?);
        let state = Self {
            analytics,
            validator: Validator::new(&config),
            limiters: Limiters::new(&config),
            threats: crate::domain::threats::load_configured(&config)?,
            config,
            backend,
            committer,
            permutation,
            keys: KeyCache::default(),
            internal_token,
            committed,
            committed_tx,
            snapshot: watch::channel(Seq(0)).0,
            shutdown: watch::channel(false).0,
            ids: Mutex::new(IdBlock::default()),
            domains,
            streams: streams::Streams::default(),
        };
        Ok((Arc::new(state), bootstrap))
    }

    /// The short domain of a link's table key and the start of its short
    /// URLs (`https://s.example`).
    #[must_use]
    pub fn domain_of(&self, key: &str) -> (String, String) {
        let cached = self.domains.current().of_key(key).cloned();
        let found = match (cached, crate::domain::domains::split_key(key).0) {
            (Some(doc), _) => Some(doc),
            // Made by another process since this one last read the domains.
            (None, Some(name)) => self.domains.find(&*self.backend, name).ok().flatten(),
            (None, None) => None,
        };
        match found {
            Some(doc) => (doc.name.clone(), doc.base_url()),
            None => (
                crate::domain::domains::split_key(key)
                    .0
                    .unwrap_or_default()
                    .to_owned(),
                self.config.public_url.trim_end_matches('/').to_owned(),
            ),
        }
    }

    /// Publishes a sequence committed by another process sharing the store.
    pub fn publish_committed(&self, seq: Seq) {
        crate::commit::publish_seq(&self.committed_tx, seq);
    }

    /// Takes `count` link ids, leasing new blocks from the store as needed.
    pub async fn take_ids(&self, count: usize) -> Result<Vec<u64>, CommitError> {
        let mut block = self.ids.lock().await;
        let mut ids = Vec::with_capacity(count);
        while ids.len() < count {
            if block.next == block.end {
                let size = self.config.id_block_size.max((count - ids.len()) as u64);
                let start = self
                    .committer
                    .write(move |txn| {
                        let start = txn
                            .get(Space::Meta, crate::db::keys::ID_NEXT)?
                            .and_then(|v| v.try_into().ok())
                            .map_or(0, u64::from_le_bytes);
                        txn.set(
                            Space::Meta,
                            crate::db::keys::ID_NEXT,
                            &(start + size).to_le_bytes(),
                        )?;
                        Ok(start)
                    })
                    .await?;
                metrics::counter!("control_id_blocks_leased_total").increment(1);
                *block = IdBlock {
                    next: start,
                    end: start + size,
                };
            }
            ids.push(block.next);
            block.next += 1;
        }
        Ok(ids)
    }

    /// Gives each planned link an id of its own (see [`AppState::take_ids`]).
    pub async fn number(
        &self,
        plans: Vec<crate::domain::links::NewLink>,
    ) -> Result<Vec<crate::domain::links::NewLink>, CommitError> {
        let ids = self.take_ids(plans.len()).await?;
        Ok(plans
            .into_iter()
            .zip(ids)
            .map(|(plan, id)| crate::domain::links::NewLink {
                id: shortline_store::LinkId(id),
                ..plan
            })
            .collect())
    }

    /// Charges one write to the caller's key (at its role's rate) and address.
    pub fn limit_write(&self, principal: &Principal, client: IpAddr) -> Result<(), RateLimited> {
        let (limiter, kind) = match principal.role {
            Role::Admin => (&self.limiters.admin, "admin"),
            Role::User => (&self.limiters.user, "user"),
        };
        limiter
            .check_key(&principal.key_id)
            .map_err(|n| too_many(n, kind))?;
        self.limiters
            .ip
            .check_key(&client)
            .map_err(|n| too_many(n, "address"))
    }

    /// Charges one unauthenticated write (anonymous create or abuse report)
    /// to the client's address.
    pub fn limit_unauthenticated(
        &self,
        kind: Unauthenticated,
        client: IpAddr,
    ) -> Result<(), RateLimited> {
        let (limiter, label) = match kind {
            Unauthenticated::Create => (&self.limiters.anonymous, "anonymous"),
            Unauthenticated::Report => (&self.limiters.report, "report"),
            Unauthenticated::Read => (&self.limiters.ip, "address"),
            Unauthenticated::Login => (&self.limiters.login, "login"),
        };
        limiter.check_key(&client).map_err(|n| too_many(n, label))?;
        if matches!(kind, Unauthenticated::Read | Unauthenticated::Login) {
            return Ok(());
        }
        self.limiters
            .ip
            .check_key(&client)
            .map_err(|n| too_many(n, "address"))
    }
}

/// Reads a 32-byte secret, creating it (mode 0600) on first start.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => bytes.try_into().map_err(|_| {
            anyhow::anyhow!(
                "{} is not a 32-byte secret; restore it from backup",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            write_private(path, &secret)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `bytes` to `path` readable by the owner alone: to a temporary
/// file, synced, renamed over `path`, and the directory synced, so a reader
/// sees the old file or the new one whole.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Makes sure an admin key exists: the configured token, or a generated one.
fn bootstrap_admin(config: &Config, backend: &dyn Backend) -> Result<Bootstrap> {
    let now = crate::model::now_unix();
    let mut existing_admin = false;
    let mut configured_present = false;
    backend.read(|txn| {
        existing_admin = auth::list_keys(txn, usize::MAX)?
            .iter()
            .any(|k| k.role == Role::Admin);
        if let Some(token) = &config.admin_token {
            configured_present = auth::find_key(txn, token)?.is_some();
        }
        Ok(())
    })?;
    let token = match &config.admin_token {
        Some(_) if configured_present => return Ok(Bootstrap::default()),
        Some(token) => token.clone(),
        None if existing_admin => return Ok(Bootstrap::default()),
        None => auth::new_token(),
    };
    put_admin_key(backend, "bootstrap admin", &token, now)?;
    Ok(Bootstrap {
        generated_admin_token: config.admin_token.is_none().then_some(token),
    })
}

fn put_admin_key(backend: &dyn Backend, name: &str, token: &str, now: i64) -> Result<()> {
    let doc: KeyDoc = auth::key_doc(
        auth::new_key_id(),
        name.into(),
        Role::Admin,
        "admin".into(),
        token,
        now,
    );
    let hash = auth::token_hash(token);
    backend.write(&mut |txn| auth::put_key(txn, &doc, &hash))?;
    Ok(())
}

/// Adds a new admin key named `name` and returns its token: the way back in
/// when the admin token is lost (`shortline-control admin-token`).
pub fn mint_admin_key(backend: &dyn Backend, name: &str) -> Result<String> {
    if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        anyhow::bail!("--name must be 1 to 100 printable characters");
    }
    let token = auth::new_token();
    put_admin_key(backend, name, &token, crate::model::now_unix())?;
    Ok(token)
}

/// The click aggregator as configured: the country database and the export
/// folder are opened here, so a bad path stops start-up with its name.
fn analytics_from(config: &Config, through: u64) -> Result<crate::analytics::Analytics> {
    use crate::analytics::{aggregate::Settings, export::Exporter};
    use shortline_common::geo::GeoIp;
    let geo = config
        .geoip_database
        .as_deref()
        .map(GeoIp::open)
        .transpose()
        .context("bad configuration: geoip_database")?;
    let export = config
        .click_export_dir
        .as_deref()
        .map(|dir| {
            Exporter::open(
                dir,
                std::time::Duration::from_secs(config.click_export_rotate_seconds),
                config.click_export_bytes_max,
            )
            .with_context(|| format!("bad configuration: click_export_dir {}", dir.display()))
        })
        .transpose()?;
    crate::analytics::Analytics::open(
        Settings {
            flush_interval: std::time::Duration::from_millis(config.analytics_flush_ms),
            flush_keys_max: config.flush_keys_max(),
            top_n: i64::from(config.analytics_top_n),
            hourly_retention_days: config.analytics_hourly_retention_days,
        },
        geo,
        export,
        &config.layout().click_log(),
        through,
    )
    .context("cannot open the click log")
}
