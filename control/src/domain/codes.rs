//! Code generation: the strategies of `BRIEF.md`, "Links and codes".
//!
//! * `counter`: link ids come from blocks leased from the store; an id is
//!   turned into a code by a keyed Feistel permutation of `[0, 62^n)` with
//!   cycle walking, so codes are unique without lookups yet not sequential.
//! * `random`: CSPRNG codes, claimed insert-if-absent, lengthened after
//!   repeated collisions.
//! * `hash`: derived from owner and URL, salted on collision.
//! * `uuid`: base62 of a random v4 UUID (22 characters).

use rand::Rng;
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64_with_seed;

pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Feistel rounds; six is ample for a non-cryptographic shuffle keyed by a secret.
const ROUNDS: usize = 6;

/// Words an alias may not be (compared case-insensitively): the proxy's and
/// control plane's own paths and names that would confuse people.
pub const RESERVED_ALIASES: &[&str] = &[
    "api", "admin", "www", "help", "healthz", "readyz", "metrics", "static", "internal", "assets",
    "docs", "login", "logout", "status", "favicon", "robots", "openapi", "preview",
];

/// Shortest custom alias.
pub const ALIAS_LEN_MIN: usize = 3;

/// 62^n, or `None` past u64.
#[must_use]
pub fn space_size(len: usize) -> Option<u64> {
    62u64.checked_pow(u32::try_from(len).ok()?)
}

/// Writes `n` as exactly `len` base62 digits.
#[must_use]
pub fn base62_fixed(mut n: u128, len: usize) -> String {
    let mut out = vec![b'0'; len];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).expect("base62 is ascii")
}

/// A keyed bijection of `[0, 62^len)` for every length: the counter strategy's
/// permutation. The key lives in the data directory.
#[derive(Clone)]
pub struct Permutation {
    round_keys: [u64; ROUNDS],
}

impl std::fmt::Debug for Permutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permutation(<secret>)")
    }
}

impl Permutation {
    #[must_use]
    pub fn new(key: &[u8; 32]) -> Self {
        let mut round_keys = [0u64; ROUNDS];
        for (i, k) in round_keys.iter_mut().enumerate() {
            let digest = Sha256::new()
                .chain_update(key)
                .chain_update([i as u8])
                .finalize();
            *k = u64::from_le_bytes(digest[..8].try_into().expect("eight bytes"));
        }
        Self { round_keys }
    }

    /// Permutes `x`, which must be below `62^len` (and `len <= 10`).
    #[must_use]
    pub fn permute(&self, x: u64, len: usize) -> u64 {
        let size = space_size(len).expect("len fits u64");
        assert!(x < size, "{x} is outside [0, 62^{len})");
        let bits = 64 - (size - 1).leading_zeros();
        let half = bits.div_ceil(2);
        let mask = (1u64 << half) - 1;
        // Cycle walking: a Feistel network permutes [0, 2^(2*half)); repeat
        // until the value falls back inside [0, size). Since 2^(2*half) < 4 *
        // size, this takes under four rounds on average.
        let mut value = x;
        loop {
            let mut left = value >> half;
            let mut right = value & mask;
            for key in self.round_keys {
                let f = xxh3_64_with_seed(&right.to_le_bytes(), key) & mask;
                (left, right) = (right, left ^ f);
            }
            value = (left << half) | right;
            if value < size {
                return value;
            }
        }
    }

    /// The counter strategy's code for link id `id`: the shortest length at
    /// least `min_len` whose space holds `id`, then the permuted id. Codes of
    /// different lengths never equal each other, so every id has its own code.
    #[must_use]
    pub fn code_for_id(&self, id: u64, min_len: usize) -> String {
        let mut len = min_len;
        while space_size(len).is_some_and(|size| id >= size) {
            len += 1;
        }
        if space_size(len).is_none() {
            // Ids past 62^10 (8e17) take the whole u64 as 11 digits.
            return base62_fixed(u128::from(id), 11);
        }
        base62_fixed(u128::from(self.permute(id, len)), len)
    }
}

