//! Certificates ordered and renewed over ACME (RFC 8555, with
//! `instant-acme`), answered by HTTP-01 challenges that every proxy serves
//! from its table.
//!
//! Every `acme_check_interval_ms`, for each domain with `acme` on:
//!
//! 1. The stored certificate, if any, is written for the proxy on this host
//!    (`NAME.crt` and `NAME.key` in `proxy_tls_dir`, key first, each renamed
//!    into place), which picks it up without a restart; so every host of a
//!    FoundationDB deployment gets every certificate.
//! 2. A certificate missing or within `acme_renew_before_seconds` of its end
//!    is ordered, unless a failure's backoff is still running or another
//!    process holds the domain's lease. The challenge answer is committed,
//!    the proxies here are waited for, then the server is told to validate.
//!    A failure is stored with its backoff (doubling from
//!    `acme_retry_min_ms`, or the server's `Retry-After` on a rate limit).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::domain::acme::{self, CertDoc};
use crate::domain::domains::{self, DomainDoc};
use crate::model::now_unix;
use crate::state::AppState;

/// How long a lease on ordering one domain lasts: longer than any order.
const LEASE_SECONDS: i64 = 600;
/// The longest wait for the proxies to be sent a challenge's answer.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// How long an order may take to become ready, and its certificate to come.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the checks until the process ends; does nothing without
/// `acme_directory_url`.
pub async fn acme_loop(state: Arc<AppState>) {
    let Some(directory) = state.config.acme_directory_url.clone() else {
        return;
    };
    let holder = format!("{}-{}", std::process::id(), rand::random::<u64>());
    let mut shutdown = state.shutdown.subscribe();
    let mut tick =
        tokio::time::interval(Duration::from_millis(state.config.acme_check_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut account = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = check(&state, &directory, &holder, &mut account).await {
            metrics::counter!("control_acme_errors_total").increment(1);
            tracing::warn!(error = %format!("{e:#}"), "ACME check failed");
        }
    }
}

/// One round over every ACME domain; one domain's failure does not stop
/// the others.
async fn check(
    state: &Arc<AppState>,
    directory: &str,
    holder: &str,
    account: &mut Option<Account>,
) -> anyhow::Result<()> {
    let worker = Arc::clone(state);
    let domains: Vec<DomainDoc> =
        tokio::task::spawn_blocking(move || worker.backend.read(|txn| domains::list(txn)))
            .await??
            .into_iter()
            .filter(|d| d.acme)
            .collect();
    for domain in domains {
        if let Err(e) = check_domain(state, directory, holder, account, &domain.name).await {
            metrics::counter!("control_acme_errors_total").increment(1);
            tracing::warn!(domain = %domain.name, error = %format!("{e:#}"), "ACME check failed");
        }
    }
    Ok(())
}

/// Writes `name`'s certificate out, and orders one when it is due.
async fn check_domain(
    state: &Arc<AppState>,
    directory: &str,
    holder: &str,
    account: &mut Option<Account>,
    name: &str,
) -> anyhow::Result<()> {
    let (worker, domain) = (Arc::clone(state), name.to_owned());
    let (cert, status) = tokio::task::spawn_blocking(move || {
        let stored = worker.backend.read(|txn| {
            Ok((
                acme::certificate(txn, &domain)?,
                acme::status(txn, &domain)?,
            ))
        })?;
        if let Some(cert) = &stored.0 {
            write_files(&worker.config.tls_dir(), &domain, cert)
                .with_context(|| format!("writing the certificate of {domain}"))?;
        }
        anyhow::Ok(stored)
    })
    .await??;
    let now = now_unix();
    if let Some(cert) = &cert {
        metrics::gauge!("control_acme_certificate_days_left", "domain" => name.to_owned())
            .set((cert.not_after - now) as f64 / 86_400.0);
    }
    let renew_before = i64::try_from(state.config.acme_renew_before_seconds).unwrap_or(i64::MAX);
    let due = cert
        .as_ref()
        .is_none_or(|c| c.not_after - now <= renew_before);
    if !due || status.next_attempt_at > now || !lease(state, name, holder, true).await? {
        return Ok(());
    }
    let outcome = order(state, directory, account, name).await;
    lease(state, name, holder, false).await?;
    match outcome {
        Ok(cert) => {
            let (dir, domain) = (state.config.tls_dir(), name.to_owned());
            tokio::task::spawn_blocking(move || write_files(&dir, &domain, &cert)).await??;
            metrics::counter!("control_acme_orders_total", "outcome" => "issued").increment(1);
            tracing::info!(domain = name, "ACME certificate issued");
        }
        Err(e) => {
            let limited = rate_limited(&e);
            let retry_after = limited.then(|| now + 3600);
            let message = format!("{e:#}");
            let config = &state.config;
            let retry = (
                i64::try_from(config.acme_retry_min_ms / 1000)
                    .unwrap_or(1)
                    .max(1),
                i64::try_from(config.acme_retry_max_ms / 1000)
                    .unwrap_or(i64::MAX)
                    .max(1),
            );
            let failed = {
                let (domain, message) = (name.to_owned(), message.clone());
                state
                    .committer
                    .write(move |txn| {
                        acme::record_failure(txn, &domain, &message, now, retry, retry_after)
                    })
                    .await?
            };
            let outcome = if limited { "rate_limited" } else { "failed" };
            metrics::counter!("control_acme_orders_total", "outcome" => outcome).increment(1);
            tracing::warn!(
                domain = name,
                error = %message,
                failures = failed.failures,
                next_attempt_at = failed.next_attempt_at,
                "ACME order failed"
            );
        }
    }
    Ok(())
}

/// Takes (`take`) or gives back the lease on ordering `domain`.
async fn lease(state: &AppState, domain: &str, holder: &str, take: bool) -> anyhow::Result<bool> {
    let (domain, holder) = (domain.to_owned(), holder.to_owned());
    let now = now_unix();
    Ok(state
        .committer
        .write(move |txn| {
            if take {
                acme::take_lease(txn, &domain, &holder, now, LEASE_SECONDS)
            } else {
                acme::release_lease(txn, &domain, &holder).map(|()| true)
            }
        })
        .await?)
}

/// Whether the ACME server refused for a rate limit.
fn rate_limited(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<instant_acme::Error>()
            .is_some_and(|e| match e {
                instant_acme::Error::Api(problem) => problem
                    .r#type
                    .as_deref()
                    .is_some_and(|t| t.ends_with(":rateLimited")),
                _ => false,
            })
    })
}

