//! Webhook deliveries: events queued for each subscription from the change
//! log and the click flushes, then posted in order, signed, retried with a
//! doubling backoff, and the subscription disabled once it has failed for
//! the whole retry window (docs/WEBHOOKS.md).
//!
//! One process at a time does this work (a lease in the store), so a
//! FoundationDB deployment with a control plane per host still delivers
//! each event from one place. Each round (every 200 ms):
//!
//! 1. **Fan-out**: the changes after the stored cursor that carry an event,
//!    and the waiting click counts, become one body per event; one
//!    transaction appends each to the queue of every subscription that
//!    wants it, moves the cursor and drops the click counts. Until that
//!    transaction commits nothing is lost: the change log is not pruned
//!    past the cursor while a subscription is enabled.
//! 2. **Delivery**: a worker per subscription with a due queue posts its
//!    oldest event. The attempt is logged, and the event leaves the queue,
//!    in one transaction after the answer; a crash between the two posts it
//!    again (at-least-once; the event id lets receivers drop repeats).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shortline_store::Seq;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::config::Config;
use crate::db::{ReadTxn, Space, StoreResult, View, keys};
use crate::domain::links;
use crate::domain::webhooks::{self, Attempted};
use crate::model::{AttemptDoc, ChangeDoc, EventKind, LinkDoc, WebhookDoc, rfc3339_ms};
use crate::state::AppState;

/// How often queues are filled and deliveries started.
const TICK: Duration = Duration::from_millis(200);
/// How long the delivery lease lasts; it is renewed at half.
const LEASE_MS: i64 = 10_000;
/// Changes read per fan-out transaction.
const CHANGES_PER_FAN_OUT: usize = 512;
/// Click flushes read per fan-out transaction.
const CLICK_FLUSHES_PER_FAN_OUT: usize = 8;
/// Fan-out transactions per round at most, so a long backlog still lets
/// deliveries start.
const FAN_OUTS_PER_ROUND: usize = 64;
/// Events one delivery run posts before recording their outcomes at most.
const RUN_EVENTS: usize = 256;
/// How long one delivery run posts before recording its outcomes at most.
const RUN_TIME: Duration = Duration::from_secs(1);
/// The longest a subscription's host may take to resolve when it is checked.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "shortline-signature";

/// Now, in Unix milliseconds.
#[must_use]
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// The signature of `body` sent at `timestamp` (Unix seconds): hex
/// HMAC-SHA256 under `secret` of `timestamp.body`.
#[must_use]
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    hex::encode(context.sign().as_ref())
}

/// Runs until shutdown begins.
pub async fn webhook_loop(state: Arc<AppState>) {
    let holder = format!("{}-{}", std::process::id(), rand::random::<u64>());
    let agent = agent(&state.config);
    let mut shutdown = state.shutdown.subscribe();
    let mut lease_until = 0;
    let mut workers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = round(&state, &agent, &holder, &mut lease_until, &mut workers).await {
            metrics::counter!("control_webhook_errors_total").increment(1);
            tracing::warn!(error = %format!("{e:#}"), "webhook round failed");
            lease_until = 0;
        }
    }
}

async fn read<T: Send + 'static>(
    state: &Arc<AppState>,
    body: impl FnMut(&dyn View) -> StoreResult<T> + Send + 'static,
) -> anyhow::Result<T> {
    let backend = Arc::clone(&state.backend);
    Ok(tokio::task::spawn_blocking(move || backend.read(body)).await??)
}