/// A random code of `len` characters from the thread's CSPRNG.
#[must_use]
pub fn random_code(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| BASE62[rng.random_range(0..62)] as char)
        .collect()
}

/// The hash strategy's code for `owner` and `url`, with a collision `salt`.
#[must_use]
pub fn hash_code(owner: &str, url: &str, salt: u32, len: usize) -> String {
    let digest = Sha256::new()
        .chain_update(owner.as_bytes())
        .chain_update([0])
        .chain_update(url.as_bytes())
        .chain_update(salt.to_le_bytes())
        .finalize();
    let n = u128::from_le_bytes(digest[..16].try_into().expect("sixteen bytes"));
    base62_fixed(n % 62u128.pow(len.min(21) as u32), len.min(21))
}

/// The uuid strategy's code.
#[must_use]
pub fn uuid_code() -> String {
    base62_fixed(uuid::Uuid::new_v4().as_u128(), 22)
}

/// Why an alias is refused; `shortest` is [`ALIAS_LEN_MIN`] but for
/// imported codes.
pub fn check_alias(alias: &str, shortest: usize) -> Result<(), String> {
    if alias.len() < shortest {
        return Err(format!("an alias is at least {shortest} characters"));
    }
    shortline_store::Code::parse(alias).map_err(|e| e.to_string())?;
    if RESERVED_ALIASES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(alias))
    {
        return Err(format!("{alias:?} is reserved"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn permutation_is_a_bijection_on_small_spaces() {
        let p = Permutation::new(&[7; 32]);
        for len in 1..=3 {
            let size = space_size(len).unwrap();
            let image: HashSet<u64> = (0..size).map(|x| p.permute(x, len)).collect();
            assert_eq!(image.len() as u64, size, "len {len}");
            assert!(image.iter().all(|&y| y < size));
        }
    }

    #[test]
    fn counter_codes_are_unique_and_not_sequential() {
        let p = Permutation::new(&[1; 32]);
        let codes: Vec<String> = (0..100_000).map(|id| p.code_for_id(id, 7)).collect();
        let unique: HashSet<&String> = codes.iter().collect();
        assert_eq!(unique.len(), codes.len());
        assert!(codes.iter().all(|c| c.len() == 7));
        // Consecutive ids share no long prefix: the permutation scatters them.
        let shared = codes.windows(2).filter(|w| w[0][..4] == w[1][..4]).count();
        assert!(shared < 10, "{shared} neighbours share a prefix");
        // Another key gives other codes.
        let q = Permutation::new(&[2; 32]);
        assert_ne!(p.code_for_id(5, 7), q.code_for_id(5, 7));
    }

    #[test]
    fn counter_codes_lengthen_past_the_space() {
        let p = Permutation::new(&[1; 32]);
        let size = space_size(4).unwrap();
        assert_eq!(p.code_for_id(size - 1, 4).len(), 4);
        assert_eq!(p.code_for_id(size, 4).len(), 5);
        assert_eq!(p.code_for_id(u64::MAX, 7).len(), 11);
    }

    #[test]
    fn hash_codes_are_deterministic_per_owner_and_salt() {
        let a = hash_code("alice", "https://e.com/", 0, 7);
        assert_eq!(a, hash_code("alice", "https://e.com/", 0, 7));
        assert_ne!(a, hash_code("bob", "https://e.com/", 0, 7));
        assert_ne!(a, hash_code("alice", "https://e.com/", 1, 7));
        assert_eq!(a.len(), 7);
    }

    #[test]
    fn aliases_refuse_reserved_words_and_bad_shapes() {
        assert!(check_alias("my-link", ALIAS_LEN_MIN).is_ok());
        assert!(
            check_alias("API", ALIAS_LEN_MIN)
                .unwrap_err()
                .contains("reserved")
        );
        assert!(check_alias("ab", ALIAS_LEN_MIN).is_err());
        assert!(check_alias("a", 1).is_ok());
        assert!(check_alias("a/b/c", 1).is_err());
        assert_eq!(uuid_code().len(), 22);
        assert_eq!(random_code(9).len(), 9);
    }
}
