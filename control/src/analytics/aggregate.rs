//! Folding clicks in memory and flushing the folded counts.
//!
//! An accepted batch is appended to the click log ([`crate::db::wal`]) and synced,
//! then folded into the pending counts and acknowledged: acknowledged clicks
//! survive a crash, and the store sees one increment per counter per flush
//! however many clicks it folds. The flusher runs every `flush_interval` (or
//! at once when many keys are pending), starts a new log segment, and adds
//! the folded counts in one transaction that also records the segment it
//! covers. Every counter write is an atomic add, so flushes never conflict on
//! a backend with optimistic transactions.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shortline_store::clickwire::{WireBatch, WireClick};
use tokio::sync::Notify;

use super::classify::{Class, Classifier, referrer_host};
use super::export::Exporter;
use crate::commit::{CommitError, Committer};
use crate::db::keys::{self, Granularity, OTHER, counter_value, dim};
use crate::db::wal::{Wal, WalError};
use crate::db::{Space, StoreResult, Txn};
use shortline_common::geo::GeoIp;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;
type FastSet<K> = HashSet<K, foldhash::fast::FixedState>;

/// Keys remembered as already stored before the memory starts over.
const KNOWN_KEYS_MAX: usize = 200_000;
/// What a click counts as in the `kind` series: its user agent's class,
/// or `head` for a HEAD request (never classified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClickKind {
    Human,
    Bot,
    Preview,
    Head,
}

impl ClickKind {
    /// The value stored in the `kind` dimension.
    fn name(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Bot => "bot",
            Self::Preview => "preview",
            Self::Head => "head",
        }
    }
}

impl From<Class> for ClickKind {
    fn from(class: Class) -> Self {
        match class {
            Class::Human => Self::Human,
            Class::Bot => Self::Bot,
            Class::Preview => Self::Preview,
        }
    }
}

/// How analytics behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest a folded click waits before its counts are flushed.
    pub flush_interval: Duration,
    /// Pending counter keys that make a flush start at once.
    pub flush_keys_max: usize,
    /// Distinct referrers or countries kept per link per day.
    pub top_n: i64,
    /// Days hourly buckets are kept.
    pub hourly_retention_days: u32,
}

/// A counter, compact while pending; strings are interned per flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Clicks(u64),
    Humans(u64),
    Heads(u64),
    Kind {
        link: u64,
        granularity: Granularity,
        bucket: u32,
        kind: ClickKind,
    },
    Top {
        day: u32,
        link: u64,
    },
    Dim {
        link: u64,
        day: u32,
        dim: u8,
        value: u32,
    },
}

/// Interned strings of one flush.
#[derive(Debug, Default)]
struct Names {
    ids: FastMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }
}

/// The next flush.
#[derive(Debug, Default)]
struct Pending {
    counts: FastMap<Key, i64>,
    names: Names,
    hours: FastSet<(u32, u64)>,
    humans: FastSet<u64>,
    batches: HashMap<String, u64>,
    clicks: u64,
}

/// The folded counts of one flush, as the transaction body sees them.
#[derive(Debug)]
struct Flush {
    adds: Vec<(Vec<u8>, i64)>,
    bounded: Vec<(Vec<u8>, i64)>,
    hours: Vec<(u32, u64)>,
    humans: Vec<u64>,
    batches: Vec<(String, u64)>,
    clicks: u64,
}

impl Pending {
    fn add(&mut self, key: Key, delta: i64) {
        *self.counts.entry(key).or_default() += delta;
    }

    /// Counts one click of `kind` in its hour and its day.
    fn add_kind(&mut self, link: u64, hour: u32, day: u32, kind: ClickKind) {
        for (granularity, bucket) in [(Granularity::Hour, hour), (Granularity::Day, day)] {
            let key = Key::Kind {
                link,
                granularity,
                bucket,
                kind,
            };
            self.add(key, 1);
        }
    }

    /// Counts a human click in the top-links report and its breakdowns.
    fn add_human(&mut self, link: u64, day: u32, dims: [(u8, Option<u32>); 6]) {
        self.add(Key::Humans(link), 1);
        self.add(Key::Top { day, link }, 1);
        self.humans.insert(link);
        for (dim, value) in dims {
            if let Some(value) = value {
                self.add(
                    Key::Dim {
                        link,
                        day,
                        dim,
                        value,
                    },
                    1,
                );
            }
        }
    }

