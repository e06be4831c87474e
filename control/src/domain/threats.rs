//! The offline threat list: SHA-256 hash prefixes of canonicalised URL
//! expressions, as in the Safe Browsing update API, read from a file that
//! an operator's feed job keeps current. Nothing is fetched.
//!
//! File format: one hex prefix per line (4 to 32 bytes, so 8 to 64 hex
//! digits), blank lines and `#` comments ignored. A full 32-byte hash
//! matches exactly; a shorter prefix matches every expression whose hash
//! starts with it (4-byte prefixes trade a small false-positive rate for
//! size, as in the update API, which would confirm over the network; here a
//! prefix match refuses).

pub mod canonical;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::db::{ReadTxn, Space, StoreError, StoreResult, Txn, keys};

/// How far the re-check of every stored link against one threat list got,
/// stored with each page so a restart resumes it, and skips it when the list
/// it finished against is still the one in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recheck {
    /// [`ThreatList::digest`] of the list checked against.
    pub digest: u64,
    /// The last code checked; `None` at the start.
    pub after: Option<String>,
    pub done: bool,
    pub flagged: u64,
    pub unflagged: u64,
}

impl Recheck {
    /// A re-check against `list`, from the first link.
    #[must_use]
    pub fn start(list: &ThreatList) -> Self {
        Self {
            digest: list.digest(),
            after: None,
            done: false,
            flagged: 0,
            unflagged: 0,
        }
    }

    /// The stored re-check, if any.
    pub fn stored(txn: &dyn ReadTxn) -> StoreResult<Option<Self>> {
        txn.get(Space::Meta, keys::THREAT_RECHECK)?
            .map(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("threat re-check: {e}")))
            })
            .transpose()
    }

    pub fn store(&self, txn: &mut dyn Txn) -> StoreResult<()> {
        let bytes = serde_json::to_vec(self).expect("a re-check always serialises");
        txn.set(Space::Meta, keys::THREAT_RECHECK, &bytes)
    }
}

/// The flag reason of links the threat list matches.
pub const FLAG_REASON: crate::model::FlagReason = crate::model::FlagReason::ThreatList;

/// Loaded prefixes, grouped by length.
#[derive(Debug, Default)]
pub struct ThreatList {
    by_length: HashMap<usize, HashSet<Vec<u8>>>,
    count: usize,
    digest: u64,
}

impl ThreatList {
    /// Parses the file format. An error names the line.
    pub fn parse(text: &str) -> Result<Self> {
        let mut list = Self::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bytes = decode_hex(line).with_context(|| {
                format!("line {}: {line:?} is not a hex hash prefix", number + 1)
            })?;
            if !(4..=32).contains(&bytes.len()) {
                bail!(
                    "line {}: a prefix is 4 to 32 bytes (8 to 64 hex digits), this one is {}",
                    number + 1,
                    bytes.len()
                );
            }
            let digest = xxhash_rust::xxh3::xxh3_64(&bytes);
            if list.by_length.entry(bytes.len()).or_default().insert(bytes) {
                list.count += 1;
                list.digest = list.digest.wrapping_add(digest);
            }
        }
        Ok(list)
    }

    /// Prefixes loaded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// A digest of the set of prefixes (not of the file: order, comments
    /// and duplicates do not change it), so a re-check over every link can
    /// tell the list it checked against from a new one.
    #[must_use]
    pub fn digest(&self) -> u64 {
        self.digest
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first expression of `url` whose hash the list holds, if any.
    #[must_use]
    pub fn matching(&self, url: &str) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        canonical::expressions(url).into_iter().find(|expression| {
            let hash = Sha256::digest(expression.as_bytes());
            self.by_length
                .iter()
                .any(|(length, set)| set.contains(&hash[..*length]))
        })
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

/// The full SHA-256, in hex, of each lookup expression of `url`: what a feed
/// job writes to list a URL.
#[must_use]
pub fn expression_hashes(url: &str) -> Vec<(String, String)> {
    canonical::expressions(url)
        .into_iter()
        .map(|e| {
            let hash = Sha256::digest(e.as_bytes());
            (e, hex::encode(hash))
        })
        .collect()
}

/// The list in force and the file it came from.
#[derive(Debug)]
pub struct Threats {
    list: RwLock<Arc<ThreatList>>,
    path: Option<PathBuf>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

/// Shared handle.
pub type Shared = Arc<Threats>;

fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len()))
}

