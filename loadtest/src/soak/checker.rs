//! The soak's invariant checker: every acknowledged operation and every
//! answer the proxy gave goes in, and every broken promise comes out as a
//! violation. It is pure bookkeeping on times the caller supplies, so its
//! rules are tested here on histories written by hand.
//!
//! Targets are `https://soak.example/{link}/v{version}`: `link` is unique to
//! one create attempt and `version` grows with every write attempt on that
//! link, so an answer names the link and the write it came from.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The target a soak link points at in `version`.
#[must_use]
pub fn target(link: u64, version: u64) -> String {
    format!("https://soak.example/{link}/v{version}")
}

/// The link and version a `Location` names, if it is a soak target.
#[must_use]
pub fn parse_target(location: &str) -> Option<(u64, u64)> {
    let rest = location.strip_prefix("https://soak.example/")?;
    let (link, version) = rest.split_once("/v")?;
    Some((link.parse().ok()?, version.parse().ok()?))
}

/// What the proxy answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A redirect to a soak target.
    Redirect { link: u64, version: u64 },
    /// A redirect anywhere else.
    Foreign(String),
    /// Any other status.
    Status(u16),
    /// No answer (the connection failed): the request may or may not have
    /// been answered, and counted.
    Failed,
}

/// How a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Disabled,
    Deleted,
}

#[derive(Debug, Default)]
struct Code {
    /// The link this code belongs to.
    link: Option<u64>,
    /// When its create was acknowledged.
    created_at: Option<Instant>,
    /// The newest version acknowledged, and the newest attempted.
    acked_version: u64,
    attempted_version: u64,
    ended: Option<(End, Instant)>,
    /// A disable or delete sent but not yet acknowledged: it may have
    /// happened already.
    ending: Option<End>,
    /// The highest version answered, and when that answer arrived.
    newest_seen: Option<(u64, Instant)>,
    /// When a 404 or 410 after the end was first received.
    end_seen: Option<Instant>,
    /// Redirects received, and requests that failed without an answer.
    answered: u64,
    uncertain: u64,
    busy: bool,
}

/// Counts of what the soak did and found.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub creates: u64,
    pub batch_creates: u64,
    pub patches: u64,
    pub disables: u64,
    pub deletes: u64,
    pub reports: u64,
    pub writes_failed: u64,
    pub redirects: u64,
    pub not_found: u64,
    pub gone: u64,
    pub requests_failed: u64,
}

/// Every link the soak made, and the rules their answers must keep.
#[derive(Debug)]
pub struct Checker {
    bound: Duration,
    codes: HashMap<String, Code>,
    /// Codes with acknowledged creates, in order.
    order: Vec<String>,
    /// When a component was down or catching up: (start, end), in order;
    /// the last may still be open.
    faults: Vec<(Instant, Option<Instant>)>,
    violations: Vec<String>,
    pub tally: Tally,
}

impl Checker {
    /// A checker that allows `bound` for a change to reach the proxy,
    /// plus the length of any fault in between.
    #[must_use]
    pub fn new(bound: Duration) -> Self {
        Self {
            bound,
            codes: HashMap::new(),
            order: Vec::new(),
            faults: Vec::new(),
            violations: Vec::new(),
            tally: Tally::default(),
        }
    }

    fn violation(&mut self, text: String) {
        if self.violations.len() < 1000 {
            self.violations.push(text);
        }
    }

    /// Violations found so far.
    #[must_use]
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    pub fn fault_started(&mut self, at: Instant) {
        self.faults.push((at, None));
    }

    pub fn fault_ended(&mut self, at: Instant) {
        if let Some((_, end @ None)) = self.faults.last_mut() {
            *end = Some(at);
        }
    }

    /// The last moment a change acknowledged at `at` may still be unseen at
    /// the proxy: `bound` later, pushed back past every fault that begins
    /// before it. `None` while a fault that matters is still going on.
    #[must_use]
    pub fn deadline(&self, at: Instant) -> Option<Instant> {
        let mut deadline = at + self.bound;
        for &(start, end) in &self.faults {
            if start > deadline {
                break;
            }
            match end {
                Some(end) if end + self.bound > deadline => deadline = end + self.bound,
                Some(_) => {}
                None => return None,
            }
        }
        Some(deadline)
    }

