//! Helpers for the integration tests of both binaries (feature `testing`):
//! the store the control planes they start keep their data in. With
//! `SHORTLINE_TEST_FDB_CLUSTER_FILE` naming a FoundationDB cluster, every one
//! uses that cluster under a prefix of its own; otherwise the embedded store.

use std::path::Path;

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
