//! The cache of verified API keys: a token is looked up in the store once,
//! then trusted for a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::db::{Backend, StoreResult};
use crate::domain::auth::{Principal, find_key, token_hash};
use crate::domain::users;

/// How long a verified token is trusted without asking the store again. A key
/// deleted through this process is dropped from the cache at once; one
/// deleted through another sidecar is refused after at most this long.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most cached tokens; the cache is cleared when it grows past this.
const CACHE_ENTRIES_MAX: usize = 100_000;

/// Verified tokens, by hash, with when they were verified.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: DashMap<[u8; 32], (Principal, Instant)>,
}

impl KeyCache {
    /// The principal for `token` if it was verified within the cache's
    /// lifetime; no store access, so callers can skip a blocking task.
    #[must_use]
    pub fn cached(&self, token: &str) -> Option<Principal> {
        let entry = self.entries.get(&token_hash(token))?;
        (entry.1.elapsed() < CACHE_TTL).then(|| entry.0.clone())
    }

    /// The principal for `token`, from the cache or the store.
    pub fn verify(
        &self,
        backend: &Arc<dyn Backend>,
        token: &str,
    ) -> StoreResult<Option<Principal>> {
        if let Some(principal) = self.cached(token) {
            return Ok(Some(principal));
        }
        let hash = token_hash(token);
        // A key that belongs to a user acts as the user: their role and
        // links, and not at all once they are disabled or deleted.
        let found = backend.read(|txn| {
            let Some(doc) = find_key(txn, token)? else {
                return Ok(None);
            };
            let user = match &doc.user_id {
                Some(id) => match users::get(txn, id)? {
                    Some(user) if !user.disabled => Some(user),
                    _ => return Ok(None),
                },
                None => None,
            };
            Ok(Some((doc, user)))
        })?;
        let Some((doc, user)) = found else {
            self.entries.remove(&hash);
            return Ok(None);
        };
        let principal = match user {
            Some(user) => Principal {
                key_id: doc.id,
                key_name: doc.name,
                owner: user.email,
                role: user.role,
                domains: doc.domains,
                user_id: Some(user.id),
                session_id: None,
            },
            None => Principal {
                key_id: doc.id,
                key_name: doc.name,
                owner: doc.owner,
                role: doc.role,
                domains: doc.domains,
                user_id: None,
                session_id: None,
            },
        };
        if self.entries.len() >= CACHE_ENTRIES_MAX {
            self.entries.clear();
        }
        self.entries
            .insert(hash, (principal.clone(), Instant::now()));
        Ok(Some(principal))
    }

    /// Forgets every cached token (a user changed: their keys must be
    /// checked again).
    pub fn forget_all(&self) {
        self.entries.clear();
    }

    /// Forgets every cached token of key `id`.
    pub fn forget(&self, id: &str) {
        self.entries.retain(|_, (p, _)| p.key_id != id);
    }
}