    /// An acknowledged create of `link` under `code`.
    pub fn created(&mut self, code: &str, link: u64, at: Instant) {
        let entry = self.codes.entry(code.to_owned()).or_default();
        match entry.link {
            Some(other) if other != link => {
                self.violation(format!(
                    "{code} was handed out for link {link} while it belongs to link {other}"
                ));
                return;
            }
            _ => {}
        }
        if entry.created_at.is_some() {
            self.violation(format!("{code} was acknowledged twice as a new link"));
            return;
        }
        entry.link = Some(link);
        entry.created_at = Some(at);
        self.order.push(code.to_owned());
    }

    /// A code that no write is working on and that has not ended, chosen by
    /// `pick`, marked busy until [`Checker::release`].
    pub fn take_live(&mut self, pick: usize) -> Option<(String, u64)> {
        let len = self.order.len();
        for offset in 0..len.min(64) {
            let code = &self.order[(pick + offset) % len];
            let entry = self.codes.get_mut(code).expect("ordered codes are known");
            if !entry.busy && entry.ended.is_none() {
                entry.busy = true;
                return Some((code.clone(), entry.link.expect("created")));
            }
        }
        None
    }

    pub fn release(&mut self, code: &str) {
        if let Some(entry) = self.codes.get_mut(code) {
            entry.busy = false;
        }
    }

    /// Any acknowledged code, chosen by `pick`, for a reader.
    #[must_use]
    pub fn any_code(&self, pick: usize) -> Option<String> {
        (!self.order.is_empty()).then(|| self.order[pick % self.order.len()].clone())
    }

    /// The version the next write of `code` will set.
    pub fn next_version(&mut self, code: &str) -> u64 {
        let entry = self.codes.entry(code.to_owned()).or_default();
        entry.attempted_version += 1;
        entry.attempted_version
    }

    pub fn patched(&mut self, code: &str, version: u64) {
        if let Some(entry) = self.codes.get_mut(code) {
            entry.acked_version = entry.acked_version.max(version);
        }
    }

    /// A disable or delete is about to be sent.
    pub fn ending(&mut self, code: &str, end: End) {
        if let Some(entry) = self.codes.get_mut(code) {
            entry.ending = Some(end);
        }
    }

    pub fn ended(&mut self, code: &str, end: End, at: Instant) {
        if let Some(entry) = self.codes.get_mut(code) {
            entry.ended = Some((end, at));
        }
    }

    /// One answer of the proxy to `GET /{code}`, sent at `sent` and
    /// received at `received`.
    pub fn observe(&mut self, code: &str, sent: Instant, received: Instant, answer: &Answer) {
        match answer {
            Answer::Redirect { .. } => self.tally.redirects += 1,
            Answer::Status(404) => self.tally.not_found += 1,
            Answer::Status(410) => self.tally.gone += 1,
            Answer::Failed => self.tally.requests_failed += 1,
            _ => {}
        }
        let Some(entry) = self.codes.get(code) else {
            return;
        };
        let created = entry.created_at;
        let ended = entry.ended;
        let deadline_created = created.and_then(|at| self.deadline(at));
        let deadline_ended = ended.and_then(|(_, at)| self.deadline(at));
        let mut found = Vec::new();
        let entry = self.codes.get_mut(code).expect("just seen");
        match *answer {
            Answer::Redirect { link, version } => {
                entry.answered += 1;
                if entry.link.is_some_and(|own| own != link) {
                    found.push(format!(
                        "{code} redirected to link {link}'s target but belongs to link {}",
                        entry.link.unwrap_or_default()
                    ));
                }
                entry.link.get_or_insert(link);
                if version > entry.attempted_version {
                    found.push(format!(
                        "{code} redirected to version {version}, which was never written"
                    ));
                }
                if let Some((newest, at)) = entry.newest_seen
                    && sent > at
                    && version < newest
                {
                    found.push(format!(
                        "{code} went back in time: version {version} after version {newest} was answered"
                    ));
                }
                if entry.newest_seen.is_none_or(|(newest, _)| version > newest) {
                    entry.newest_seen = Some((version, received));
                }
                if let Some((end, _)) = ended {
                    if deadline_ended.is_some_and(|d| sent > d) {
                        found.push(format!(
                            "{code} redirected after it was {end:?} and the visibility bound passed"
                        ));
                    } else if entry.end_seen.is_some_and(|seen| sent > seen) {
                        found.push(format!(
                            "{code} went back in time: redirected after answering that it was {end:?}"
                        ));
                    }
                }
            }
            Answer::Foreign(ref location) => {
                found.push(format!("{code} redirected to a foreign target {location}"));
            }
            Answer::Status(status @ (404 | 410)) => {
                let ending = match entry.ending {
                    Some(End::Disabled) => status == 410,
                    Some(End::Deleted) => status == 404,
                    None => false,
                };
                if let Some((_, at)) = ended {
                    if sent > at {
                        entry.end_seen.get_or_insert(received);
                    }
                } else if ending {
                    // The end in flight has landed before its answer came.
                } else if deadline_created.is_some_and(|d| sent > d) {
                    found.push(format!(
                        "{code} answered {status} though its create was acknowledged and the visibility bound passed"
                    ));
                }
            }
            Answer::Status(status) => {
                found.push(format!("{code} answered {status}"));
            }
            Answer::Failed => entry.uncertain += 1,
        }
        for text in found {
            self.violation(text);
        }
    }