async fn round(
    state: &Arc<AppState>,
    agent: &ureq::Agent,
    holder: &str,
    lease_until: &mut i64,
    workers: &mut HashMap<String, tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let (active, any) = read(state, |txn| {
        Ok((
            webhooks::active(txn)?,
            !txn.range(Space::Webhooks, &[], &[0xff], 1)?.is_empty(),
        ))
    })
    .await?;
    if !any || !lease(state, holder, lease_until).await? {
        return Ok(());
    }
    if active {
        for _ in 0..FAN_OUTS_PER_ROUND {
            if !fan_out(state).await? {
                break;
            }
        }
    }
    workers.retain(|_, worker| !worker.is_finished());
    let hooks = read(state, |txn| webhooks::list(txn)).await?;
    let now = now_ms();
    metrics::gauge!("control_webhook_events_waiting").set(
        hooks
            .iter()
            .map(|h| h.queued.saturating_sub(h.delivered))
            .sum::<u64>() as f64,
    );
    for hook in hooks {
        if hook.enabled
            && hook.queued > hook.delivered
            && hook.next_attempt_at <= now
            && !workers.contains_key(&hook.id)
        {
            let worker = tokio::spawn(deliver(Arc::clone(state), agent.clone(), hook.id.clone()));
            workers.insert(hook.id, worker);
        }
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    holder: String,
    /// Unix ms.
    until: i64,
}

/// Takes or renews the delivery lease; whether this process holds it.
async fn lease(state: &Arc<AppState>, holder: &str, until: &mut i64) -> anyhow::Result<bool> {
    let now = now_ms();
    if *until - now > LEASE_MS / 2 {
        return Ok(true);
    }
    let current = read(state, |txn| held(txn)).await?;
    if current
        .as_ref()
        .is_some_and(|l| l.holder != holder && l.until > now)
    {
        *until = 0;
        return Ok(false);
    }
    let me = holder.to_owned();
    let taken = state
        .committer
        .write(move |txn| {
            let now = now_ms();
            if held(&*txn)?.is_some_and(|l| l.holder != me && l.until > now) {
                return Ok(None);
            }
            let lease = Lease {
                holder: me.clone(),
                until: now + LEASE_MS,
            };
            let bytes = serde_json::to_vec(&lease).expect("a lease serialises");
            txn.set(Space::Meta, keys::WEBHOOKS_LEASE, &bytes)?;
            Ok(Some(lease.until))
        })
        .await?;
    *until = taken.unwrap_or(0);
    Ok(taken.is_some())
}

fn held(txn: &dyn ReadTxn) -> StoreResult<Option<Lease>> {
    Ok(txn
        .get(Space::Meta, keys::WEBHOOKS_LEASE)?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// What one fan-out read.
struct Page {
    cursor: Option<u64>,
    /// The last change read, or the cursor when none.
    through: u64,
    /// Each change that carries an event, with the event's id.
    events: Vec<(String, ChangeDoc)>,
    clicks: Vec<(Vec<u8>, webhooks::ClickCounts)>,
    clicked: HashMap<u64, LinkDoc>,
    full: bool,
}

/// Queues one page of events; whether more may wait.
async fn fan_out(state: &Arc<AppState>) -> anyhow::Result<bool> {
    let page = read(state, |txn| {
        let cursor = txn
            .get(Space::Meta, keys::WEBHOOKS_CURSOR)?
            .and_then(|b| b.try_into().ok().map(u64::from_le_bytes));
        let pruned = txn.pruned_through()?.0;
        let from = cursor.unwrap_or(0).max(pruned);
        if cursor.is_some_and(|c| c < pruned) {
            // Only when the log was pruned while no subscription was
            // enabled, so no event was logged in between.
            tracing::info!(
                cursor,
                pruned,
                "webhook cursor behind the change log; moved ahead"
            );
        }
        let changes = txn.changes_after(Seq(from), CHANGES_PER_FAN_OUT)?;
        let full = changes.len() == CHANGES_PER_FAN_OUT;
        let through = changes.last().map_or(from, |(seq, _)| seq.0);
        // On FoundationDB a transaction's changes share its sequence: the
        // place among them completes an event's id (pages never split one).
        let mut events = Vec::new();
        let mut previous = None;
        let mut place = 0u32;
        for (seq, bytes) in changes {
            place = if previous == Some(seq) { place + 1 } else { 0 };
            previous = Some(seq);
            let doc = ChangeDoc::decode(&bytes)?;
            if doc.event.is_some() {
                let id = if place == 0 {
                    format!("evt_{}", seq.0)
                } else {
                    format!("evt_{}_{place}", seq.0)
                };
                events.push((id, doc));
            }
        }
        let clicks = webhooks::waiting_clicks(txn, CLICK_FLUSHES_PER_FAN_OUT)?;
        let mut clicked = HashMap::new();
        for (_, counts) in &clicks {
            for &(id, _, _) in counts {
                if clicked.contains_key(&id) {
                    continue;
                }
                if let Some(code) = links::code_of(txn, id)?
                    && let Some(link) = links::get(txn, &code)?
                {
                    clicked.insert(id, link);
                }
            }
        }
        Ok(Page {
            cursor,
            through,
            full: full || clicks.len() == CLICK_FLUSHES_PER_FAN_OUT,
            events,
            clicks,
            clicked,
        })
    })
    .await?;
    if page.cursor == Some(page.through) && page.clicks.is_empty() {
        return Ok(false);
    }
    let now = now_ms();
    // The bodies, built outside the transaction: each link event's once,
    // each click flush's per subscription (each hears of its own links).
    let mut link_bodies = Vec::with_capacity(page.events.len());
    for (id, change) in &page.events {
        let event = change.event.as_ref().expect("kept only with an event");
        let body = json!({
            "id": id,
            "type": event.kind.as_str(),
            "created_at": rfc3339_ms(now),
            "data": { "link": link_json(state, &event.link) },
        });
        link_bodies.push((
            event.kind,
            event.link.owner.clone(),
            serde_json::to_vec(&body).expect("JSON serialises"),
        ));
    }
    let hooks = read(state, |txn| webhooks::list(txn)).await?;
    // Per click flush: its key, and each subscription's id and body.
    type PerHook = Vec<(String, Vec<u8>)>;
    let mut click_bodies: Vec<(Vec<u8>, PerHook)> = Vec::new();
    for (key, counts) in &page.clicks {
        let mut per_hook = Vec::new();
        for hook in hooks.iter().filter(|h| h.enabled) {
            let links: Vec<_> = counts
                .iter()
                .filter_map(|(id, clicks, humans)| {
                    let link = page.clicked.get(id)?;
                    webhooks::wants(hook, EventKind::Clicks, &link.owner).then(|| {
                        let mut counted = names(state, &link.code);
                        counted["clicks"] = json!(clicks);
                        counted["human_clicks"] = json!(humans);
                        counted
                    })
                })
                .collect();
            if links.is_empty() {
                continue;
            }
            let body = json!({
                "id": format!("evt_clicks_{}", hex::encode(key)),
                "type": EventKind::Clicks.as_str(),
                "created_at": rfc3339_ms(now),
                "data": { "links": links },
            });
            per_hook.push((
                hook.id.clone(),
                serde_json::to_vec(&body).expect("JSON serialises"),
            ));
        }
        click_bodies.push((key.clone(), per_hook));
    }
    let expected = page.cursor;
    let through = page.through;
    let queued = state
        .committer
        .write(move |txn| {
            let cursor = txn
                .get(Space::Meta, keys::WEBHOOKS_CURSOR)?
                .and_then(|b| b.try_into().ok().map(u64::from_le_bytes));
            if cursor != expected {
                // Another process moved it: its fan-out queued these.
                return Ok(0);
            }
            let mut hooks = webhooks::list(&*txn)?;
            let before: Vec<(u64, bool)> = hooks.iter().map(|h| (h.queued, h.enabled)).collect();
            let mut queued = 0usize;
            for (kind, owner, body) in &link_bodies {
                for hook in hooks.iter_mut() {
                    if webhooks::wants(hook, *kind, owner) {
                        webhooks::enqueue(txn, hook, body)?;
                        queued += 1;
                    }
                }
            }
            for (key, per_hook) in &click_bodies {
                for (id, body) in per_hook {
                    if let Some(hook) = hooks.iter_mut().find(|h| &h.id == id) {
                        webhooks::enqueue(txn, hook, body)?;
                        queued += 1;
                    }
                }
                txn.clear(Space::WebhookClicks, key)?;
            }
            for (hook, before) in hooks.iter().zip(before) {
                if (hook.queued, hook.enabled) != before {
                    webhooks::store(txn, hook)?;
                }
            }
            txn.set(Space::Meta, keys::WEBHOOKS_CURSOR, &through.to_le_bytes())?;
            Ok(queued)
        })
        .await?;
    metrics::counter!("control_webhook_events_queued_total").increment(queued as u64);
    Ok(page.full)
}

/// How events name a link: its code, short domain and short URL.
fn names(state: &AppState, key: &str) -> serde_json::Value {
    let (domain, base) = state.domain_of(key);
    let code = crate::domain::domains::split_key(key).1;
    json!({
        "code": code,
        "domain": domain,
        "short_url": format!("{base}/{code}"),
    })
}

/// A link as events show it: the fields of the API's link, less its counts.
fn link_json(state: &AppState, link: &LinkDoc) -> serde_json::Value {
    let mut out = names(state, &link.code);
    let fields = json!({
        "url": link.url.as_str(),
        "owner": link.owner,
        "title": link.title,
        "tags": link.tags,
        "status": link.status.as_str(),
        "flag_reason": link.flag_reason.as_ref().map(ToString::to_string),
        "redirect": link.redirect.code(),
        "expires_at": link.expires_at.map(|at| rfc3339_ms(at.saturating_mul(1000))),
        "max_clicks": link.max_clicks,
        "created_at": rfc3339_ms(link.created_at.saturating_mul(1000)),
        "updated_at": rfc3339_ms(link.updated_at.saturating_mul(1000)),
    });
    if let (Some(out), serde_json::Value::Object(fields)) = (out.as_object_mut(), fields) {
        out.extend(fields);
    }
    out
}

#[derive(Deserialize)]
struct EventHead {
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

/// Delivers `id`'s queue in order until it is empty, an attempt fails, or
/// shutdown begins. Events are posted one after another, and their
/// outcomes recorded together, one transaction per run of up to
/// [`RUN_EVENTS`] events or [`RUN_TIME`]: a crash in a run posts its
/// delivered events again (at least once; their ids let receivers drop
/// repeats).
async fn deliver(state: Arc<AppState>, agent: ureq::Agent, id: String) {
    loop {
        if *state.shutdown.borrow() {
            return;
        }
        let wanted = id.clone();
        let found = read(&state, move |txn| {
            let Some(hook) = webhooks::get(txn, &wanted)? else {
                return Ok(None);
            };
            Ok(Some((webhooks::waiting(txn, &wanted, RUN_EVENTS)?, hook)))
        })
        .await;
        let (waiting, hook) = match found {
            Ok(Some((waiting, hook))) if !waiting.is_empty() => (waiting, hook),
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), webhook = %id, "cannot read a webhook queue");
                return;
            }
        };
        if !hook.enabled || hook.next_attempt_at > now_ms() {
            return;
        }
        let run = Instant::now();
        let mut outcomes = Vec::new();
        for (number, body) in waiting {
            // Only the first of a run can have failed before.
            let (tried, failing_since) = match outcomes.is_empty() {
                true => (hook.attempts, hook.failing_since),
                false => (0, None),
            };
            let outcome =
                attempt(&state, &agent, &hook, number, body, (tried, failing_since)).await;
            let delivered = outcome.delivered;
            outcomes.push(outcome);
            if !delivered || run.elapsed() > RUN_TIME || *state.shutdown.borrow() {
                break;
            }
        }
        let failed = outcomes.last().is_some_and(|o| !o.delivered);
        let hook_id = id.clone();
        match state
            .committer
            .write(move |txn| webhooks::record_attempts(txn, &hook_id, &outcomes))
            .await
        {
            Ok(Some(now)) if !now.enabled => {
                tracing::warn!(webhook = %id, reason = now.disabled_reason.as_deref().unwrap_or(""), "webhook disabled");
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, webhook = %id, "cannot record webhook attempts");
                return;
            }
        }
        if failed {
            return;
        }
    }
}

