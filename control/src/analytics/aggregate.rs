//! Folding clicks in memory and flushing the folded counts.
//!
//! A click batch is classified and folded into the pending flush, and its
//! request is answered once that flush has committed: an acknowledged batch is
//! durable, and a batch whose flush failed is answered with an error so the
//! proxy sends it again. Batches from many proxies (and many batches from a
//! busy one) share one flush transaction, so a hot link's thousand clicks
//! become one counter increment. Every write is an atomic add, so flushes never
//! conflict with each other on a backend with optimistic transactions.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::classify::{Class, Classifier, referrer_host};
use super::export::Exporter;
use super::geo::GeoIp;
use super::{
    Granularity, OTHER, counter_value, dim, distinct_key, hour_index_key, humans_key, series_key,
    top_key,
};
use crate::clicks::{Click, head_key};
use crate::committer::Committer;
use crate::links::clicks_key;
use crate::store::{Space, StoreResult, Txn};

/// Length of a bounded counter key before its value: `s`, link, g, bucket, dim.
const BOUNDED_PREFIX_LEN: usize = 15;
/// Keys remembered as already stored before the memory starts over.
const KNOWN_KEYS_MAX: usize = 200_000;

/// How analytics behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest a folded click waits for its flush.
    pub flush_interval: Duration,
    /// Pending counter keys that make a flush start at once.
    pub flush_keys_max: usize,
    /// Distinct referrers or countries kept per link per bucket.
    pub top_n: i64,
    /// Days hourly buckets are kept.
    pub hourly_retention_days: u32,
}

/// What a flush ends with, shared by every batch in it.
type Outcome = Option<Result<(), String>>;

/// The next flush.
#[derive(Debug)]
struct Pending {
    adds: HashMap<Vec<u8>, i64>,
    bounded: HashMap<Vec<u8>, i64>,
    hours: HashSet<(u32, u64)>,
    humans: HashSet<u64>,
    batches: Vec<(String, u64)>,
    clicks: u64,
    outcome: watch::Sender<Outcome>,
}

impl Pending {
    fn new() -> Self {
        Self {
            adds: HashMap::new(),
            bounded: HashMap::new(),
            hours: HashSet::new(),
            humans: HashSet::new(),
            batches: Vec::new(),
            clicks: 0,
            outcome: watch::channel(None).0,
        }
    }

    fn keys(&self) -> usize {
        self.adds.len() + self.bounded.len()
    }

    fn add(&mut self, key: Vec<u8>, delta: i64) {
        *self.adds.entry(key).or_default() += delta;
    }
}

/// The folded counts of one flush, as the transaction body sees them.
#[derive(Debug)]
struct Flush {
    adds: Vec<(Vec<u8>, i64)>,
    bounded: Vec<(Vec<u8>, i64)>,
    hours: Vec<(u32, u64)>,
    humans: Vec<u64>,
    batches: Vec<(String, u64)>,
    now: i64,
}

#[derive(Debug)]
struct Inner {
    classifier: Classifier,
    pending: Pending,
    /// Highest batch sequence accepted per proxy, pending ones included.
    seen: HashMap<String, u64>,
    /// The flush each proxy's newest accepted batch waits on.
    unsettled: HashMap<String, (u64, watch::Receiver<Outcome>)>,
    /// Bounded keys and hour-index entries known to be stored already.
    known: HashSet<Vec<u8>>,
    known_hours: HashSet<(u32, u64)>,
}

/// Whether a batch was taken.
#[derive(Debug)]
pub enum Accepted {
    /// Folded into a flush; wait on it.
    Pending(watch::Receiver<Outcome>),
    /// Counted before.
    Duplicate,
    /// Too much is waiting for the store; send it again later.
    Busy,
}

