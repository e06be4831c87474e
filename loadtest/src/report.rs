//! The run's summary: printed, and written as JSON with `--json`.

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::Transaction;

/// Latencies per transaction, in microseconds.
pub type Histograms = BTreeMap<Transaction, Histogram<u64>>;

/// Largest latency recorded: a minute, in microseconds.
const LATENCY_MAX_MICROS: u64 = 60_000_000;

/// An empty latency histogram (microseconds, three significant digits).
pub fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_MICROS, 3)?)
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// Latency percentiles of all requests, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One transaction's share of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransactionReport {
    pub requests: u64,
    pub latency_ms: Latency,
}

/// The whole run: its totals, with the rate and latencies worked out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub totals: Totals,
    pub rps: f64,
    pub latency_ms: Latency,
    pub transactions: BTreeMap<String, TransactionReport>,
}

fn latency(histogram: &Histogram<u64>) -> Latency {
    Latency {
        p50: ms(histogram, 0.5),
        p90: ms(histogram, 0.9),
        p99: ms(histogram, 0.99),
        p999: ms(histogram, 0.999),
        max: histogram.max() as f64 / 1000.0,
    }
}

/// What a run counted, besides its latencies.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub scenario: String,
    pub connections: usize,
    pub seconds: f64,
    pub links: usize,
    pub requests: u64,
    pub creates: u64,
    pub errors: u64,
    pub mismatches: u64,
}

impl Report {
    /// The report of a run from its per-transaction histograms.
    pub fn new(totals: Totals, by_transaction: &Histograms) -> Result<Self> {
        let mut all = new_histogram()?;
        for histogram in by_transaction.values() {
            all.add(histogram)?;
        }
        let rps = if totals.seconds > 0.0 {
            totals.requests as f64 / totals.seconds
        } else {
            0.0
        };
        Ok(Self {
            rps,
            latency_ms: latency(&all),
            transactions: by_transaction
                .iter()
                .map(|(t, h)| {
                    (
                        t.name().to_owned(),
                        TransactionReport {
                            requests: h.len(),
                            latency_ms: latency(h),
                        },
                    )
                })
                .collect(),
            totals,
        })
    }

    /// Whether every answer was the expected one.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.totals.errors == 0 && self.totals.mismatches == 0
    }

    /// The summary as printed.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let l = &self.latency_ms;
        let t = &self.totals;
        let _ = writeln!(
            out,
            "{}: {} requests in {:.1} s = {:.0} req/s over {} connections",
            t.scenario, t.requests, t.seconds, self.rps, t.connections
        );
        let _ = writeln!(
            out,
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        if self.transactions.len() > 1 {
            for (name, t) in &self.transactions {
                let _ = writeln!(
                    out,
                    "  {name:<17} {:>10} requests  p50 {:.3}  p99 {:.3} ms",
                    t.requests, t.latency_ms.p50, t.latency_ms.p99
                );
            }
        }
        let _ = writeln!(out, "errors: {}  mismatches: {}", t.errors, t.mismatches);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histograms() -> Histograms {
        let mut histograms = Histograms::new();
        let mut redirects = new_histogram().unwrap();
        for micros in [100, 200, 300, 400] {
            redirects.record(micros).unwrap();
        }
        let mut creates = new_histogram().unwrap();
        creates.record(5_000).unwrap();
        histograms.insert(Transaction::RedirectZipf, redirects);
        histograms.insert(Transaction::Create, creates);
        histograms
    }

    #[test]
    fn the_report_adds_up_its_transactions() {
        let totals = Totals {
            scenario: "mixed".into(),
            connections: 2,
            seconds: 2.0,
            links: 10,
            requests: 5,
            creates: 1,
            errors: 0,
            mismatches: 0,
        };
        let report = Report::new(totals, &histograms()).unwrap();
        assert!((report.rps - 2.5).abs() < 1e-9);
        assert_eq!(report.transactions["redirect-zipf"].requests, 4);
        assert_eq!(report.transactions["create"].requests, 1);
        assert!(
            (report.latency_ms.max - 5.0).abs() < 0.01,
            "{:?}",
            report.latency_ms
        );
        assert!(report.passed());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["requests"], 5, "totals are flattened into the report");
        assert_eq!(json["transactions"]["create"]["requests"], 1);
        assert!(json["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
        let text = report.render();
        assert!(
            text.starts_with("mixed: 5 requests in 2.0 s = 2 req/s over 2 connections"),
            "{text}"
        );
        assert!(text.contains("errors: 0  mismatches: 0"), "{text}");
    }

    #[test]
    fn a_failure_fails_the_report() {
        let totals = Totals {
            mismatches: 1,
            ..Totals::default()
        };
        assert!(!Report::new(totals, &Histograms::new()).unwrap().passed());
    }
}