    /// The counts as store keys, sorted so neighbours share pages.
    fn into_flush(self, known_hours: &FastSet<(u32, u64)>) -> Flush {
        let mut adds = Vec::with_capacity(self.counts.len());
        let mut bounded = Vec::new();
        for (key, delta) in self.counts {
            let bytes = match key {
                Key::Clicks(link) => keys::clicks(link),
                Key::Humans(link) => keys::humans(link),
                Key::Heads(link) => keys::heads(link),
                Key::Kind {
                    link,
                    granularity,
                    bucket,
                    kind,
                } => keys::series(link, granularity, bucket, dim::KIND, kind.name()),
                Key::Top { day, link } => keys::top(day, link),
                Key::Dim {
                    link,
                    day,
                    dim: d,
                    value,
                } => {
                    let key = keys::series(
                        link,
                        Granularity::Day,
                        day,
                        d,
                        &self.names.names[value as usize],
                    );
                    if d == dim::REFERRER || d == dim::COUNTRY {
                        bounded.push((key, delta));
                        continue;
                    }
                    key
                }
            };
            adds.push((bytes, delta));
        }
        adds.sort_unstable();
        bounded.sort_unstable();
        Flush {
            adds,
            bounded,
            hours: self
                .hours
                .into_iter()
                .filter(|h| !known_hours.contains(h))
                .collect(),
            humans: self.humans.into_iter().collect(),
            batches: self.batches.into_iter().collect(),
            clicks: self.clicks,
        }
    }
}

#[derive(Debug)]
struct Inner {
    classifier: Classifier,
    pending: Pending,
    wal: Wal,
    /// Highest batch sequence accepted per proxy.
    seen: HashMap<String, u64>,
    /// Flushes whose transaction failed; retried with the next one.
    /// Flushes sealed and not yet committed (full ones, and ones that
    /// failed), oldest first, each with the last click log segment it
    /// covers: committed one at a time, in order.
    retry: Vec<(u64, Arc<Flush>)>,
    /// Bounded keys and hour-index entries known to be stored already.
    known: FastSet<Vec<u8>>,
    known_hours: FastSet<(u32, u64)>,
}

/// Whether a batch was taken.
#[derive(Debug)]
pub enum Accepted {
    /// Logged durably and folded.
    Taken,
    /// Counted before.
    Duplicate,
    /// Too much is waiting for the store; send it again later.
    Busy,
    /// The click log could not be written; send it again later.
    Failed(String),
}

/// The click aggregator.
#[derive(Debug)]
pub struct Analytics {
    settings: Settings,
    geo: Option<GeoIp>,
    export: Option<Mutex<Exporter>>,
    inner: Mutex<Inner>,
    wake: Notify,
    /// Told when a full flush is sealed: it is committed without waiting.
    sealed: Notify,
    /// Held while flushes commit.
    flushing: tokio::sync::Mutex<()>,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// The classification of one distinct user agent in a batch.
#[derive(Debug, Clone, Copy)]
struct AgentIds {
    class: Class,
    browser: u32,
    os: u32,
    device: u32,
}

impl Analytics {
    /// Opens the click log in `wal_dir` and folds the batches it holds beyond
    /// segment `through` (the mark stored by the last flush).
    pub fn open(
        settings: Settings,
        geo: Option<GeoIp>,
        export: Option<Exporter>,
        wal_dir: &Path,
        through: u64,
    ) -> Result<Self, WalError> {
        let (wal, replay) = Wal::open(wal_dir, "clicks", through)?;
        let analytics = Self {
            settings,
            geo,
            export: export.map(Mutex::new),
            inner: Mutex::new(Inner {
                classifier: Classifier::new(),
                pending: Pending::default(),
                wal,
                seen: HashMap::new(),
                retry: Vec::new(),
                known: FastSet::default(),
                known_hours: FastSet::default(),
            }),
            wake: Notify::new(),
            sealed: Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
        };
        let mut replayed = 0;
        {
            let mut inner = lock(&analytics.inner);
            for (segment, record) in replay {
                let batch = shortline_store::clickwire::decode(&record).map_err(|e| {
                    WalError::Corrupt(wal_dir.join(format!("segment {segment}: {e}")), 0)
                })?;
                analytics.fold(&mut inner, &batch);
                // A proxy whose batch was logged but not acknowledged (the
                // process died in between) sends it again: it must be
                // known as taken, or its clicks count twice.
                let seen = inner.seen.entry(batch.proxy_id().to_owned()).or_default();
                *seen = (*seen).max(batch.batch_seq());
                replayed += batch.clicks().len();
            }
        }
        if replayed > 0 {
            tracing::info!(clicks = replayed, "replayed clicks from the click log");
            analytics.wake.notify_one();
        }
        Ok(analytics)
    }

