//! The domain blocklist kept in the store. An entry covers a domain and all
//! its subdomains. Creates and updates to a covered host are refused inside
//! their transaction (so a create racing an entry either commits before it,
//! and is flagged by the entry's sweep, or is refused); adding an entry flags
//! the existing links it covers, removing one lifts the flags it set.

use serde::{Deserialize, Serialize};

use crate::db::{ReadTxn, Space, StoreError, StoreResult, Txn};
use crate::domain::Error;
use crate::domain::links;
use crate::model::FlagReason;

/// Links flagged or unflagged per transaction by an entry's sweep.
pub const SWEEP_PAGE: usize = 500;

/// A blocklist entry as stored and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlockEntry {
    /// Lowercase ASCII (punycode) domain.
    pub domain: String,
    pub reason: Option<String>,
    /// RFC 3339, UTC, to the second; kept when the entry is replaced.
    pub created_at: String,
    /// The name of the key that added it.
    pub created_by: String,
    /// The id of that key (absent on entries from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_key_id: Option<String>,
}

impl BlockEntry {
    fn decode(bytes: &[u8]) -> StoreResult<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("blocklist entry: {e}")))
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an entry always serialises")
    }
}

/// The reason a link flagged by the entry for `domain` carries.
#[must_use]
pub fn flag_reason(domain: &str) -> FlagReason {
    FlagReason::Blocklist(domain.to_owned())
}

/// Normalises a domain given to the API: lowercase punycode, no trailing
/// dot, at least one dot-separated label that is not empty, no scheme, path
/// or port.
pub fn normalise(domain: &str) -> Result<String, Error> {
    let refuse = |reason: &str| Err(Error::invalid("domain", reason));
    let trimmed = domain.trim().trim_end_matches('.');
    if trimmed.is_empty() || trimmed.len() > 253 {
        return refuse("a domain is 1 to 253 characters");
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "/:@?#[]\\%".contains(c))
    {
        return refuse("give a bare domain such as evil.example, without scheme, port or path");
    }
    let ascii = idna::domain_to_ascii(trimmed)
        .map_err(|_| Error::invalid("domain", "not a valid domain name"))?;
    if ascii.is_empty() || ascii.split('.').any(str::is_empty) {
        return refuse("not a valid domain name");
    }
    Ok(ascii)
}

/// Adds an entry, or replaces the reason of an existing one (which keeps
/// when and by whom it was first added). Returns the entry as stored and
/// whether it is new.
pub fn put(txn: &mut dyn Txn, entry: &BlockEntry) -> StoreResult<(BlockEntry, bool)> {
    let existing = txn
        .get(Space::Blocklist, entry.domain.as_bytes())?
        .map(|bytes| BlockEntry::decode(&bytes))
        .transpose()?;
    let stored = match &existing {
        Some(old) => BlockEntry {
            reason: entry.reason.clone(),
            ..old.clone()
        },
        None => entry.clone(),
    };
    txn.set(Space::Blocklist, stored.domain.as_bytes(), &stored.encode())?;
    Ok((stored, existing.is_none()))
}

/// Removes an entry. Returns whether it existed.
pub fn remove(txn: &mut dyn Txn, domain: &str) -> StoreResult<bool> {
    let existed = txn.get(Space::Blocklist, domain.as_bytes())?.is_some();
    txn.clear(Space::Blocklist, domain.as_bytes())?;
    Ok(existed)
}

/// One entry.
pub fn get(txn: &dyn ReadTxn, domain: &str) -> StoreResult<Option<BlockEntry>> {
    txn.get(Space::Blocklist, domain.as_bytes())?
        .map(|b| BlockEntry::decode(&b))
        .transpose()
}

/// Entries in domain order after `after`, up to `limit`.
pub fn list(txn: &dyn ReadTxn, after: Option<&str>, limit: usize) -> StoreResult<Vec<BlockEntry>> {
    let start = after.map_or_else(Vec::new, |a| {
        let mut s = a.as_bytes().to_vec();
        s.push(0);
        s
    });
    txn.range(Space::Blocklist, &start, &[0xff], limit)?
        .iter()
        .map(|(_, v)| BlockEntry::decode(v))
        .collect()
}

/// What one sweep transaction did.
#[derive(Debug, Default)]
pub struct Swept {
    pub changed: u64,
    /// Where the next page starts; `None` when the sweep is done.
    pub next: Option<Vec<u8>>,
}

/// Flags one page of the active links under `domain`, while its entry still
/// exists (an entry removed mid-sweep stops the sweep).
pub fn flag_page(
    txn: &mut dyn Txn,
    domain: &str,
    after: Option<&[u8]>,
    now: i64,
) -> StoreResult<Swept> {
    if txn.get(Space::Blocklist, domain.as_bytes())?.is_none() {
        return Ok(Swept::default());
    }
    let (codes, next) = links::codes_under(txn, domain, after, SWEEP_PAGE)?;
    let reason = flag_reason(domain);
    let mut changed = 0;
    for code in codes {
        if links::flag(txn, &code, &reason, now)? {
            changed += 1;
        }
    }
    Ok(Swept { changed, next })
}

/// Lifts one page of the flags the entry for `domain` set. A link another
/// entry still covers is flagged for that entry instead.
pub fn unflag_page(
    txn: &mut dyn Txn,
    domain: &str,
    after: Option<&[u8]>,
    now: i64,
) -> StoreResult<Swept> {
    if txn.get(Space::Blocklist, domain.as_bytes())?.is_some() {
        return Ok(Swept::default());
    }
    let (codes, next) = links::codes_under(txn, domain, after, SWEEP_PAGE)?;
    let reason = flag_reason(domain);
    let mut changed = 0;
    for code in codes {
        if links::unflag(txn, &code, &reason, now)? {
            changed += 1;
            let host = links::get(&*txn, &code)?.and_then(|l| links::host_of(&l.url));
            if let Some(other) = host
                .map(|h| links::blocked_by(txn, &h))
                .transpose()?
                .flatten()
            {
                links::flag(txn, &code, &flag_reason(&other), now)?;
                changed -= 1;
            }
        }
    }
    Ok(Swept { changed, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_or_refused() {
        assert_eq!(normalise("Evil.Example.").unwrap(), "evil.example");
        assert_eq!(
            normalise("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        for bad in [
            "",
            "https://evil.example",
            "evil.example/x",
            "a..b",
            "evil.example:80",
            " ",
        ] {
            assert!(normalise(bad).is_err(), "{bad:?}");
        }
    }
}
