//! What went wrong in a run: the first failures in full, then counts by kind.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Failures shown in full; the rest are counted by kind.
pub const FAILURES_SHOWN_MAX: usize = 10;

/// Whether a failure was a wrong answer or no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// An answer came back, and it was not the expected one.
    Mismatch,
    /// No answer: the connection failed or timed out.
    Error,
}

/// One failure: a short kind to count by, and the whole story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub severity: Severity,
    /// Short and stable, e.g. `redirect-zipf: status 404`.
    pub kind: String,
    /// What was asked, what was expected and what came back.
    pub detail: String,
}

impl Failure {
    #[must_use]
    pub fn mismatch(kind: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            severity: Severity::Mismatch,
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    #[must_use]
    pub fn error(kind: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    shown: Vec<Failure>,
    by_kind: BTreeMap<(Severity, String), u64>,
}

/// Failures collected from every connection.
#[derive(Debug, Default)]
pub struct Failures {
    inner: Mutex<Inner>,
}

impl Failures {
    pub fn record(&self, failure: Failure) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *inner
            .by_kind
            .entry((failure.severity, failure.kind.clone()))
            .or_default() += 1;
        if inner.shown.len() < FAILURES_SHOWN_MAX {
            inner.shown.push(failure);
        }
    }

    /// (errors, mismatches).
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.by_kind.iter().fold(
            (0, 0),
            |(errors, mismatches), ((severity, _), n)| match severity {
                Severity::Error => (errors + n, mismatches),
                Severity::Mismatch => (errors, mismatches + n),
            },
        )
    }

    /// The report: nothing when all went well.
    #[must_use]
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        if inner.shown.is_empty() {
            return out;
        }
        let total: u64 = inner.by_kind.values().sum();
        let _ = writeln!(
            out,
            "failures: the first {} of {total} in full",
            inner.shown.len()
        );
        for failure in &inner.shown {
            let label = match failure.severity {
                Severity::Error => "error",
                Severity::Mismatch => "mismatch",
            };
            let _ = writeln!(out, "  {label}: {}", failure.detail);
        }
        let _ = writeln!(out, "failures by kind:");
        for ((severity, kind), n) in &inner.by_kind {
            let label = match severity {
                Severity::Error => "error",
                Severity::Mismatch => "mismatch",
            };
            let _ = writeln!(out, "  {n:>8}  {label}: {kind}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_are_kept_whole_and_all_are_counted_by_kind() {
        let failures = Failures::default();
        for i in 0..25 {
            failures.record(Failure::mismatch(
                "redirect-zipf: status 404",
                format!("GET /c{i}: expected 302, got 404"),
            ));
        }
        failures.record(Failure::error(
            "create: connection",
            "POST /api/v1/links: reset",
        ));
        assert_eq!(failures.counts(), (1, 25));
        let text = failures.render();
        assert!(text.contains("the first 10 of 26 in full"), "{text}");
        assert!(text.contains("GET /c0: expected 302, got 404"), "{text}");
        assert!(!text.contains("GET /c10:"), "{text}");
        assert!(
            text.contains("      25  mismatch: redirect-zipf: status 404"),
            "{text}"
        );
        assert!(
            text.contains("       1  error: create: connection"),
            "{text}"
        );
    }

    #[test]
    fn a_clean_run_renders_nothing() {
        assert_eq!(Failures::default().render(), "");
        assert_eq!(Failures::default().counts(), (0, 0));
    }
}