fn read(path: &Path) -> Result<ThreatList> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read threat list {}", path.display()))?;
    ThreatList::parse(&text).with_context(|| format!("threat list {}", path.display()))
}

/// Loads the configured list; a missing or malformed file stops start-up.
pub fn load_configured(config: &Config) -> Result<Shared> {
    let Some(path) = &config.threat_list else {
        return Ok(Arc::new(Threats {
            list: RwLock::new(Arc::new(ThreatList::default())),
            path: None,
            stamp: Mutex::new(None),
        }));
    };
    let before = stamp(path)
        .with_context(|| format!("bad configuration: threat_list {}", path.display()))?;
    let list = read(path).context("bad configuration: threat_list")?;
    metrics::gauge!("control_threat_list_prefixes").set(list.len() as f64);
    tracing::info!(path = %path.display(), prefixes = list.len(), "threat list loaded");
    Ok(Arc::new(Threats {
        list: RwLock::new(Arc::new(list)),
        path: Some(path.clone()),
        stamp: Mutex::new(Some(before)),
    }))
}

impl Threats {
    /// The list in force.
    #[must_use]
    pub fn current(&self) -> Arc<ThreatList> {
        Arc::clone(&self.list.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether a file is configured.
    #[must_use]
    pub fn configured(&self) -> bool {
        self.path.is_some()
    }

    /// Reloads the file if it changed. Returns whether a new list is in
    /// force; a file that fails to parse leaves the old list in force.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let now = match stamp(path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "threat list unreadable; keeping the loaded one");
                return false;
            }
        };
        let mut seen = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == Some(now) {
            return false;
        }
        *seen = Some(now);
        match read(path) {
            Ok(list) => {
                tracing::info!(path = %path.display(), prefixes = list.len(), "threat list reloaded");
                metrics::gauge!("control_threat_list_prefixes").set(list.len() as f64);
                metrics::counter!("control_threat_list_reloads_total", "outcome" => "loaded")
                    .increment(1);
                *self.list.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(list);
                true
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "threat list rejected; keeping the loaded one"
                );
                metrics::counter!("control_threat_list_reloads_total", "outcome" => "rejected")
                    .increment(1);
                false
            }
        }
    }
}

/// How long the watcher waits between looks at the file.
#[must_use]
pub fn poll_interval(config: &Config) -> Duration {
    Duration::from_millis(config.threat_list_poll_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_hex(expression: &str, bytes: usize) -> String {
        hex::encode(&Sha256::digest(expression.as_bytes())[..bytes])
    }

    #[test]
    fn full_hashes_and_prefixes_match_every_form_of_a_url() {
        let text = format!(
            "# feed of 2026-11-28\n{}\n\n{}  # a whole host\n",
            hash_hex("bad.example/login/", 32),
            hash_hex("malware.example/", 4)
        );
        let list = ThreatList::parse(&text).unwrap();
        assert_eq!(list.len(), 2);
        for url in [
            "https://bad.example/login/",
            "https://BAD.example/login/page.html?x=1",
            "http://www.bad.example/%6cogin/./",
            "https://malware.example/",
            "https://a.b.malware.example/any/path?q",
        ] {
            assert!(list.matching(url).is_some(), "{url}");
        }
        for url in [
            "https://bad.example/",
            "https://bad.example/logout/",
            "https://good.example/login/",
        ] {
            assert!(list.matching(url).is_none(), "{url}");
        }
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line) in [
            ("abcdef01\nzz11aa22\n", "line 2"),
            (
                "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00\n",
                "line 1",
            ),
            ("abc\n", "line 1"),
        ] {
            let error = format!("{:#}", ThreatList::parse(text).unwrap_err());
            assert!(error.contains(line), "{error}");
        }
    }
}