/// The click aggregator.
#[derive(Debug)]
pub struct Analytics {
    settings: Settings,
    geo: Option<GeoIp>,
    export: Option<Mutex<Exporter>>,
    inner: Mutex<Inner>,
    wake: Notify,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl Analytics {
    #[must_use]
    pub fn new(settings: Settings, geo: Option<GeoIp>, export: Option<Exporter>) -> Self {
        Self {
            settings,
            geo,
            export: export.map(Mutex::new),
            inner: Mutex::new(Inner {
                classifier: Classifier::new(),
                pending: Pending::new(),
                seen: HashMap::new(),
                unsettled: HashMap::new(),
                known: HashSet::new(),
                known_hours: HashSet::new(),
            }),
            wake: Notify::new(),
        }
    }

    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether a country database is loaded.
    #[must_use]
    pub fn has_geo(&self) -> bool {
        self.geo.is_some()
    }

    /// Takes a batch unless `stored` (the proxy's highest sequence in the
    /// store) or a batch taken earlier already covers it.
    pub fn accept(
        &self,
        proxy_id: &str,
        batch_seq: u64,
        stored: u64,
        clicks: &[Click],
    ) -> Accepted {
        let mut inner = lock(&self.inner);
        let last = inner.seen.get(proxy_id).copied().unwrap_or(0).max(stored);
        if batch_seq <= last {
            // A resend of a batch still waiting for its flush waits with it.
            if let Some((seq, outcome)) = inner.unsettled.get(proxy_id)
                && *seq == batch_seq
            {
                return Accepted::Pending(outcome.clone());
            }
            return Accepted::Duplicate;
        }
        if inner.pending.keys() >= self.settings.flush_keys_max.saturating_mul(4) {
            return Accepted::Busy;
        }
        let mut exported = Vec::new();
        let inner = &mut *inner;
        for (index, click) in clicks.iter().enumerate() {
            self.fold(inner, click, proxy_id, batch_seq, index, &mut exported);
        }
        let pending = &mut inner.pending;
        pending.batches.push((proxy_id.to_owned(), batch_seq));
        pending.clicks += clicks.len() as u64;
        let outcome = pending.outcome.subscribe();
        inner.seen.insert(proxy_id.to_owned(), batch_seq);
        inner
            .unsettled
            .insert(proxy_id.to_owned(), (batch_seq, outcome.clone()));
        metrics::gauge!("control_clicks_pending").set(pending.clicks as f64);
        drop(exported_write(self.export.as_ref(), &exported));
        self.wake.notify_one();
        Accepted::Pending(outcome)
    }

    fn fold(
        &self,
        inner: &mut Inner,
        click: &Click,
        proxy_id: &str,
        batch_seq: u64,
        index: usize,
        exported: &mut Vec<u8>,
    ) {
        let at = i64::try_from(click.at_unix_ms / 1000).unwrap_or(i64::MAX);
        let link = click.link_id;
        let hour = Granularity::Hour.bucket(at);
        let day = Granularity::Day.bucket(at);
        let pending = &mut inner.pending;
        pending.hours.insert((hour, link));
        let both = [(Granularity::Hour, hour), (Granularity::Day, day)];
        let head = click.method.eq_ignore_ascii_case("HEAD");
        let mut line = ExportLine {
            at_unix_ms: click.at_unix_ms,
            link_id: link,
            method: if head { "HEAD" } else { "GET" },
            class: None,
            browser: None,
            os: None,
            device: None,
            referrer_host: None,
            country: None,
            proxy_id,
            batch_seq,
            index,
        };
        if head {
            pending.add(head_key(link), 1);
            for (g, b) in both {
                pending.add(series_key(link, g, b, dim::KIND, "head"), 1);
            }
        } else {
            let agent = inner.classifier.classify(&click.user_agent);
            pending.add(clicks_key(link), 1);
            for (g, b) in both {
                pending.add(series_key(link, g, b, dim::KIND, agent.class.as_str()), 1);
            }
            line.class = Some(agent.class.as_str());
            if agent.class == Class::Human {
                let referrer = referrer_host(&click.referrer);
                let country = self.geo.as_ref().map(|geo| {
                    click
                        .client_ip
                        .as_deref()
                        .and_then(|ip| ip.parse::<IpAddr>().ok())
                        .and_then(|ip| geo.country(ip))
                        .unwrap_or_else(|| "unknown".to_owned())
                });
                pending.add(humans_key(link), 1);
                pending.add(top_key(day, link), 1);
                pending.humans.insert(link);
                for (g, b) in both {
                    pending.add(series_key(link, g, b, dim::BROWSER, agent.browser), 1);
                    pending.add(series_key(link, g, b, dim::OS, agent.os), 1);
                    pending.add(
                        series_key(link, g, b, dim::DEVICE, agent.device.as_str()),
                        1,
                    );
                    *pending
                        .bounded
                        .entry(series_key(link, g, b, dim::REFERRER, &referrer))
                        .or_default() += 1;
                    if let Some(country) = &country {
                        *pending
                            .bounded
                            .entry(series_key(link, g, b, dim::COUNTRY, country))
                            .or_default() += 1;
                    }
                }
                if self.export.is_some() {
                    line.browser = Some(agent.browser);
                    line.os = Some(agent.os);
                    line.device = Some(agent.device.as_str());
                    line.referrer_host = Some(referrer);
                    line.country = country;
                }
            }
        }
        if self.export.is_some() {
            serde_json::to_writer(&mut *exported, &line).expect("export lines serialise");
            exported.push(b'\n');
        }
    }

    /// Flushes whatever is pending, then keeps flushing every
    /// `flush_interval` while clicks arrive. Runs until the process ends.
    pub async fn run(self: Arc<Self>, committer: Committer) {
        loop {
            self.wake.notified().await;
            let full = lock(&self.inner).pending.keys() >= self.settings.flush_keys_max;
            if !full {
                tokio::time::sleep(self.settings.flush_interval).await;
            }
            self.flush(&committer).await;
        }
    }

    /// Commits the pending flush and answers the batches waiting on it.
    pub async fn flush(&self, committer: &Committer) {
        let (pending, flush) = {
            let mut inner = lock(&self.inner);
            if inner.pending.batches.is_empty() {
                return;
            }
            let pending = std::mem::replace(&mut inner.pending, Pending::new());
            let known = &inner.known;
            let known_hours = &inner.known_hours;
            let flush = Flush {
                adds: pending.adds.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                bounded: pending
                    .bounded
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
                hours: pending
                    .hours
                    .iter()
                    .filter(|h| !known_hours.contains(h))
                    .copied()
                    .collect(),
                humans: pending.humans.iter().copied().collect(),
                batches: pending.batches.clone(),
                now: time::OffsetDateTime::now_utc().unix_timestamp(),
            };
            let known: HashSet<Vec<u8>> = flush
                .bounded
                .iter()
                .filter(|(k, _)| known.contains(k))
                .map(|(k, _)| k.clone())
                .collect();
            (pending, (Arc::new(flush), Arc::new(known)))
        };
        metrics::gauge!("control_clicks_pending").set(0.0);
        if let Some(export) = &self.export
            && let Err(e) = export.lock().unwrap_or_else(|e| e.into_inner()).sync()
        {
            tracing::warn!(error = %e, "click export could not be synced");
        }
        let (flush, known) = flush;
        let top_n = self.settings.top_n;
        let started = Instant::now();
        let body_flush = Arc::clone(&flush);
        let result = committer
            .write(move |txn| apply(txn, &body_flush, &known, top_n))
            .await;
        metrics::histogram!("control_analytics_flush_seconds")
            .record(started.elapsed().as_secs_f64());
        let mut inner = lock(&self.inner);
        let outcome = match result {
            Ok(done) => {
                metrics::counter!("control_clicks_ingested_total").increment(pending.clicks);
                metrics::counter!("control_links_exhausted_total").increment(done.exhausted);
                if inner.known.len() + done.admitted.len() > KNOWN_KEYS_MAX {
                    inner.known.clear();
                }
                inner.known.extend(done.admitted);
                if inner.known_hours.len() + flush.hours.len() > KNOWN_KEYS_MAX {
                    inner.known_hours.clear();
                }
                inner.known_hours.extend(flush.hours.iter().copied());
                Ok(())
            }
            Err(e) => {
                metrics::counter!("control_analytics_flush_errors_total").increment(1);
                tracing::warn!(error = %e, clicks = pending.clicks, "click flush failed; proxies resend");
                // Not counted: forget these sequences so the resends are taken.
                for (proxy, _) in &pending.batches {
                    inner.seen.remove(proxy);
                }
                Err(e.to_string())
            }
        };
        for (proxy, seq) in &pending.batches {
            if inner.unsettled.get(proxy).is_some_and(|(s, _)| s == seq) {
                inner.unsettled.remove(proxy);
            }
        }
        drop(inner);
        pending.outcome.send_replace(Some(outcome));
    }
}

/// What a flush transaction did.
#[derive(Debug, Default)]
struct Applied {
    exhausted: u64,
    /// Bounded keys now stored.
    admitted: Vec<Vec<u8>>,
}

fn apply(
    txn: &mut dyn Txn,
    flush: &Flush,
    known: &HashSet<Vec<u8>>,
    top_n: i64,
) -> StoreResult<Applied> {
    let mut applied = Applied::default();
    for (proxy, seq) in &flush.batches {
        crate::clicks::record_batch(txn, proxy, *seq, flush.now)?;
    }
    for (key, delta) in &flush.adds {
        txn.add(Space::Counters, key, *delta)?;
    }
    for (key, delta) in &flush.bounded {
        let stored = known.contains(key) || txn.get(Space::Counters, key)?.is_some();
        if stored {
            txn.add(Space::Counters, key, *delta)?;
            applied.admitted.push(key.clone());
            continue;
        }
        let distinct = distinct_key_of(key);
        let count = txn
            .get(Space::Counters, &distinct)?
            .map_or(0, |v| counter_value(&v));
        if count < top_n {
            txn.add(Space::Counters, &distinct, 1)?;
            txn.add(Space::Counters, key, *delta)?;
            applied.admitted.push(key.clone());
        } else {
            let mut other = key[..BOUNDED_PREFIX_LEN].to_vec();
            other.extend_from_slice(OTHER.as_bytes());
            txn.add(Space::Counters, &other, *delta)?;
        }
    }
    for (hour, link) in &flush.hours {
        txn.set(Space::StatsHours, &hour_index_key(*hour, *link), b"")?;
    }
    for link in &flush.humans {
        if crate::links::exhaust_if_due(txn, *link, flush.now)? {
            applied.exhausted += 1;
        }
    }
    Ok(applied)
}

fn distinct_key_of(bounded: &[u8]) -> Vec<u8> {
    let mut key = vec![b'n'];
    key.extend_from_slice(&bounded[1..BOUNDED_PREFIX_LEN]);
    key
}

/// Removes hourly buckets older than the retention, up to `limit` link-hours.
/// Returns how many were removed.
pub fn prune_hours(
    txn: &mut dyn Txn,
    now: i64,
    retention_days: u32,
    limit: usize,
) -> StoreResult<usize> {
    let cutoff = Granularity::Hour.bucket(now - i64::from(retention_days) * 86_400);
    let due = txn.range(Space::StatsHours, &[], &cutoff.to_be_bytes(), limit)?;
    for (entry, _) in &due {
        let hour = u32::from_be_bytes(entry[..4].try_into().expect("index keys are 12 bytes"));
        let link = u64::from_be_bytes(entry[4..12].try_into().expect("index keys are 12 bytes"));
        let prefix = super::bucket_prefix(link, Granularity::Hour, hour);
        loop {
            let keys = txn.range(
                Space::Counters,
                &prefix,
                &crate::store::prefix_end(&prefix),
                1024,
            )?;
            if keys.is_empty() {
                break;
            }
            for (key, _) in keys {
                txn.clear(Space::Counters, &key)?;
            }
        }
        for d in [dim::REFERRER, dim::COUNTRY] {
            txn.clear(
                Space::Counters,
                &distinct_key(link, Granularity::Hour, hour, d),
            )?;
        }
        txn.clear(Space::StatsHours, entry)?;
    }
    Ok(due.len())
}

/// One raw click in the export.
#[derive(Debug, serde::Serialize)]
struct ExportLine<'a> {
    at_unix_ms: u64,
    link_id: u64,
    method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    browser: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    os: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referrer_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<String>,
    proxy_id: &'a str,
    batch_seq: u64,
    index: usize,
}

fn exported_write(export: Option<&Mutex<Exporter>>, lines: &[u8]) -> std::io::Result<()> {
    let Some(export) = export else { return Ok(()) };
    if lines.is_empty() {
        return Ok(());
    }
    let result = export
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .append(lines);
    if let Err(e) = &result {
        metrics::counter!("control_click_export_errors_total").increment(1);
        tracing::warn!(error = %e, "click export failed");
    }
    result
}
