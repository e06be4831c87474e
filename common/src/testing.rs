//! Helpers for the integration tests of both binaries (feature `testing`):
//! the store the control planes they start keep their data in. With
//! `SHORTLINE_TEST_FDB_CLUSTER_FILE` naming a FoundationDB cluster, every one
//! uses that cluster under a prefix of its own; otherwise the embedded store.
//! And [`eventually`]: every wait for a condition, with a generous deadline.

use std::path::Path;
use std::time::{Duration, Instant};

/// The cluster file of the FoundationDB cluster the tests run against,
/// when `SHORTLINE_TEST_FDB_CLUSTER_FILE` names one (and the binaries are
/// built with the `fdb` feature); otherwise the embedded store is used.
pub fn fdb_cluster() -> Option<String> {
    std::env::var("SHORTLINE_TEST_FDB_CLUSTER_FILE")
        .ok()
        .filter(|f| !f.is_empty())
}

/// The settings that put a control plane's data in the test cluster,
/// under a prefix of its own derived from its data directory, so a
/// restart in the same directory finds its data again.
pub fn fdb_env(dir: &Path) -> Vec<(&'static str, String)> {
    use std::hash::{Hash, Hasher};
    let Some(cluster) = fdb_cluster() else {
        return Vec::new();
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    vec![
        ("SHORTLINE_STORE_BACKEND", "fdb".to_owned()),
        ("SHORTLINE_FDB_CLUSTER_FILE", cluster),
        (
            "SHORTLINE_FDB_PREFIX",
            format!("test-{}-{:016x}", std::process::id(), hasher.finish()),
        ),
    ]
}

/// True, after saying so, when a test is about the embedded store itself
/// and the suite runs against FoundationDB.
pub fn embedded_only(test: &str) -> bool {
    if fdb_cluster().is_some() {
        eprintln!("skipped on FoundationDB: {test} is about the embedded store");
        return true;
    }
    false
}

/// The shortest wait for any condition: a busy two-core machine can be many
/// times slower than a developer's, and a test must not fail for that.
const EVENTUALLY_SECONDS_MIN: u64 = 60;

/// Polls `check` until it holds or `seconds` (at least a minute) pass.
pub fn eventually(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds.max(EVENTUALLY_SECONDS_MIN));
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {:.1} s waiting for {what}",
            started.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `value` until it equals `expected`; a timeout prints the last value seen.
pub fn eventually_eq<T: PartialEq + std::fmt::Debug>(
    seconds: u64,
    what: &str,
    mut value: impl FnMut() -> T,
    expected: T,
) {
    let mut last = None;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds.max(EVENTUALLY_SECONDS_MIN));
    loop {
        let seen = value();
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {:.1} s waiting for {what}: expected {expected:?}, last saw {seen:?} (before that {last:?})",
            started.elapsed().as_secs_f64()
        );
        last = Some(seen);
        std::thread::sleep(Duration::from_millis(20));
    }
}