/// Posts one event and says what came of it; `earlier` is how many times
/// it failed before, and since when (Unix ms).
async fn attempt(
    state: &AppState,
    agent: &ureq::Agent,
    hook: &WebhookDoc,
    number: u64,
    body: Vec<u8>,
    (tried, failing_since): (u32, Option<i64>),
) -> Attempted {
    let window_ms = i64::try_from(state.config.webhook_retry_window_seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let head: Option<EventHead> = serde_json::from_slice(&body).ok();
    let at = now_ms();
    let started = Instant::now();
    let (status, error) = post(agent, hook, body).await;
    let delivered = error.is_none() && status.is_some_and(|s| (200..300).contains(&s));
    let error = match (delivered, error, status) {
        (true, ..) => None,
        (false, Some(error), _) => Some(error),
        (false, None, Some(status)) => Some(format!("the receiver answered {status}")),
        (false, None, None) => Some("no answer".to_owned()),
    };
    let done = now_ms();
    metrics::counter!(
        "control_webhook_deliveries_total",
        "outcome" => if delivered { "delivered" } else { "failed" }
    )
    .increment(1);
    Attempted {
        number,
        attempt: AttemptDoc {
            at,
            event_id: head.as_ref().map(|h| h.id.clone()).unwrap_or_default(),
            event_type: head.map(|h| h.kind).unwrap_or_default(),
            status,
            error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            attempt: tried + 1,
        },
        delivered,
        retry_at: done + backoff_ms(&state.config, tried),
        give_up: !delivered && done - failing_since.unwrap_or(at) >= window_ms,
    }
}

/// The wait after the `failed`-th failure (from 0): doubling from the
/// minimum to the maximum, less up to a tenth at random so many failing
/// subscriptions do not retry in step.
fn backoff_ms(config: &Config, failed: u32) -> i64 {
    let min = config.webhook_retry_min_ms;
    let max = config.webhook_retry_max_ms.max(min);
    let wait = min.saturating_mul(1u64 << failed.min(40)).min(max);
    let jitter = rand::random_range(0..=wait / 10);
    i64::try_from(wait - jitter).unwrap_or(i64::MAX)
}

/// Posts `body` to `hook`'s URL, signed; the status, or why there was none.
async fn post(
    agent: &ureq::Agent,
    hook: &WebhookDoc,
    body: Vec<u8>,
) -> (Option<u16>, Option<String>) {
    let agent = agent.clone();
    let url = hook.url.clone();
    let secret = hook.secret.clone();
    let id = hook.id.clone();
    let sent = tokio::task::spawn_blocking(move || {
        let timestamp = crate::model::now_unix();
        let signature = sign(&secret, timestamp, &body);
        let head: Option<EventHead> = serde_json::from_slice(&body).ok();
        let mut request = agent
            .post(&url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, format!("t={timestamp},v1={signature}"))
            .header("shortline-webhook", &id);
        if let Some(head) = &head {
            request = request
                .header("shortline-event", &head.kind)
                .header("shortline-event-id", &head.id);
        }
        match request.send(&body[..]) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                // Read a little of the answer so the connection can be
                // reused; what it says is not kept.
                let _ = response
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024)
                    .read_to_vec();
                (Some(status), None)
            }
            Err(e) => (None, Some(describe(&e))),
        }
    })
    .await;
    sent.unwrap_or_else(|e| (None, Some(format!("the delivery stopped: {e}"))))
}

fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => "timed out (webhook_timeout_ms)".to_owned(),
        ureq::Error::Io(e) => format!("{e}"),
        other => other.to_string(),
    }
}

/// The client every delivery uses: no redirects followed (a 3xx is a
/// failure), no proxy from the environment, every address it connects to
/// checked by [`PublicOnly`].
fn agent(config: &Config) -> ureq::Agent {
    let settings = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(config.webhook_timeout_ms)))
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .user_agent(concat!("Shortline-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::with_parts(
        settings,
        DefaultConnector::new(),
        PublicOnly {
            allow_private: config.webhook_allow_private,
            inner: DefaultResolver::default(),
        },
    )
}

/// Resolves as usual, then keeps only public addresses (unless
/// `webhook_allow_private`): the check happens on the addresses the
/// connection uses, so a name that resolves differently later (DNS
/// rebinding) is caught too.
#[derive(Debug)]
struct PublicOnly {
    allow_private: bool,
    inner: DefaultResolver,
}

impl Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let found = self.inner.resolve(uri, config, timeout)?;
        if self.allow_private {
            return Ok(found);
        }
        let mut public = self.empty();
        let mut refused = None;
        for addr in &found {
            match webhooks::non_public(addr.ip()) {
                None => public.push(*addr),
                Some(why) => refused = Some((addr.ip(), why)),
            }
        }
        match refused {
            Some((ip, why)) if public.is_empty() => Err(ureq::Error::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} resolves to {ip}, a {why} address; webhook_allow_private is off",
                    uri.host().unwrap_or_default()
                ),
            ))),
            _ => Ok(public),
        }
    }
}