    /// The stored mark of the click log, read before [`Analytics::open`].
    pub fn stored_through(txn: &dyn crate::db::ReadTxn) -> StoreResult<u64> {
        Ok(txn
            .get(Space::Meta, keys::WAL_THROUGH)?
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_le_bytes))
    }

    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Takes a batch unless `stored` (the proxy's highest sequence in the
    /// store) or a batch taken earlier already covers it. `raw` is the batch
    /// as received, for the click log. Blocks on the log's sync.
    pub fn accept(&self, batch: &WireBatch, raw: &[u8], stored: u64) -> Accepted {
        let mut inner = lock(&self.inner);
        let last = inner
            .seen
            .get(batch.proxy_id())
            .copied()
            .unwrap_or(0)
            .max(stored);
        if batch.batch_seq() <= last {
            return Accepted::Duplicate;
        }
        // Counts waiting in failed flushes count too: while the store is
        // down, ingest pushes back instead of growing memory and the log.
        let waiting = inner.pending.counts.len()
            + inner
                .retry
                .iter()
                .map(|(_, f)| f.adds.len() + f.bounded.len())
                .sum::<usize>();
        if waiting >= self.settings.flush_keys_max.saturating_mul(4) {
            return Accepted::Busy;
        }
        if let Err(e) = inner.wal.append(raw) {
            metrics::counter!("control_click_log_errors_total").increment(1);
            return Accepted::Failed(e.to_string());
        }
        self.fold(&mut inner, batch);
        inner
            .seen
            .insert(batch.proxy_id().to_owned(), batch.batch_seq());
        // A full flush is sealed at once, so none grows past the limit by
        // more than one batch while an earlier one commits.
        if inner.pending.counts.len() >= self.settings.flush_keys_max && seal(&mut inner) {
            self.sealed.notify_one();
        }
        metrics::gauge!("control_clicks_pending").set(inner.pending.clicks as f64);
        drop(inner);
        self.wake.notify_one();
        Accepted::Taken
    }

    fn fold(&self, inner: &mut Inner, batch: &WireBatch) {
        let Inner {
            classifier,
            pending,
            ..
        } = inner;
        let mut cache = BatchCache {
            agents: vec![None; batch.string_count()],
            referrers: vec![None; batch.string_count()],
        };
        let mut exported = Vec::new();
        for (index, click) in batch.clicks().iter().enumerate() {
            let counted = self.fold_click(classifier, pending, &mut cache, batch, click);
            if self.export.is_some() {
                let line = export_line(&pending.names, batch, index, click, &counted);
                serde_json::to_writer(&mut exported, &line).expect("export lines serialise");
                exported.push(b'\n');
            }
        }
        let seq = pending
            .batches
            .entry(batch.proxy_id().to_owned())
            .or_default();
        *seq = (*seq).max(batch.batch_seq());
        pending.clicks += batch.clicks().len() as u64;
        if let Some(export) = &self.export
            && !exported.is_empty()
            && let Err(e) = export
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(&exported)
        {
            metrics::counter!("control_click_export_errors_total").increment(1);
            tracing::warn!(error = %e, "click export failed");
        }
    }

    /// Adds one click's counts to `pending`: its kind in its hour and day,
    /// and for a human click the top-links entry and every breakdown.
    fn fold_click(
        &self,
        classifier: &mut Classifier,
        pending: &mut Pending,
        cache: &mut BatchCache,
        batch: &WireBatch,
        click: &WireClick,
    ) -> Counted {
        let link = click.link_id;
        let at = i64::try_from(click.at_unix_ms / 1000).unwrap_or(i64::MAX);
        let (hour, day) = (Granularity::Hour.bucket(at), Granularity::Day.bucket(at));
        pending.hours.insert((hour, link));
        let mut counted = Counted {
            kind: ClickKind::Head,
            agent: None,
            referrer: None,
            country: None,
        };
        if click.head {
            pending.add(Key::Heads(link), 1);
            pending.add_kind(link, hour, day, ClickKind::Head);
            return counted;
        }
        let agent = *cache.agents[click.agent_index()].get_or_insert_with(|| {
            let a = classifier.classify(batch.agent(click));
            AgentIds {
                class: a.class,
                browser: pending.names.id(a.browser),
                os: pending.names.id(a.os),
                device: pending.names.id(a.device.as_str()),
            }
        });
        pending.add(Key::Clicks(link), 1);
        counted.kind = agent.class.into();
        counted.agent = Some(agent);
        pending.add_kind(link, hour, day, counted.kind);
        if agent.class != Class::Human {
            return counted;
        }
        let referrer = *cache.referrers[click.referrer_index()]
            .get_or_insert_with(|| pending.names.id(&referrer_host(batch.referrer(click))));
        let country = self.geo.as_ref().map(|geo| {
            let code = click.client.and_then(|ip| geo.country(ip));
            let name = code.as_ref().and_then(|c| std::str::from_utf8(c).ok());
            pending.names.id(name.unwrap_or("unknown"))
        });
        // Only links with rules or a split have routes; a code no route
        // has (a newer proxy's) is not counted rather than misnamed.
        let route = shortline_store::routing::route_name(click.route).map(|n| pending.names.id(&n));
        pending.add_human(
            link,
            day,
            [
                (dim::BROWSER, Some(agent.browser)),
                (dim::OS, Some(agent.os)),
                (dim::DEVICE, Some(agent.device)),
                (dim::REFERRER, Some(referrer)),
                (dim::COUNTRY, country),
                (dim::ROUTE, route),
            ],
        );
        counted.referrer = Some(referrer);
        counted.country = country;
        counted
    }

    /// Flushes every `flush_interval` while clicks arrive, or at once when
    /// many keys are pending. Runs until the process ends.
    pub async fn run(self: Arc<Self>, committer: Committer) {
        loop {
            self.wake.notified().await;
            // Wait out the interval, unless a full flush is sealed first.
            tokio::select! {
                () = tokio::time::sleep(self.settings.flush_interval) => {}
                () = self.sealed.notified() => {}
            }
            self.flush(&committer).await;
        }
    }

    /// Commits the pending counts, after any earlier flush that failed.
    /// Each flush is one transaction that also records the last click log
    /// segment it covers, so after a crash the log is replayed from there and
    /// every click is counted once; flushes that failed are committed one by
    /// one, in order, never merged (a merged retry would only grow).
    pub async fn flush(&self, committer: &Committer) {
        // One flusher at a time: flushes commit in the order of their log
        // segments, and a caller's flush returns only once every flush
        // sealed before it is committed (or queued again after a failure).
        let _one_at_a_time = self.flushing.lock().await;
        let queue = {
            let mut inner = lock(&self.inner);
            if inner.pending.clicks > 0 && !seal(&mut inner) {
                return;
            }
            std::mem::take(&mut inner.retry)
        };
        if queue.is_empty() {
            return;
        }
        metrics::gauge!("control_clicks_pending").set(0.0);
        if let Some(export) = &self.export
            && let Err(e) = export.lock().unwrap_or_else(|e| e.into_inner()).sync()
        {
            tracing::warn!(error = %e, "click export could not be synced");
        }
        let mut queue = queue.into_iter();
        while let Some((segment, flush)) = queue.next() {
            if let Err(e) = self.commit_flush(committer, segment, &flush).await {
                metrics::counter!("control_analytics_flush_errors_total").increment(1);
                tracing::warn!(error = %e, "click flush failed; it is retried with the next one");
                let mut inner = lock(&self.inner);
                inner.retry = std::iter::once((segment, flush)).chain(queue).collect();
                drop(inner);
                self.wake.notify_one();
                return;
            }
        }
    }

    /// Commits one flush and, once it is durable, forgets the log segments
    /// it covers.
    async fn commit_flush(
        &self,
        committer: &Committer,
        segment: u64,
        flush: &Arc<Flush>,
    ) -> Result<(), CommitError> {
        let known: Arc<FastSet<Vec<u8>>> = {
            let inner = lock(&self.inner);
            Arc::new(
                flush
                    .bounded
                    .iter()
                    .filter(|(k, _)| inner.known.contains(k))
                    .map(|(k, _)| k.clone())
                    .collect(),
            )
        };
        tracing::debug!(
            segment,
            counters = flush.adds.len() + flush.bounded.len(),
            hours = flush.hours.len(),
            humans = flush.humans.len(),
            "click flush"
        );
        let top_n = self.settings.top_n;
        let started = Instant::now();
        let body = Arc::clone(flush);
        let now = crate::model::now_unix();
        let done = committer
            .write(move |txn| {
                let mut applied = Applied::default();
                apply(txn, &body, &known, top_n, now, &mut applied)?;
                txn.set(Space::Meta, keys::WAL_THROUGH, &segment.to_le_bytes())?;
                Ok(applied)
            })
            .await;
        metrics::histogram!("control_analytics_flush_seconds")
            .record(started.elapsed().as_secs_f64());
        let done = done?;
        let mut inner = lock(&self.inner);
        metrics::counter!("control_clicks_counted_total").increment(flush.clicks);
        metrics::counter!("control_links_exhausted_total").increment(done.exhausted);
        if inner.known.len() + done.admitted.len() > KNOWN_KEYS_MAX {
            inner.known.clear();
        }
        inner.known.extend(done.admitted);
        if inner.known_hours.len() + flush.hours.len() > KNOWN_KEYS_MAX {
            inner.known_hours.clear();
        }
        inner.known_hours.extend(flush.hours.iter().copied());
        if let Err(e) = inner.wal.prune(segment) {
            tracing::warn!(error = %e, "cannot delete counted click log segments");
        }
        Ok(())
    }
}

/// Ends the pending flush: starts a new click log segment and queues the
/// pending counts, with the last segment they cover, for the flusher.
/// False (logged) when the log cannot start a segment; the counts then
/// stay pending.
fn seal(inner: &mut Inner) -> bool {
    let segment = match inner.wal.rotate() {
        Ok(segment) => segment,
        Err(e) => {
            metrics::counter!("control_analytics_flush_errors_total").increment(1);
            tracing::warn!(error = %e, "cannot start a new click log segment");
            return false;
        }
    };
    let pending = std::mem::take(&mut inner.pending);
    let flush = Arc::new(pending.into_flush(&inner.known_hours));
    inner.retry.push((segment, flush));
    true
}

/// What flush transactions did.
#[derive(Debug, Default)]
struct Applied {
    exhausted: u64,
    /// Bounded keys now stored.
    admitted: Vec<Vec<u8>>,
}

fn apply(
    txn: &mut dyn Txn,
    flush: &Flush,
    known: &FastSet<Vec<u8>>,
    top_n: i64,
    now: i64,
    applied: &mut Applied,
) -> StoreResult<()> {
    for (proxy, seq) in &flush.batches {
        crate::domain::ingest::record_batch(txn, proxy, *seq, now)?;
    }
    // Only the human-click counters decide anything (max_clicks); the rest
    // are statistics, added without conflicting with readers.
    for (key, delta) in &flush.adds {
        if key.starts_with(keys::HUMANS_PREFIX) {
            txn.add(Space::Counters, key, *delta)?;
        } else {
            txn.add_statistic(Space::Counters, key, *delta)?;
        }
    }
    add_bounded(txn, flush, known, top_n, applied)?;
    if crate::domain::webhooks::active(&*txn)? {
        let now_ms = now.saturating_mul(1000);
        let nonce = rand::random::<u64>();
        crate::domain::webhooks::queue_clicks(txn, now_ms, nonce, &per_link(flush))?;
    }
    for (hour, link) in &flush.hours {
        txn.set(Space::StatsHours, &keys::hour_index(*hour, *link), b"")?;
    }
    // Only links with a limit can be exhausted: find them in one read.
    let ids: Vec<Vec<u8>> = flush
        .humans
        .iter()
        .map(|link| keys::link_id(*link).to_vec())
        .collect();
    let limited = txn.get_many(Space::Limited, &ids)?;
    for (link, limit) in flush.humans.iter().zip(limited) {
        if limit.is_some() && crate::domain::links::exhaust_if_due(txn, *link, now)? {
            applied.exhausted += 1;
        }
    }
    Ok(())
}

/// Clicks and human clicks per link in a flush, `(link id, clicks,
/// humans)`, read off its sorted counter adds.
fn per_link(flush: &Flush) -> Vec<(u64, u64, u64)> {
    let ids = |prefix: &'static [u8]| {
        flush.adds.iter().filter_map(move |(key, delta)| {
            let id = key.strip_prefix(prefix)?;
            Some((
                u64::from_be_bytes(id.try_into().ok()?),
                delta.unsigned_abs(),
            ))
        })
    };
    let humans: FastMap<u64, u64> = ids(keys::HUMANS_PREFIX).collect();
    ids(keys::CLICKS_PREFIX)
        .map(|(id, clicks)| (id, clicks, humans.get(&id).copied().unwrap_or(0)))
        .collect()
}

