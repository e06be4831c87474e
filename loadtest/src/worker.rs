//! One connection's loop: picks transactions from the schedule, checks every
//! answer, records latencies and failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::{Value, json};

use crate::conn::{Answer, Conn};
use crate::failures::{Failure, Failures};
use crate::report::{Histograms, new_histogram};
use crate::scenario::Transaction;
use crate::seed::{Link, TAG};

/// Counters shared by every connection.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub creates: AtomicU64,
}

/// What every worker shares with the run.
#[derive(Debug)]
pub struct Shared {
    pub links: Vec<Link>,
    pub schedule: Vec<Transaction>,
    pub counters: Counters,
    pub failures: Failures,
    /// Workers whose connections are open.
    pub connected: AtomicUsize,
    /// Set while answers count toward the report.
    pub measuring: AtomicBool,
    pub stop: AtomicBool,
    /// The tag of this run's links, for the ones it creates.
    pub run_tag: String,
}

/// One connection (to the proxy, and to control when the schedule needs it).
#[derive(Debug)]
pub struct Worker {
    pub shared: Arc<Shared>,
    pub proxy: Conn,
    pub control: Option<Conn>,
    pub zipf: Zipf<f64>,
    /// Open loop: one request per interval per connection.
    pub interval: Option<Duration>,
}

impl Worker {
    fn pick(&self, rng: &mut SmallRng, transaction: Transaction) -> usize {
        let n = self.shared.links.len();
        match transaction {
            Transaction::RedirectUniform => rng.random_range(0..n),
            _ => {
                let rank = self.zipf.sample(rng) as u64 - 1;
                (rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n as u64) as usize
            }
        }
    }

    async fn redirect(&mut self, transaction: Transaction, link: &Link) -> Result<Option<Failure>> {
        let path = format!("/{}", link.code);
        let answer = self.proxy.send("GET", &path, None).await?;
        let ok = (300..400).contains(&answer.status)
            && answer.location.as_deref() == Some(link.target.as_str());
        Ok((!ok).then(|| {
            let kind = if (300..400).contains(&answer.status) {
                format!("{}: wrong Location", transaction.name())
            } else {
                format!("{}: status {}", transaction.name(), answer.status)
            };
            Failure::mismatch(
                kind,
                format!(
                    "GET {path}: expected a redirect to {}, got {} with Location {:?}: {}",
                    link.target,
                    answer.status,
                    answer.location,
                    answer.body_excerpt(200)
                ),
            )
        }))
    }

    async fn create(&mut self, n: u64) -> Result<Option<Failure>> {
        let Some(control) = self.control.as_mut() else {
            anyhow::bail!("create needs --control and --token");
        };
        let url = format!(
            "https://example.com/loadtest/{}/created/{n}",
            self.shared.run_tag
        );
        let body = serde_json::to_vec(&json!({ "url": url, "tags": [TAG, self.shared.run_tag] }))?;
        let answer = control.send("POST", "/api/v1/links", Some(body)).await?;
        let link: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        let ok = answer.status == 201 && link["url"] == url.as_str() && link["code"].is_string();
        Ok((!ok).then(|| unexpected("create", "POST /api/v1/links", "201 with the link", &answer)))
    }

    async fn stats(&mut self, link: &Link) -> Result<Option<Failure>> {
        let Some(control) = self.control.as_mut() else {
            anyhow::bail!("stats needs --control and --token");
        };
        let path = format!("/api/v1/links/{}/stats", link.code);
        let answer = control.send("GET", &path, None).await?;
        let stats: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        let ok = answer.status == 200
            && stats["code"] == link.code.as_str()
            && stats["total_clicks"].is_u64();
        Ok((!ok).then(|| {
            unexpected(
                "stats",
                &format!("GET {path}"),
                "200 with its counts",
                &answer,
            )
        }))
    }

    async fn one(
        &mut self,
        rng: &mut SmallRng,
        transaction: Transaction,
        n: u64,
    ) -> Result<Option<Failure>> {
        match transaction {
            Transaction::Create => self.create(n).await,
            Transaction::Stats => {
                let link = self.shared.links[self.pick(rng, transaction)].clone();
                self.stats(&link).await
            }
            Transaction::RedirectUniform | Transaction::RedirectZipf => {
                let link = self.shared.links[self.pick(rng, transaction)].clone();
                self.redirect(transaction, &link).await
            }
        }
    }

    /// Opens the connections, then runs until told to stop.
    pub async fn run(mut self, seed: u64) -> Result<Histograms> {
        self.proxy.open().await?;
        if let Some(control) = self.control.as_mut() {
            control.open().await?;
        }
        self.shared.connected.fetch_add(1, Ordering::AcqRel);
        let mut histograms = Histograms::new();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut next_send = Instant::now();
        let schedule_len = self.shared.schedule.len() as u64;
        let mut n = rng.random_range(0..schedule_len);
        while !self.shared.stop.load(Ordering::Relaxed) {
            if let Some(interval) = self.interval {
                let now = Instant::now();
                if next_send > now {
                    tokio::time::sleep(next_send - now).await;
                }
                next_send += interval;
            }
            n += 1;
            let transaction = self.shared.schedule[(n % schedule_len) as usize];
            let started = Instant::now();
            let outcome = self.one(&mut rng, transaction, seed << 40 | n).await;
            let micros = started.elapsed().as_micros() as u64;
            if !self.shared.measuring.load(Ordering::Relaxed) {
                continue;
            }
            let counters = &self.shared.counters;
            counters.requests.fetch_add(1, Ordering::Relaxed);
            if transaction == Transaction::Create {
                counters.creates.fetch_add(1, Ordering::Relaxed);
            }
            match outcome {
                Ok(None) => {}
                Ok(Some(failure)) => self.shared.failures.record(failure),
                Err(e) => self.shared.failures.record(Failure::error(
                    format!("{}: {}", transaction.name(), root_cause(&e)),
                    format!("{}: {e:#}", transaction.name()),
                )),
            }
            let histogram = match histograms.entry(transaction) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(new_histogram()?),
            };
            match self.interval {
                // Coordinated omission: also record the requests that would
                // have been sent while this one was stuck.
                Some(interval) => {
                    histogram.record_correct(micros.max(1), interval.as_micros() as u64)?;
                }
                None => histogram.record(micros.max(1))?,
            }
        }
        Ok(histograms)
    }
}

/// The innermost error's text: stable enough to count failures by.
fn root_cause(error: &anyhow::Error) -> String {
    error.root_cause().to_string()
}

/// A control-plane answer that was not the expected one.
fn unexpected(transaction: &str, request: &str, expected: &str, answer: &Answer) -> Failure {
    Failure::mismatch(
        format!("{transaction}: status {}", answer.status),
        format!(
            "{request}: expected {expected}, got {}: {}",
            answer.status,
            answer.body_excerpt(300)
        ),
    )
}
