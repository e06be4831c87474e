//! A click on a link with targeting rules or a split: the client's facts
//! gathered without allocating (the agent read once per thread and kept),
//! the rules evaluated where they lie in the table, and the client's place
//! in a sticky split kept by a cookie.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;

use shortline_store::routing::{self, Agent, Client, Routed};

use shortline_common::geo::GeoIp;

/// The cookie that keeps a client's place in sticky splits: one random
/// number per client, mixed with each link's id so that splits of
/// different links fall independently.
pub const VISITOR_COOKIE: &str = "sl_v";

/// Agents read per thread and kept, by the hash of the agent string.
const AGENT_SLOTS: usize = 256;

thread_local! {
    static AGENTS: RefCell<[(u64, Agent); AGENT_SLOTS]> = const {
        RefCell::new([(0, Agent { device: 0, os: 0, browser: 0 }); AGENT_SLOTS])
    };
    static RANDOM: Cell<u64> = const { Cell::new(0) };
}

/// What the request brings that rules may look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'r> {
    pub user_agent: &'r [u8],
    pub accept_language: &'r [u8],
    pub cookie: &'r [u8],
    /// The client's address, for rules with countries.
    pub client_ip: Option<IpAddr>,
    /// The country database, when one is configured.
    pub geoip: Option<&'r GeoIp>,
}

/// The agent string read as device, system and browser; the same string
/// seen again on this thread is not read again.
#[must_use]
pub fn agent(user_agent: &[u8]) -> Agent {
    if user_agent.is_empty() {
        return Agent::default();
    }
    // 0 marks an empty slot.
    let hash = xxhash_rust::xxh3::xxh3_64(user_agent) | 1;
    AGENTS.with_borrow_mut(|slots| {
        let slot = &mut slots[(hash as usize) % AGENT_SLOTS];
        if slot.0 != hash {
            *slot = (hash, Agent::parse(user_agent));
        }
        slot.1
    })
}

/// SplitMix64: a well-mixed 64 bits from any 64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random `u32` from this thread's generator, seeded from the
/// process's random hash keys the first time.
fn random() -> u32 {
    RANDOM.with(|state| {
        let mut s = state.get();
        if s == 0 {
            use std::hash::{BuildHasher, Hasher};
            s = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                | 1;
        }
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        (mix(s) >> 32) as u32
    })
}

/// The client's number from its `Cookie` header, if it sent one.
fn visitor(cookie: &[u8]) -> Option<u32> {
    cookie.split(|&b| b == b';').find_map(|pair| {
        let value = pair
            .trim_ascii()
            .strip_prefix(VISITOR_COOKIE.as_bytes())?
            .strip_prefix(b"=")?;
        std::str::from_utf8(value).ok()?.parse().ok()
    })
}

/// Where a click on a link with `encoded` routing goes, and the number to
/// give the client in a cookie (a sticky split chose a variant and the
/// client had none).
#[must_use]
pub fn route<'a>(
    encoded: &'a [u8],
    link_id: u64,
    headers: &Headers<'_>,
    query: &[u8],
    now: i64,
) -> (Option<Routed<'a>>, Option<u32>) {
    let sticky = routing::is_sticky(encoded);
    let known = visitor(headers.cookie);
    let (number, fresh) = match known {
        Some(n) => (n, false),
        None => (random(), true),
    };
    let bucket = if sticky {
        (mix((u64::from(number) << 32) ^ link_id) >> 32) as u32
    } else {
        random()
    };
    let country = || headers.geoip?.country(headers.client_ip?);
    let client = Client {
        agent: agent(headers.user_agent),
        accept_language: headers.accept_language,
        query,
        country: Some(&country),
        now,
        bucket,
    };
    let routed = routing::route(encoded, &client);
    let give = (sticky && fresh && routed.is_some_and(|r| r.variant.is_some())).then_some(number);
    (routed, give)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_visitor_cookie_is_found_among_others() {
        assert_eq!(visitor(b"a=1; sl_v=42; b=2"), Some(42));
        assert_eq!(visitor(b"sl_v=7"), Some(7));
        assert_eq!(visitor(b"sl_vx=7; sl_v=x"), None);
        assert_eq!(visitor(b""), None);
    }

    #[test]
    fn agents_are_kept_per_thread() {
        let iphone = b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1";
        let first = agent(iphone);
        assert_eq!(first, Agent::parse(iphone));
        assert_eq!(agent(iphone), first);
        assert_eq!(agent(b""), Agent::default());
    }

    #[test]
    fn random_numbers_differ() {
        let drawn: std::collections::HashSet<u32> = (0..1000).map(|_| random()).collect();
        assert!(drawn.len() > 990);
    }
}