/// Adds the counts of bounded dimensions (referrers, countries): a value
/// already stored is added to; a new one is admitted while the link's day
/// has fewer than `top_n` distinct values, and counted as `other` after.
/// Every read is made up front, in two batches (one round trip each on
/// FoundationDB), and admissions within the flush are tracked here.
fn add_bounded(
    txn: &mut dyn Txn,
    flush: &Flush,
    known: &FastSet<Vec<u8>>,
    top_n: i64,
    applied: &mut Applied,
) -> StoreResult<()> {
    let unknown: Vec<Vec<u8>> = flush
        .bounded
        .iter()
        .filter(|(key, _)| !known.contains(key))
        .map(|(key, _)| key.clone())
        .collect();
    let stored: FastSet<Vec<u8>> = unknown
        .iter()
        .zip(txn.get_many(Space::Counters, &unknown)?)
        .filter(|(_, value)| value.is_some())
        .map(|(key, _)| key.clone())
        .collect();
    let mut distinct_keys: Vec<Vec<u8>> = unknown
        .iter()
        .filter(|key| !stored.contains(*key))
        .map(|key| keys::distinct(key))
        .collect();
    distinct_keys.sort_unstable();
    distinct_keys.dedup();
    let mut distinct: FastMap<Vec<u8>, i64> = distinct_keys
        .iter()
        .cloned()
        .zip(txn.get_many(Space::Counters, &distinct_keys)?)
        .map(|(key, value)| (key, value.map_or(0, |v| counter_value(&v))))
        .collect();
    for (key, delta) in &flush.bounded {
        if known.contains(key) || stored.contains(key) {
            txn.add_statistic(Space::Counters, key, *delta)?;
            applied.admitted.push(key.clone());
            continue;
        }
        let distinct_key = keys::distinct(key);
        let count = distinct.get_mut(&distinct_key).expect("read above");
        if *count < top_n {
            *count += 1;
            txn.add(Space::Counters, &distinct_key, 1)?;
            txn.add_statistic(Space::Counters, key, *delta)?;
            applied.admitted.push(key.clone());
        } else {
            let mut other = key[..keys::SERIES_VALUE_AT].to_vec();
            other.extend_from_slice(OTHER.as_bytes());
            txn.add_statistic(Space::Counters, &other, *delta)?;
        }
    }
    Ok(())
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
        let prefix = keys::bucket_prefix(link, Granularity::Hour, hour);
        loop {
            let keys = txn.range(
                Space::Counters,
                &prefix,
                &crate::db::prefix_end(&prefix),
                1024,
            )?;
            if keys.is_empty() {
                break;
            }
            for (key, _) in keys {
                txn.clear(Space::Counters, &key)?;
            }
        }
        txn.clear(Space::StatsHours, entry)?;
    }
    Ok(due.len())
}

