//! The data directory: every file name in it, in one place. Control and a
//! proxy on the same host share one directory.

use std::path::{Path, PathBuf};

/// The embedded store (redb).
pub const STORE_FILE: &str = "shortline.redb";
/// The secret of the code permutation (32 bytes, mode 0600).
pub const PERMUTATION_KEY_FILE: &str = "permutation.key";
/// The internal token's secret (32 bytes, mode 0600); the token is its hex.
pub const INTERNAL_TOKEN_FILE: &str = "internal.token";
/// Control's snapshot files.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// The proxy's own snapshot files (its persisted live view).
pub const PROXY_CACHE_DIR: &str = "proxy-cache";
/// Control's click log.
pub const CLICK_LOG_DIR: &str = "clicks-wal";
/// The embedded store's redo log: writes not yet checkpointed into the store file.
pub const STORE_LOG_DIR: &str = "store-log";
/// An import's sort files while it bulk-loads the embedded store.
pub const IMPORT_SORT_DIR: &str = "import-sort";
/// The socket a proxy hands its listeners over in a graceful upgrade.
pub const UPGRADE_SOCKET_FILE: &str = "proxy-upgrade.sock";
/// The running proxy's pid.
pub const PROXY_PID_FILE: &str = "proxy.pid";

/// A data directory and the paths in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir(PathBuf);

impl DataDir {
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }

    #[must_use]
    pub fn store_file(&self) -> PathBuf {
        self.0.join(STORE_FILE)
    }

    #[must_use]
    pub fn store_log(&self) -> PathBuf {
        self.0.join(STORE_LOG_DIR)
    }

    /// An import's sort files while it bulk-loads the embedded store.
    #[must_use]
    pub fn import_sort(&self) -> PathBuf {
        self.0.join(IMPORT_SORT_DIR)
    }

    #[must_use]
    pub fn permutation_key(&self) -> PathBuf {
        self.0.join(PERMUTATION_KEY_FILE)
    }

    #[must_use]
    pub fn internal_token_file(&self) -> PathBuf {
        self.0.join(INTERNAL_TOKEN_FILE)
    }

    #[must_use]
    pub fn snapshots(&self) -> PathBuf {
        self.0.join(SNAPSHOTS_DIR)
    }

    #[must_use]
    pub fn proxy_cache(&self) -> PathBuf {
        self.0.join(PROXY_CACHE_DIR)
    }

    #[must_use]
    pub fn click_log(&self) -> PathBuf {
        self.0.join(CLICK_LOG_DIR)
    }

    #[must_use]
    pub fn upgrade_socket(&self) -> PathBuf {
        self.0.join(UPGRADE_SOCKET_FILE)
    }

    #[must_use]
    pub fn proxy_pid(&self) -> PathBuf {
        self.0.join(PROXY_PID_FILE)
    }

    /// The internal token as control writes it: the hex of the secret file.
    /// `None` when control has not written it yet.
    #[must_use]
    pub fn internal_token(&self) -> Option<String> {
        std::fs::read(self.internal_token_file())
            .ok()
            .map(hex::encode)
    }
}

/// The token that authenticates a secret's holder: its hex.
#[must_use]
pub fn token_of(secret: &[u8]) -> String {
    hex::encode(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internal_token_is_the_hex_of_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        assert_eq!(data.internal_token(), None);
        std::fs::write(data.internal_token_file(), [0u8, 1, 254, 255]).unwrap();
        assert_eq!(data.internal_token().as_deref(), Some("0001feff"));
        assert_eq!(token_of(&[0, 1, 254, 255]), "0001feff");
        assert!(data.store_file().ends_with("shortline.redb"));
        assert!(data.proxy_cache().starts_with(dir.path()));
    }
}
