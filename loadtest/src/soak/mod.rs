//! A soak with an invariant checker (`shortline-soak`): a mixed workload
//! against a real control plane and proxy while a chaos loop SIGKILLs and
//! restarts control, restarts the proxy and upgrades it gracefully at random
//! intervals. [`checker::Checker`] records every acknowledged operation and
//! every answer and reports each broken promise.
//!
//! * Writers create links with every strategy and with aliases, one by one
//!   and in batches, change targets, disable, delete and report them.
//! * Readers ask the proxy for acknowledged codes over keep-alive
//!   connections, as a browser would.
//! * At the end the system settles: every acknowledged link must be at
//!   control and answered by the proxy as it was last acknowledged, and the
//!   clicks counted must lie between the redirects answered minus what the
//!   proxies reported dropping and the redirects answered plus the requests
//!   whose answers were lost.

pub mod checker;
pub mod cluster;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use checker::{Answer, Checker, End, target};
use cluster::{Cluster, TOKEN};

/// What a soak is asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bin_dir: PathBuf,
    pub duration: Duration,
    pub writers: usize,
    pub readers: usize,
    /// Longest an acknowledged change may take to reach the proxy, faults
    /// aside.
    pub visibility_bound: Duration,
    /// Faults come at random intervals between these.
    pub chaos_min: Duration,
    pub chaos_max: Duration,
    pub seed: u64,
}

/// What a soak did and found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub tally: checker::Tally,
    pub control_kills: u64,
    pub proxy_restarts: u64,
    pub proxy_upgrades: u64,
    pub links: usize,
    pub clicks_answered: u64,
    pub clicks_counted: u64,
    pub clicks_uncertain: u64,
    pub clicks_dropped: u64,
    pub violations: Vec<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.tally;
        writeln!(
            f,
            "operations: {} creates, {} batch creates, {} target changes, {} disables, {} deletes, {} reports, {} writes not acknowledged",
            t.creates,
            t.batch_creates,
            t.patches,
            t.disables,
            t.deletes,
            t.reports,
            t.writes_failed
        )?;
        writeln!(
            f,
            "answers: {} redirects, {} not found, {} gone, {} requests without an answer",
            t.redirects, t.not_found, t.gone, t.requests_failed
        )?;
        writeln!(
            f,
            "faults: {} control kills, {} proxy restarts, {} proxy upgrades",
            self.control_kills, self.proxy_restarts, self.proxy_upgrades
        )?;
        writeln!(
            f,
            "clicks: {} counted of {} answered ({} uncertain, {} dropped by proxies) over {} links",
            self.clicks_counted,
            self.clicks_answered,
            self.clicks_uncertain,
            self.clicks_dropped,
            self.links
        )?;
        write!(f, "violations: {}", self.violations.len())?;
        for violation in self.violations.iter().take(20) {
            write!(f, "\n  {violation}")?;
        }
        Ok(())
    }
}

struct Run {
    checker: Mutex<Checker>,
    stop: AtomicBool,
    next_link: AtomicU64,
    control: String,
    proxy: String,
}

impl Run {
    fn checker(&self) -> MutexGuard<'_, Checker> {
        self.checker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

fn agent(keep_alive: bool) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)));
    if !keep_alive {
        config = config.max_idle_connections_per_host(0);
    }
    config.build().into()
}

/// Sends a write to control: the status and body, or `None` when no answer
/// came back (the write may or may not have happened).
fn send(agent: &ureq::Agent, method: &str, url: &str, body: Option<Value>) -> Option<(u16, Value)> {
    let auth = format!("Bearer {TOKEN}");
    let response = match (method, body) {
        ("POST", Some(body)) => agent
            .post(url)
            .header("Authorization", &auth)
            .send_json(body),
        ("PATCH", Some(body)) => agent
            .patch(url)
            .header("Authorization", &auth)
            .send_json(body),
        ("DELETE", _) => agent.delete(url).header("Authorization", &auth).call(),
        (_, _) => agent.get(url).header("Authorization", &auth).call(),
    };
    let mut response = response.ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_json().unwrap_or(Value::Null);
    Some((status, body))
}

const STRATEGIES: [&str; 4] = ["counter", "random", "hash", "uuid"];

