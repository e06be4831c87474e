//! The domain blocklist kept in the store. An entry covers a domain and all
//! its subdomains. Creates and updates to a covered host are refused inside
//! their transaction (so a create racing an entry either commits before it,
//! and is flagged by the entry's sweep, or is refused); adding an entry flags
//! the existing links it covers, removing one lifts the flags it set.
//!
//! That sweep is stored: adding or removing an entry records a [`Sweep`] in
//! the same transaction, and each page of the sweep advances it in the
//! transaction that changes the page's links. A sweep cut short by a crash
//! resumes where it stopped ([`pending_sweeps`]), and its progress can be
//! read while it runs.

use serde::{Deserialize, Serialize};

use crate::db::{ReadTxn, Space, StoreError, StoreResult, Txn, keys, prefix_end};
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

/// The stored state of an entry's sweep over the links it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    /// Flagging (the entry was added) or lifting flags (it was removed).
    pub block: bool,
    /// The host index key the next page starts after; `None` at the start.
    pub after: Option<Vec<u8>>,
    /// Links flagged (or unflagged) so far.
    pub changed: u64,
    pub done: bool,
}

impl Sweep {
    fn start(block: bool) -> Self {
        Self {
            block,
            after: None,
            changed: 0,
            done: false,
        }
    }

    fn decode(bytes: &[u8]) -> StoreResult<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("blocklist sweep: {e}")))
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a sweep always serialises")
    }
}

/// The sweep of the entry for `domain`, if one was ever started.
pub fn sweep(txn: &dyn ReadTxn, domain: &str) -> StoreResult<Option<Sweep>> {
    txn.get(Space::Meta, &keys::sweep(domain))?
        .map(|b| Sweep::decode(&b))
        .transpose()
}

/// The domains whose sweeps have not finished (cut short by a crash, or
/// running), up to `limit`.
pub fn pending_sweeps(txn: &dyn ReadTxn, limit: usize) -> StoreResult<Vec<String>> {
    let mut pending = Vec::new();
    let mut start = keys::SWEEP_PREFIX.to_vec();
    let end = prefix_end(keys::SWEEP_PREFIX);
    loop {
        let page = txn.range(Space::Meta, &start, &end, 256)?;
        for (key, value) in &page {
            if !Sweep::decode(value)?.done {
                let domain = &key[keys::SWEEP_PREFIX.len()..];
                pending.push(String::from_utf8_lossy(domain).into_owned());
                if pending.len() == limit {
                    return Ok(pending);
                }
            }
        }
        match page.last() {
            Some((key, _)) if page.len() == 256 => {
                start.clone_from(key);
                start.push(0);
            }
            _ => return Ok(pending),
        }
    }
}

/// Sweeps one page for the entry for `domain` from where its stored sweep
/// stands, and stores how far it got. Returns the sweep as it now stands
/// and the links this page changed (`None` when none was started); a
/// finished one is returned unchanged.
pub fn sweep_page(txn: &mut dyn Txn, domain: &str, now: i64) -> StoreResult<Option<(Sweep, u64)>> {
    let Some(mut sweep) = sweep(&*txn, domain)? else {
        return Ok(None);
    };
    if sweep.done {
        return Ok(Some((sweep, 0)));
    }
    let swept = if sweep.block {
        flag_page(txn, domain, sweep.after.as_deref(), now)?
    } else {
        unflag_page(txn, domain, sweep.after.as_deref(), now)?
    };
    sweep.changed += swept.changed;
    sweep.done = swept.next.is_none();
    sweep.after = swept.next;
    txn.set(Space::Meta, &keys::sweep(domain), &sweep.encode())?;
    Ok(Some((sweep, swept.changed)))
}

/// Adds an entry, or replaces the reason of an existing one (which keeps
/// when and by whom it was first added), and starts its sweep (over again
/// when one was running: links it already flagged are skipped). Returns the
/// entry as stored and whether it is new.
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
    txn.set(
        Space::Meta,
        &keys::sweep(&stored.domain),
        &Sweep::start(true).encode(),
    )?;
    Ok((stored, existing.is_none()))
}