/// Classifications made once per distinct string of a batch.
struct BatchCache {
    agents: Vec<Option<AgentIds>>,
    referrers: Vec<Option<u32>>,
}

/// What one click was counted as, with the interned names it was counted
/// under: what its export line says.
struct Counted {
    kind: ClickKind,
    agent: Option<AgentIds>,
    referrer: Option<u32>,
    country: Option<u32>,
}

/// The export line of a counted click.
fn export_line<'a>(
    names: &Names,
    batch: &'a WireBatch,
    index: usize,
    click: &WireClick,
    counted: &Counted,
) -> ExportLine<'a> {
    let name = |id: u32| names.names[id as usize].to_string();
    let human = counted.kind == ClickKind::Human;
    ExportLine {
        at_unix_ms: click.at_unix_ms,
        link_id: click.link_id,
        method: if click.head { "HEAD" } else { "GET" },
        class: counted.agent.map(|a| a.class.as_str()),
        browser: human
            .then(|| counted.agent.map(|a| name(a.browser)))
            .flatten(),
        os: human.then(|| counted.agent.map(|a| name(a.os))).flatten(),
        device: human
            .then(|| counted.agent.map(|a| name(a.device)))
            .flatten(),
        referrer_host: counted.referrer.map(name),
        country: counted.country.map(name),
        proxy_id: batch.proxy_id(),
        batch_seq: batch.batch_seq(),
        index,
    }
}