/// Checks a subscription's URL before it is stored: `http` or `https`, a
/// host, and (unless `allow_private`) only public addresses. The error
/// says what is wrong.
pub async fn check_target(url: &str, allow_private: bool) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {:?} is not allowed; use http or https",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not allowed".to_owned());
    }
    let Some(host) = parsed.host_str() else {
        return Err("the URL has no host".to_owned());
    };
    if url.len() > 2048 {
        return Err("a URL is at most 2048 bytes".to_owned());
    }
    if allow_private {
        return Ok(parsed);
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    let addrs: Vec<std::net::SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| format!("cannot resolve {host}: no answer in {RESOLVE_TIMEOUT:?}"))?
        .with_context(|| format!("cannot resolve {host}"))
        .map_err(|e| format!("{e:#}"))?
        .collect();
    for addr in &addrs {
        if let Some(why) = webhooks::non_public(addr.ip()) {
            return Err(format!(
                "{host} resolves to {}, a {why} address; webhooks go to public addresses unless webhook_allow_private is on",
                addr.ip()
            ));
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_and_body() {
        // RFC 4231 test case 2 shape: key "Jefe", message as given.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let expected = hex::encode(ring::hmac::sign(&key, b"1700000000.{\"a\":1}").as_ref());
        assert_eq!(sign("Jefe", 1_700_000_000, b"{\"a\":1}"), expected);
        assert_ne!(sign("Jefe", 1_700_000_001, b"{\"a\":1}"), expected);
        assert_eq!(
            hex::encode(ring::hmac::sign(&key, b"what do ya want for nothing?").as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_backoff_doubles_up_to_its_maximum() {
        let config = Config {
            webhook_retry_min_ms: 1000,
            webhook_retry_max_ms: 8000,
            ..Config::default()
        };
        for (failed, wait) in [
            (0, 1000),
            (1, 2000),
            (2, 4000),
            (3, 8000),
            (9, 8000),
            (64, 8000),
        ] {
            let got = backoff_ms(&config, failed);
            assert!(got <= wait && got >= wait - wait / 10, "{failed}: {got}");
        }
    }

    #[tokio::test]
    async fn targets_must_be_public_http_urls() {
        for (url, allow, wanted) in [
            ("ftp://example.com/x", true, "scheme"),
            ("http://user:pw@example.com/", true, "credentials"),
            ("not a url", true, "not a URL"),
            ("http://127.0.0.1:9/hook", false, "loopback"),
            ("http://[::1]:9/hook", false, "loopback"),
            ("http://10.0.0.1/hook", false, "private"),
            ("http://169.254.169.254/latest", false, "link-local"),
        ] {
            let e = check_target(url, allow).await.unwrap_err();
            assert!(e.contains(wanted), "{url}: {e}");
        }
        assert!(check_target("http://127.0.0.1:9/hook", true).await.is_ok());
    }
}