fn writer(run: &Run, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let agent = agent(false);
    let links = format!("{}/api/v1/links", run.control);
    while !run.stopped() {
        match rng.random_range(0..100) {
            0..30 => {
                let link = run.next_link.fetch_add(1, Ordering::Relaxed);
                let mut body = json!({ "url": target(link, 0) });
                match rng.random_range(0..5) {
                    4 => body["alias"] = json!(format!("soak-{link}")),
                    i => body["strategy"] = json!(STRATEGIES[i]),
                }
                let answer = send(&agent, "POST", &links, Some(body));
                let mut checker = run.checker();
                match answer {
                    Some((201, link_out)) => {
                        let code = link_out["code"].as_str().unwrap_or_default();
                        checker.created(code, link, Instant::now());
                        checker.tally.creates += 1;
                    }
                    _ => checker.tally.writes_failed += 1,
                }
            }
            30..34 => {
                let first = run.next_link.fetch_add(5, Ordering::Relaxed);
                let items: Vec<Value> = (first..first + 5)
                    .map(|link| json!({ "url": target(link, 0) }))
                    .collect();
                let answer = send(
                    &agent,
                    "POST",
                    &format!("{links}/batch"),
                    Some(json!({ "links": items })),
                );
                let now = Instant::now();
                let mut checker = run.checker();
                match answer {
                    Some((200, out)) => {
                        for (i, result) in
                            out["results"].as_array().into_iter().flatten().enumerate()
                        {
                            if result["status"] == 201
                                && let Some(code) = result["link"]["code"].as_str()
                            {
                                checker.created(code, first + i as u64, now);
                                checker.tally.batch_creates += 1;
                            } else {
                                checker.tally.writes_failed += 1;
                            }
                        }
                    }
                    _ => checker.tally.writes_failed += 1,
                }
            }
            34..74 => change(run, &agent, &mut rng, Change::Target),
            74..80 => change(run, &agent, &mut rng, Change::Disable),
            80..86 => change(run, &agent, &mut rng, Change::Delete),
            _ => {
                let code = run.checker().any_code(rng.random::<u32>() as usize);
                if let Some(code) = code {
                    let answer = send(
                        &agent,
                        "POST",
                        &format!("{links}/{code}/report"),
                        Some(json!({ "category": "spam", "comment": "soak" })),
                    );
                    let mut checker = run.checker();
                    match answer {
                        // A deleted link is 404 to a reporter too.
                        Some((202 | 404, _)) => checker.tally.reports += 1,
                        _ => checker.tally.writes_failed += 1,
                    }
                }
            }
        }
        // A steady pace: writes are a small part of a shortener's traffic.
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Target,
    Disable,
    Delete,
}

/// One write to a live link. A target change that is not acknowledged may
/// still have happened: the next uses a newer version, which the checker
/// allows for. A disable or delete is retried until acknowledged, so the
/// checker always knows how a link ended.
fn change(run: &Run, agent: &ureq::Agent, rng: &mut SmallRng, change: Change) {
    let Some((code, link)) = run.checker().take_live(rng.random::<u32>() as usize) else {
        return;
    };
    let url = format!("{}/api/v1/links/{code}", run.control);
    match change {
        Change::Target => {
            let version = run.checker().next_version(&code);
            let body = json!({ "url": target(link, version) });
            let answer = send(agent, "PATCH", &url, Some(body));
            let mut checker = run.checker();
            if matches!(answer, Some((200, _))) {
                checker.patched(&code, version);
                checker.tally.patches += 1;
            } else {
                checker.tally.writes_failed += 1;
            }
        }
        Change::Disable | Change::Delete => {
            let end = match change {
                Change::Disable => End::Disabled,
                _ => End::Deleted,
            };
            run.checker().ending(&code, end);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let answer = match change {
                    Change::Disable => {
                        send(agent, "PATCH", &url, Some(json!({ "status": "disabled" })))
                    }
                    _ => send(agent, "DELETE", &url, None),
                };
                let acknowledged = match (change, &answer) {
                    (Change::Disable, Some((200, _))) => Some(End::Disabled),
                    // 404: an earlier attempt did it, unacknowledged.
                    (Change::Delete, Some((204 | 404, _))) => Some(End::Deleted),
                    _ => None,
                };
                let mut checker = run.checker();
                if let Some(end) = acknowledged {
                    checker.ended(&code, end, Instant::now());
                    match end {
                        End::Disabled => checker.tally.disables += 1,
                        End::Deleted => checker.tally.deletes += 1,
                    }
                    break;
                }
                checker.tally.writes_failed += 1;
                if Instant::now() > deadline {
                    checker.lost(format!(
                        "{code}: a {change:?} was never acknowledged in 120 s"
                    ));
                    break;
                }
                drop(checker);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    run.checker().release(&code);
}

/// Asks the proxy for `code` as a browser would.
fn ask(agent: &ureq::Agent, proxy: &str, code: &str) -> Answer {
    let response = agent
        .get(format!("{proxy}/{code}"))
        .header(
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        )
        .call();
    let Ok(mut response) = response else {
        return Answer::Failed;
    };
    let status = response.status().as_u16();
    // Read the body so the connection can be used again.
    let _ = response.body_mut().read_to_vec();
    match response.headers().get("location") {
        Some(location) if (300..400).contains(&status) => {
            let location = location.to_str().unwrap_or_default();
            match checker::parse_target(location) {
                Some((link, version)) => Answer::Redirect { link, version },
                None => Answer::Foreign(location.to_owned()),
            }
        }
        _ => Answer::Status(status),
    }
}

fn reader(run: &Run, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let agent = agent(true);
    while !run.stopped() {
        let Some(code) = run.checker().any_code(rng.random::<u32>() as usize) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let sent = Instant::now();
        let answer = ask(&agent, &run.proxy, &code);
        let received = Instant::now();
        run.checker().observe(&code, sent, received, &answer);
    }
}

#[derive(Debug, Default)]
struct Faults {
    control_kills: u64,
    proxy_restarts: u64,
    proxy_upgrades: u64,
    dropped: u64,
}

fn chaos(run: &Run, cluster: &mut Cluster, settings: &Settings) -> Result<Faults> {
    let mut rng = SmallRng::seed_from_u64(settings.seed ^ 0x5eed);
    let mut faults = Faults::default();
    let span = settings
        .chaos_max
        .saturating_sub(settings.chaos_min)
        .as_millis() as u64;
    loop {
        let wait = settings.chaos_min + Duration::from_millis(rng.random_range(0..=span));
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if run.stopped() {
                return Ok(faults);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        run.checker().fault_started(Instant::now());
        match rng.random_range(0..3) {
            0 => {
                cluster.kill_control()?;
                faults.control_kills += 1;
            }
            1 => {
                faults.dropped += cluster.restart_proxy()?;
                faults.proxy_restarts += 1;
            }
            _ => {
                faults.dropped += cluster.upgrade_proxy()?;
                faults.proxy_upgrades += 1;
            }
        }
        run.checker().fault_ended(Instant::now());
    }
}

/// Runs a soak and returns what it found.
pub fn soak(settings: &Settings) -> Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let mut cluster = Cluster::start(&settings.bin_dir, dir.path())?;
    let run = Run {
        checker: Mutex::new(Checker::new(settings.visibility_bound)),
        stop: AtomicBool::new(false),
        next_link: AtomicU64::new(1),
        control: format!("http://127.0.0.1:{}", cluster.hosts.control_port),
        proxy: format!("http://127.0.0.1:{}", cluster.hosts.proxy_port),
    };
    let faults = std::thread::scope(|scope| -> Result<Faults> {
        for i in 0..settings.writers {
            let run = &run;
            scope.spawn(move || writer(run, settings.seed.wrapping_add(i as u64)));
        }
        for i in 0..settings.readers {
            let run = &run;
            scope.spawn(move || reader(run, settings.seed.wrapping_add(1000 + i as u64)));
        }
        let chaos = scope.spawn(|| chaos(&run, &mut cluster, settings));
        let started = Instant::now();
        while started.elapsed() < settings.duration && !chaos.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
        }
        run.stop.store(true, Ordering::Relaxed);
        chaos.join().expect("the chaos loop panicked")
    });
    let faults = match faults {
        Ok(faults) => faults,
        Err(e) => {
            run.checker()
                .lost(format!("a fault could not be recovered from: {e:#}"));
            Faults::default()
        }
    };
    let mut checker = run
        .checker
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut outcome = Outcome {
        control_kills: faults.control_kills,
        proxy_restarts: faults.proxy_restarts,
        proxy_upgrades: faults.proxy_upgrades,
        ..Outcome::default()
    };
    settle(
        &cluster,
        &run.control,
        &run.proxy,
        &mut checker,
        &mut outcome,
        faults.dropped,
    );
    outcome.tally = checker.tally.clone();
    outcome.violations = checker.violations().to_vec();
    Ok(outcome)
}

/// Once the faults have stopped: every acknowledged link is at control as
/// last acknowledged and answered so by the proxy, and the clicks add up.
fn settle(
    cluster: &Cluster,
    control: &str,
    proxy: &str,
    checker: &mut Checker,
    outcome: &mut Outcome,
    dropped_at_stops: u64,
) {
    let expectations = checker.expectations();
    outcome.links = expectations.len();
    let agent = agent(true);
    let deadline = Instant::now() + Duration::from_secs(120);
    for expected in &expectations {
        // The proxy: as acknowledged, once it has caught up.
        loop {
            let sent = Instant::now();
            let answer = ask(&agent, proxy, &expected.code);
            // These answers are checked (and their clicks count) like any.
            checker.observe(&expected.code, sent, Instant::now(), &answer);
            if expected.settled(&answer) {
                break;
            }
            if Instant::now() > deadline {
                checker.lost(format!(
                    "{}: after settling the proxy answers {answer:?}, expected {expected:?}",
                    expected.code
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Control: the link exists unless deleted, with its target.
        let at_control = send(
            &agent,
            "GET",
            &format!("{control}/api/v1/links/{}", expected.code),
            None,
        );
        let stored = at_control.as_ref().and_then(|(status, link)| {
            (*status == 200)
                .then(|| checker::parse_target(link["url"].as_str().unwrap_or_default()))?
        });
        let right = match expected.end {
            Some(End::Deleted) => at_control
                .as_ref()
                .is_some_and(|(status, _)| *status == 404),
            _ => stored.is_some_and(|(link, version)| {
                link == expected.link
                    && (expected.acked_version..=expected.attempted_version).contains(&version)
            }),
        };
        if !right {
            checker.lost(format!(
                "{}: control holds {at_control:?}, expected {expected:?}",
                expected.code
            ));
        }
    }
    // Clicks: wait until nothing is queued, then compare link by link.
    let clicks_deadline = Instant::now() + Duration::from_secs(120);
    while cluster.clicks_in_flight().is_none_or(|n| n > 0.0) && Instant::now() < clicks_deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    outcome.clicks_dropped =
        dropped_at_stops + cluster.shutdown_drops() + cluster.current_ring_drops();
    // Again: the answers while settling count too.
    let expectations = checker.expectations();
    let live: Vec<_> = expectations
        .iter()
        .filter(|e| e.end != Some(End::Deleted))
        .collect();
    outcome.clicks_answered = live.iter().map(|e| e.answered).sum();
    outcome.clicks_uncertain = live.iter().map(|e| e.uncertain).sum();
    loop {
        let mut counted = 0;
        let mut over = Vec::new();
        for expected in &live {
            let clicks = send(
                &agent,
                "GET",
                &format!("{control}/api/v1/links/{}", expected.code),
                None,
            )
            .and_then(|(_, link)| link["clicks"].as_u64())
            .unwrap_or(0);
            counted += clicks;
            if clicks > expected.answered + expected.uncertain {
                over.push(format!(
                    "{}: {clicks} clicks counted, {} answered and {} uncertain",
                    expected.code, expected.answered, expected.uncertain
                ));
            }
        }
        outcome.clicks_counted = counted;
        let floor = outcome
            .clicks_answered
            .saturating_sub(outcome.clicks_dropped);
        if counted >= floor || Instant::now() > clicks_deadline {
            for text in over {
                checker.lost(text);
            }
            if counted < floor {
                checker.lost(format!(
                    "{counted} clicks counted, fewer than {} answered less {} dropped",
                    outcome.clicks_answered, outcome.clicks_dropped
                ));
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