/// One raw click in the export (schema in docs/ANALYTICS.md).
#[derive(Debug, serde::Serialize)]
struct ExportLine<'a> {
    at_unix_ms: u64,
    link_id: u64,
    method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    browser: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referrer_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<String>,
    proxy_id: &'a str,
    batch_seq: u64,
    index: usize,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shortline_store::clickwire::{Encoder, decode};

    use super::*;
    use crate::db::Backend;
    use crate::db::keys::series_prefix;
    use crate::db::redb::RedbBackend;

    /// The embedded store in a fresh directory, with its committer.
    fn store() -> (tempfile::TempDir, Arc<dyn Backend>, Committer) {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(RedbBackend::open(dir.path()).unwrap());
        let (committed, _) = tokio::sync::watch::channel(crate::commit::Committed {
            seq: shortline_store::Seq(0),
            at: Instant::now(),
        });
        let committer =
            Committer::start(Arc::clone(&backend), 16, 16, Arc::new(committed)).unwrap();
        (dir, backend, committer)
    }

    const CHROME: &[u8] = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

    fn counters(backend: &dyn Backend, prefix: &[u8]) -> Vec<(Vec<u8>, i64)> {
        let mut out = Vec::new();
        backend
            .read(|txn| {
                out = txn
                    .range(
                        Space::Counters,
                        prefix,
                        &crate::db::prefix_end(prefix),
                        10_000,
                    )?
                    .into_iter()
                    .map(|(k, v)| (k, counter_value(&v)))
                    .collect();
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn referrers_beyond_top_n_count_as_other_and_old_hours_are_pruned() {
        let (dir, backend, committer) = store();
        let settings = Settings {
            flush_interval: Duration::from_secs(60),
            flush_keys_max: 1000,
            top_n: 2,
            hourly_retention_days: 90,
        };
        let analytics = Analytics::open(settings, None, None, &dir.path().join("wal"), 0).unwrap();
        let day0 = 20_000u64 * 86_400 * 1000;
        let mut encoder = Encoder::new();
        for referrer in [
            &b"https://a.example/"[..],
            b"https://b.example/",
            b"https://c.example/",
            b"https://d.example/",
        ] {
            encoder.push(7, day0, false, None, CHROME, referrer);
        }
        let raw = encoder.finish("p", 1);
        assert!(matches!(
            analytics.accept(&decode(&raw).unwrap(), &raw, 0),
            Accepted::Taken
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(analytics.flush(&committer));
        let mut referrers: Vec<(String, i64)> =
            counters(&*backend, &series_prefix(7, Granularity::Day))
                .into_iter()
                .filter(|(k, _)| k[14] == dim::REFERRER)
                .map(|(k, v)| (String::from_utf8(k[15..].to_vec()).unwrap(), v))
                .collect();
        referrers.sort();
        assert_eq!(
            referrers,
            [
                ("a.example".into(), 1),
                ("b.example".into(), 1),
                (OTHER.into(), 2)
            ]
        );
        assert_eq!(
            counters(&*backend, &series_prefix(7, Granularity::Hour)).len(),
            1
        );
        // 91 days later the hourly bucket goes; the daily ones stay.
        let now = i64::try_from(day0 / 1000).unwrap() + 91 * 86_400;
        let pruned = runtime
            .block_on(committer.write(move |txn| prune_hours(txn, now, 90, 100)))
            .unwrap();
        assert_eq!(pruned, 1);
        assert!(counters(&*backend, &series_prefix(7, Granularity::Hour)).is_empty());
        assert!(!counters(&*backend, &series_prefix(7, Granularity::Day)).is_empty());
    }

    #[test]
    fn a_batch_logged_before_a_crash_and_sent_again_counts_once() {
        let (dir, _backend, _committer) = store();
        let settings = Settings {
            flush_interval: Duration::from_secs(3600),
            flush_keys_max: 1000,
            top_n: 10,
            hourly_retention_days: 90,
        };
        let wal = dir.path().join("wal");
        let mut encoder = Encoder::new();
        encoder.push(7, 20_000u64 * 86_400 * 1000, false, None, CHROME, b"");
        let raw = encoder.finish("p", 1);
        let analytics = Analytics::open(settings.clone(), None, None, &wal, 0).unwrap();
        assert!(matches!(
            analytics.accept(&decode(&raw).unwrap(), &raw, 0),
            Accepted::Taken
        ));
        // The process dies before the proxy hears back, and before a flush.
        drop(analytics);
        let analytics = Analytics::open(settings, None, None, &wal, 0).unwrap();
        assert_eq!(lock(&analytics.inner).pending.clicks, 1, "replayed");
        assert!(
            matches!(
                analytics.accept(&decode(&raw).unwrap(), &raw, 0),
                Accepted::Duplicate
            ),
            "the proxy's retry is the same batch"
        );
        assert_eq!(lock(&analytics.inner).pending.clicks, 1);
    }

    #[test]
    fn a_full_flush_is_sealed_at_once_and_every_click_counted_once() {
        let (dir, backend, committer) = store();
        let settings = Settings {
            flush_interval: Duration::from_secs(3600),
            flush_keys_max: 200,
            top_n: 10,
            hourly_retention_days: 90,
        };
        let analytics = Analytics::open(settings, None, None, &dir.path().join("wal"), 0).unwrap();
        let day0 = 20_000u64 * 86_400 * 1000;
        // Eight batches of ten links each; a batch adds at most ten counters
        // per link.
        for seq in 1..=8u64 {
            let mut encoder = Encoder::new();
            for link in 0..10 {
                encoder.push(seq * 100 + link, day0, false, None, CHROME, b"");
            }
            let raw = encoder.finish("p", seq);
            assert!(matches!(
                analytics.accept(&decode(&raw).unwrap(), &raw, 0),
                Accepted::Taken
            ));
        }
        let sealed: Vec<usize> = lock(&analytics.inner)
            .retry
            .iter()
            .map(|(_, f)| f.adds.len() + f.bounded.len())
            .collect();
        assert!(
            sealed.len() >= 2,
            "full flushes are sealed as they fill: {sealed:?}"
        );
        assert!(
            sealed.iter().all(|n| (200..300).contains(n)),
            "sealed once full, never past the limit by more than a batch: {sealed:?}"
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(analytics.flush(&committer));
        assert!(lock(&analytics.inner).retry.is_empty());
        let clicks: i64 = counters(&*backend, b"clicks/").iter().map(|(_, v)| v).sum();
        assert_eq!(
            clicks, 80,
            "each click counted once across the sealed flushes"
        );
    }
}