/// The account on `directory`: the stored one, or a new one, stored.
async fn account(state: &AppState, directory: &str) -> anyhow::Result<Account> {
    let builder = || match &state.config.acme_ca_file {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    let url = directory.to_owned();
    let stored = {
        let (backend, url) = (Arc::clone(&state.backend), url.clone());
        tokio::task::spawn_blocking(move || backend.read(|txn| acme::account(txn, &url))).await??
    };
    if let Some(bytes) = stored {
        let credentials: AccountCredentials =
            serde_json::from_slice(&bytes).context("the stored ACME account")?;
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact: Vec<&str> = state
        .config
        .acme_contact
        .iter()
        .map(String::as_str)
        .collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_owned(),
            None,
        )
        .await
        .context("creating the ACME account")?;
    let bytes = serde_json::to_vec(&credentials)?;
    state
        .committer
        .write(move |txn| acme::put_account(txn, &url, &bytes))
        .await?;
    tracing::info!(directory, "ACME account created");
    Ok(account)
}

/// Orders a certificate for `name`, answering its HTTP-01 challenges
/// through the proxies; the challenges are withdrawn whatever happens.
async fn order(
    state: &Arc<AppState>,
    directory: &str,
    cached: &mut Option<Account>,
    name: &str,
) -> anyhow::Result<CertDoc> {
    let account = match cached {
        Some(account) => account.clone(),
        None => cached
            .insert(self::account(state, directory).await?)
            .clone(),
    };
    let mut tokens = Vec::new();
    let result = order_with(state, &account, name, &mut tokens).await;
    for token in tokens {
        state
            .committer
            .write(move |txn| acme::clear_challenge(txn, &token))
            .await?;
    }
    let cert = result?;
    let stored = cert.clone();
    let domain = name.to_owned();
    state
        .committer
        .write(move |txn| acme::put_certificate(txn, &domain, &stored))
        .await?;
    Ok(cert)
}

async fn order_with(
    state: &Arc<AppState>,
    account: &Account,
    name: &str,
    tokens: &mut Vec<String>,
) -> anyhow::Result<CertDoc> {
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .context("placing the order")?;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => bail!("the authorization is {other:?}"),
        }
        let mut challenge = authorization
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| anyhow!("the server offers no http-01 challenge"))?;
        let token = challenge.token.clone();
        let key_authorization = challenge.key_authorization().as_str().to_owned();
        tokens.push(token.clone());
        state
            .committer
            .write(move |txn| acme::set_challenge(txn, &token, &key_authorization))
            .await?;
        let seq = state.committed.borrow().seq;
        if !state.streams.wait_sent(seq, PUBLISH_WAIT).await {
            tracing::warn!(
                domain = name,
                "no proxy here was sent the challenge in time; asking for validation all the same"
            );
        }
        challenge
            .set_ready()
            .await
            .context("asking for validation")?;
    }
    let retry = RetryPolicy::new().timeout(ORDER_TIMEOUT);
    let status = order
        .poll_ready(&retry)
        .await
        .context("waiting for validation")?;
    if status != OrderStatus::Ready {
        let problem = order
            .state()
            .error
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        bail!("the order is {status:?}, not ready {problem}");
    }
    let key_pem = order.finalize().await.context("finalizing the order")?;
    let chain_pem = order
        .poll_certificate(&retry)
        .await
        .context("fetching the certificate")?;
    let not_after = not_after(&chain_pem)?;
    Ok(CertDoc {
        chain_pem,
        key_pem,
        not_after,
        issued_at: now_unix(),
    })
}

/// When the first certificate of a PEM chain runs out (Unix seconds).
fn not_after(chain_pem: &str) -> anyhow::Result<i64> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| anyhow!("the issued chain is not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow!("the issued certificate does not parse: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Writes `NAME.key` then `NAME.crt` into `dir` unless they hold these
/// already: each to a temporary name, synced, then renamed over the old one,
/// so the proxy never reads half a file or a key without its certificate
/// (it checks that the two match, and keeps the set in force otherwise).
fn write_files(dir: &Path, name: &str, cert: &CertDoc) -> anyhow::Result<()> {
    let crt = dir.join(format!("{name}.crt"));
    if std::fs::read_to_string(&crt).is_ok_and(|held| held == cert.chain_pem)
        && std::fs::read_to_string(dir.join(format!("{name}.key")))
            .is_ok_and(|held| held == cert.key_pem)
    {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (extension, text) in [("key", &cert.key_pem), ("crt", &cert.chain_pem)] {
        let path = dir.join(format!("{name}.{extension}"));
        crate::state::write_private(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(domain = name, dir = %dir.display(), "certificate written for the proxy");
    Ok(())
}
