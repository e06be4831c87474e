//! Bearer API keys. Tokens are random, shown once, and stored only as SHA-256
//! hashes; a token is found by its hash, so a lookup never compares secrets
//! byte by byte.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::{ReadTxn, Space, StoreError, StoreResult, Txn};
use crate::domain::codes::base62_fixed;
use crate::model::{KeyDoc, Role};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    /// The key's name, for records of who did what.
    pub key_name: String,
    pub owner: String,
    pub role: Role,
    /// The short domains this caller may use; `None` for all.
    pub domains: Option<Vec<String>>,
    /// The user it acts as: a session's, or a key's that belongs to one.
    pub user_id: Option<String>,
    /// The browser session it came in, when not a key.
    pub session_id: Option<String>,
}

impl Principal {
    #[must_use]
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this caller may create and manage links on `domain`.
    #[must_use]
    pub fn may_use_domain(&self, domain: &str) -> bool {
        self.domains
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|d| d == domain))
    }

    /// Whether this caller may see and change a link owned by `owner`.
    #[must_use]
    pub fn may_access(&self, owner: &str) -> bool {
        self.is_admin() || self.owner == owner
    }
}

/// The SHA-256 of a token.
#[must_use]
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: `sl_` and 43 base62 characters (256 bits).
#[must_use]
pub fn new_token() -> String {
    new_secret("sl_")
}

/// A random secret: `prefix` and 43 base62 characters (256 bits). Every
/// token, session, one-time link and signing secret is one.
#[must_use]
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let high = u128::from_le_bytes(bytes[..16].try_into().expect("16 bytes"));
    let low = u128::from_le_bytes(bytes[16..].try_into().expect("16 bytes"));
    format!(
        "{prefix}{}{}",
        base62_fixed(high, 22),
        base62_fixed(low, 22)
    )
}

/// A new key id.
#[must_use]
pub fn new_key_id() -> String {
    format!("key_{}", crate::domain::codes::random_code(12))
}

/// Writes a key for `token` in `txn`.
pub fn put_key(txn: &mut dyn Txn, doc: &KeyDoc, hash: &[u8; 32]) -> StoreResult<()> {
    txn.set(Space::Keys, doc.id.as_bytes(), &doc.encode())?;
    txn.set(Space::KeyHashes, hash, doc.id.as_bytes())
}

/// A new key document for `token`.
#[must_use]
pub fn key_doc(
    id: String,
    name: String,
    role: Role,
    owner: String,
    token: &str,
    now: i64,
) -> KeyDoc {
    KeyDoc {
        id,
        name,
        role,
        owner,
        created_at: now,
        token_sha256: hex::encode(token_hash(token)),
        domains: None,
        user_id: None,
    }
}

/// Finds the key for a token.
pub fn find_key(txn: &dyn ReadTxn, token: &str) -> StoreResult<Option<KeyDoc>> {
    let Some(id) = txn.get(Space::KeyHashes, &token_hash(token))? else {
        return Ok(None);
    };
    match txn.get(Space::Keys, &id)? {
        Some(bytes) => Ok(Some(KeyDoc::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Removes a key and its hash entry. Returns whether it existed.
pub fn delete_key(txn: &mut dyn Txn, id: &str) -> StoreResult<bool> {
    let Some(bytes) = txn.get(Space::Keys, id.as_bytes())? else {
        return Ok(false);
    };
    let doc = KeyDoc::decode(&bytes)?;
    txn.clear(Space::Keys, id.as_bytes())?;
    let hash = hex::decode(&doc.token_sha256)
        .map_err(|e| StoreError::Corrupt(format!("key {id}: token_sha256 is not hex: {e}")))?;
    txn.clear(Space::KeyHashes, &hash)?;
    Ok(true)
}

/// All keys, in id order.
pub fn list_keys(txn: &dyn ReadTxn, limit: usize) -> StoreResult<Vec<KeyDoc>> {
    txn.range(Space::Keys, b"", &[0xff], limit)?
        .iter()
        .map(|(_, v)| KeyDoc::decode(v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 47);
        assert!(a.starts_with("sl_"));
        assert_ne!(a, new_token());
    }
}