/// Removes an entry and starts the sweep that lifts its flags. Returns
/// whether it existed.
pub fn remove(txn: &mut dyn Txn, domain: &str) -> StoreResult<bool> {
    let existed = txn.get(Space::Blocklist, domain.as_bytes())?.is_some();
    if existed {
        txn.clear(Space::Blocklist, domain.as_bytes())?;
        txn.set(
            Space::Meta,
            &keys::sweep(domain),
            &Sweep::start(false).encode(),
        )?;
    }
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
fn flag_page(
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
fn unflag_page(
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
    use std::sync::Arc;

    use shortline_store::{Code, LinkId, LinkStatus, RedirectStatus, Target};

    use super::*;
    use crate::db::Backend;
    use crate::db::redb::RedbBackend;
    use crate::domain::codes::Permutation;
    use crate::domain::links::{CodePlan, NewLink};

    fn write<T>(backend: &dyn Backend, mut body: impl FnMut(&mut dyn Txn) -> StoreResult<T>) -> T {
        let mut out = None;
        backend
            .write(&mut |txn| {
                out = Some(body(txn)?);
                Ok(())
            })
            .unwrap();
        out.unwrap()
    }

    /// A sweep cut short after one page (the store closed and opened again,
    /// as after a crash) is listed as pending and resumes from its cursor:
    /// every covered link ends flagged, and the count is each link once.
    #[test]
    fn a_sweep_resumes_where_it_stopped_and_counts_each_link_once() {
        let dir = tempfile::tempdir().unwrap();
        let links = SWEEP_PAGE as u64 * 2 + 17;
        {
            let backend = Arc::new(RedbBackend::open(dir.path()).unwrap());
            let permutation = Permutation::new(&[7; 32]);
            for id in 1..=links + 1 {
                let host = if id > links {
                    "ok.example"
                } else {
                    "x.bad.example"
                };
                let new = NewLink {
                    id: LinkId(id),
                    code: CodePlan::Alias(Code::parse(&format!("l{id}")).unwrap()),
                    domain: None,
                    url: Target::parse(&format!("https://{host}/{id}")).unwrap(),
                    owner: "ann".into(),
                    now: 1_000,
                    expires_at: None,
                    max_clicks: None,
                    redirect: RedirectStatus::Found,
                    forward_query: false,
                    tags: Vec::new(),
                    title: None,
                    target_locked: false,
                    routing: None,
                };
                write(&*backend, |txn| links::create(txn, &new, &permutation)).unwrap();
            }
            let entry = BlockEntry {
                domain: "bad.example".into(),
                reason: None,
                created_at: "2026-01-01T00:00:00Z".into(),
                created_by: "admin".into(),
                created_by_key_id: None,
            };
            write(&*backend, |txn| put(txn, &entry));
            let (first, _) = write(&*backend, |txn| sweep_page(txn, "bad.example", 2_000)).unwrap();
            assert_eq!(first.changed, SWEEP_PAGE as u64);
            assert!(!first.done);
        }
        let backend: Box<dyn Backend> = Box::new(RedbBackend::open(dir.path()).unwrap());
        let pending = backend.read(|txn| pending_sweeps(txn, usize::MAX)).unwrap();
        assert_eq!(pending, vec!["bad.example".to_owned()]);
        let mut pages = 1;
        let last = loop {
            let (sweep, _) = write(&*backend, |txn| sweep_page(txn, "bad.example", 2_000)).unwrap();
            pages += 1;
            if sweep.done {
                break sweep;
            }
        };
        assert_eq!(last.changed, links, "each link counted once");
        assert_eq!(pages, 3);
        for id in 1..=links + 1 {
            let link = backend
                .read(|txn| links::get(txn, &Code::parse(&format!("l{id}")).unwrap()))
                .unwrap()
                .unwrap();
            let want = if id > links {
                LinkStatus::Active
            } else {
                LinkStatus::Flagged
            };
            assert_eq!(link.status, want, "l{id}");
        }
        assert!(
            backend
                .read(|txn| pending_sweeps(txn, usize::MAX))
                .unwrap()
                .is_empty()
        );
        // A finished sweep stays as it is.
        let (again, _) = write(&*backend, |txn| sweep_page(txn, "bad.example", 3_000)).unwrap();
        assert_eq!(again, last);
    }

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