    /// Every acknowledged code, with what the end state must show: the
    /// link, the newest acknowledged version, the newest attempted, and how
    /// it ended.
    #[must_use]
    pub fn expectations(&self) -> Vec<Expected> {
        self.order
            .iter()
            .map(|code| {
                let entry = &self.codes[code];
                Expected {
                    code: code.clone(),
                    link: entry.link.unwrap_or_default(),
                    acked_version: entry.acked_version,
                    attempted_version: entry.attempted_version,
                    end: entry.ended.map(|(end, _)| end),
                    answered: entry.answered,
                    uncertain: entry.uncertain,
                }
            })
            .collect()
    }

    /// The end state disagreed with what was acknowledged.
    pub fn lost(&mut self, text: String) {
        self.violation(text);
    }
}

/// What one acknowledged code must look like once the system has settled.
#[derive(Debug, Clone)]
pub struct Expected {
    pub code: String,
    pub link: u64,
    pub acked_version: u64,
    pub attempted_version: u64,
    pub end: Option<End>,
    pub answered: u64,
    pub uncertain: u64,
}

impl Expected {
    /// Whether a settled answer is right for this code.
    #[must_use]
    pub fn settled(&self, answer: &Answer) -> bool {
        match (self.end, answer) {
            (None, Answer::Redirect { link, version }) => {
                *link == self.link
                    && (self.acked_version..=self.attempted_version).contains(version)
            }
            (Some(End::Disabled), Answer::Status(410))
            | (Some(End::Deleted), Answer::Status(404)) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn redirect(link: u64, version: u64) -> Answer {
        Answer::Redirect { link, version }
    }

    #[test]
    fn targets_name_their_link_and_version() {
        assert_eq!(parse_target(&target(42, 7)), Some((42, 7)));
        assert_eq!(parse_target("https://elsewhere.example/42/v7"), None);
    }

    #[test]
    fn a_clean_history_has_no_violations() {
        let t = Instant::now();
        let mut c = Checker::new(Duration::from_millis(100));
        c.created("a", 1, at(t, 0));
        c.observe("a", at(t, 1), at(t, 2), &Answer::Status(404));
        c.observe("a", at(t, 5), at(t, 6), &redirect(1, 0));
        let v = c.next_version("a");
        c.observe("a", at(t, 7), at(t, 8), &redirect(1, 0));
        c.patched("a", v);
        c.observe("a", at(t, 9), at(t, 10), &redirect(1, 1));
        c.ended("a", End::Deleted, at(t, 20));
        c.observe("a", at(t, 21), at(t, 22), &redirect(1, 1));
        c.observe("a", at(t, 30), at(t, 31), &Answer::Status(404));
        c.observe("a", at(t, 200), at(t, 201), &Answer::Status(404));
        assert_eq!(c.violations(), &[] as &[String]);
        assert_eq!(c.tally.redirects, 4);
    }

    #[test]
    fn going_back_in_time_is_caught() {
        let t = Instant::now();
        let mut c = Checker::new(Duration::from_millis(100));
        c.created("a", 1, at(t, 0));
        let v = c.next_version("a");
        c.patched("a", v);
        c.observe("a", at(t, 1), at(t, 2), &redirect(1, 1));
        // Sent after the newer answer arrived: must not be older.
        c.observe("a", at(t, 3), at(t, 4), &redirect(1, 0));
        assert_eq!(c.violations().len(), 1, "{:?}", c.violations());
        // Sent before it arrived (concurrent): allowed.
        c.observe("a", at(t, 1), at(t, 5), &redirect(1, 0));
        assert_eq!(c.violations().len(), 1);
        // A redirect after a 404 that followed the delete.
        c.ended("a", End::Deleted, at(t, 10));
        c.observe("a", at(t, 11), at(t, 12), &Answer::Status(404));
        c.observe("a", at(t, 13), at(t, 14), &redirect(1, 1));
        assert_eq!(c.violations().len(), 2, "{:?}", c.violations());
    }

    #[test]
    fn two_links_under_one_code_and_invented_versions_are_caught() {
        let t = Instant::now();
        let mut c = Checker::new(Duration::from_millis(100));
        c.created("a", 1, at(t, 0));
        c.created("a", 2, at(t, 1));
        c.observe("a", at(t, 2), at(t, 3), &redirect(3, 0));
        c.observe("a", at(t, 2), at(t, 3), &redirect(1, 9));
        c.observe(
            "a",
            at(t, 2),
            at(t, 3),
            &Answer::Foreign("https://x/".into()),
        );
        c.observe("a", at(t, 2), at(t, 3), &Answer::Status(502));
        assert_eq!(c.violations().len(), 5, "{:?}", c.violations());
    }

    #[test]
    fn a_late_redirect_of_an_ended_link_is_caught_unless_a_fault_covers_it() {
        let t = Instant::now();
        let mut c = Checker::new(Duration::from_millis(100));
        c.created("a", 1, at(t, 0));
        c.created("b", 2, at(t, 0));
        c.ended("a", End::Disabled, at(t, 10));
        c.ended("b", End::Deleted, at(t, 10));
        // Control was down from 50 to 500 ms: the bound starts again after.
        c.fault_started(at(t, 50));
        c.observe("a", at(t, 300), at(t, 301), &redirect(1, 0));
        c.fault_ended(at(t, 500));
        c.observe("a", at(t, 550), at(t, 551), &redirect(1, 0));
        assert_eq!(c.violations(), &[] as &[String]);
        c.observe("a", at(t, 601), at(t, 602), &redirect(1, 0));
        assert_eq!(c.violations().len(), 1, "{:?}", c.violations());
        // An acknowledged create still unknown past the bound.
        c.created("c", 3, at(t, 700));
        c.observe("c", at(t, 750), at(t, 751), &Answer::Status(404));
        c.observe("c", at(t, 801), at(t, 802), &Answer::Status(404));
        assert_eq!(c.violations().len(), 2, "{:?}", c.violations());
    }

    #[test]
    fn an_end_in_flight_may_show_before_it_is_acknowledged() {
        let t = Instant::now();
        let mut c = Checker::new(Duration::from_millis(100));
        c.created("a", 1, at(t, 0));
        c.ending("a", End::Disabled);
        // Control committed the disable, then died before answering.
        c.observe("a", at(t, 500), at(t, 501), &Answer::Status(410));
        assert_eq!(c.violations(), &[] as &[String]);
        // Not a delete, though.
        c.observe("a", at(t, 502), at(t, 503), &Answer::Status(404));
        assert_eq!(c.violations().len(), 1, "{:?}", c.violations());
    }

    #[test]
    fn settled_answers_must_match_what_was_acknowledged() {
        let e = Expected {
            code: "a".into(),
            link: 1,
            acked_version: 2,
            attempted_version: 3,
            end: None,
            answered: 0,
            uncertain: 0,
        };
        assert!(e.settled(&redirect(1, 2)));
        assert!(
            e.settled(&redirect(1, 3)),
            "an unacknowledged write may land"
        );
        assert!(!e.settled(&redirect(1, 1)), "an acknowledged write lost");
        assert!(!e.settled(&Answer::Status(404)));
        let gone = Expected {
            end: Some(End::Deleted),
            ..e
        };
        assert!(gone.settled(&Answer::Status(404)));
        assert!(!gone.settled(&redirect(1, 3)));
    }
}
