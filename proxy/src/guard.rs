//! Enumeration guard: a client that asks for many unknown codes in a short
//! window is walking the code space, and is refused with 429 for a while.
//!
//! Only misses (404s) are counted, per client: an IPv4 address, or an IPv6
//! prefix (a /64 by default, since one host is usually handed a whole /64).
//! The redirect path pays one atomic load per request while nobody is
//! blocked, and one uncontended lock of one small set while someone is.
//!
//! Memory and time are bounded whatever clients do: the table is a fixed
//! array of sets of four slots, allocated once, and a client's set is
//! found by a keyed hash. A new client takes a free or stale slot of its
//! set, else the slot of the client whose window started longest ago, so
//! every request touches four slots at most and nothing is ever scanned.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Slots per set.
const WAYS: usize = 4;

/// The guard's settings.
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    /// Misses allowed per window; 0 turns the guard off.
    pub misses_max: u32,
    pub window_seconds: u64,
    pub block_seconds: u64,
    /// Clients tracked at once (rounded up to a power of two).
    pub clients_max: usize,
    /// IPv6 clients are keyed by this many leading bits of their address.
    pub ipv6_prefix_bits: u8,
}

/// A client: its address family (0 in a free slot) and address bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct Key {
    family: u8,
    bits: u128,
}

impl Key {
    fn is_free(self) -> bool {
        self.family == 0
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: Key,
    window_start: u64,
    misses: u32,
    blocked_until: u64,
}

impl Slot {
    fn blocked_at(&self, now: u64) -> bool {
        self.blocked_until > now
    }
}

/// Miss counts and blocks per client.
#[derive(Debug)]
pub struct EnumerationGuard {
    settings: GuardSettings,
    sets: Box<[Mutex<[Slot; WAYS]>]>,
    hasher: std::collections::hash_map::RandomState,
    /// Slots holding a block that has not been seen to end.
    blocked: AtomicUsize,
    /// Clients forgotten to make room for others.
    evicted: AtomicU64,
}

impl EnumerationGuard {
    #[must_use]
    pub fn new(settings: GuardSettings) -> Self {
        let sets = settings
            .clients_max
            .div_ceil(WAYS)
            .max(1)
            .next_power_of_two();
        Self {
            settings,
            sets: (0..sets)
                .map(|_| Mutex::new([Slot::default(); WAYS]))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            blocked: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// The client's key: an IPv4 address (also when mapped into IPv6), or
    /// the configured prefix of an IPv6 address.
    fn key(&self, client: IpAddr) -> Key {
        let v4 = |v4: std::net::Ipv4Addr| Key {
            family: 4,
            bits: u128::from(u32::from(v4)),
        };
        match client {
            IpAddr::V4(address) => v4(address),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(address) => v4(address),
                None => {
                    let prefix = u32::from(self.settings.ipv6_prefix_bits.clamp(1, 128));
                    Key {
                        family: 6,
                        bits: u128::from(v6) & (u128::MAX << (128 - prefix)),
                    }
                }
            },
        }
    }

    fn set(&self, key: Key) -> MutexGuard<'_, [Slot; WAYS]> {
        let index = (self.hasher.hash_one(key) as usize) & (self.sets.len() - 1);
        self.sets[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds the client must wait, if it is blocked now.
    #[inline]
    pub fn check(&self, client: IpAddr, now: u64) -> Option<u64> {
        if self.blocked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let key = self.key(client);
        let mut set = self.set(key);
        let slot = set.iter_mut().find(|s| s.key == key)?;
        if slot.blocked_at(now) {
            return Some(slot.blocked_until - now);
        }
        if slot.blocked_until != 0 {
            // The block is over: start afresh.
            *slot = Slot {
                key,
                window_start: now,
                ..Slot::default()
            };
            self.blocked.fetch_sub(1, Ordering::Relaxed);
        }
        None
    }

    /// Counts a miss; returns whether the client is now blocked.
    pub fn record_miss(&self, client: IpAddr, now: u64) -> bool {
        let s = self.settings;
        if s.misses_max == 0 {
            return false;
        }
        let key = self.key(client);
        let mut set = self.set(key);
        let at = match set.iter().position(|slot| slot.key == key) {
            Some(at) => at,
            None => {
                let at = self.victim(&set, now);
                let old = set[at];
                if !old.key.is_free() {
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                    if old.blocked_until != 0 {
                        self.blocked.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                set[at] = Slot {
                    key,
                    window_start: now,
                    ..Slot::default()
                };
                at
            }
        };
        let slot = &mut set[at];
        if slot.blocked_at(now) {
            return true;
        }
        if now.saturating_sub(slot.window_start) >= s.window_seconds {
            slot.window_start = now;
            slot.misses = 0;
        }
        slot.misses = slot.misses.saturating_add(1);
        if slot.misses > s.misses_max {
            if slot.blocked_until == 0 {
                self.blocked.fetch_add(1, Ordering::Relaxed);
            }
            slot.blocked_until = now + s.block_seconds;
            return true;
        }
        false
    }

    /// The slot a new client takes: a free one, else one neither blocked nor
    /// in a current window, else the unblocked one whose window is oldest,
    /// else the block that ends first.
    fn victim(&self, set: &[Slot; WAYS], now: u64) -> usize {
        let window = self.settings.window_seconds;
        let stale = |s: &Slot| !s.blocked_at(now) && now.saturating_sub(s.window_start) >= window;
        if let Some(at) = set.iter().position(|s| s.key.is_free() || stale(s)) {
            return at;
        }
        let oldest = |pick: &dyn Fn(&Slot) -> bool, by: &dyn Fn(&Slot) -> u64| {
            (0..WAYS)
                .filter(|&i| pick(&set[i]))
                .min_by_key(|&i| by(&set[i]))
        };
        oldest(&|s| !s.blocked_at(now), &|s| s.window_start)
            .or_else(|| oldest(&|_| true, &|s| s.blocked_until))
            .unwrap_or(0)
    }

    /// Clients blocked now (approximately; expired blocks are noticed lazily).
    #[must_use]
    pub fn blocked(&self) -> usize {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Clients forgotten to make room for others since start.
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Slots the table holds: its fixed size.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GuardSettings {
        GuardSettings {
            misses_max: 3,
            window_seconds: 10,
            block_seconds: 60,
            clients_max: 1024,
            ipv6_prefix_bits: 64,
        }
    }

    fn guard() -> EnumerationGuard {
        EnumerationGuard::new(settings())
    }

    #[test]
    fn too_many_misses_in_a_window_block_for_a_while() {
        let g = guard();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!g.record_miss(ip, 100));
        assert!(!g.record_miss(ip, 101));
        assert!(!g.record_miss(ip, 102));
        assert_eq!(g.check(ip, 102), None);
        assert!(
            g.record_miss(ip, 103),
            "the fourth miss in the window blocks"
        );
        assert_eq!(g.check(ip, 104), Some(59));
        assert_eq!(g.check(other, 104), None, "others are not affected");
        assert_eq!(g.blocked(), 1);
        assert_eq!(g.check(ip, 163), None, "the block ends");
        assert_eq!(g.blocked(), 0);
    }

    #[test]
    fn misses_spread_over_windows_never_block() {
        let g = guard();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for i in 0..100 {
            assert!(!g.record_miss(ip, i * 5), "two misses per window at most");
        }
        let off = EnumerationGuard::new(GuardSettings {
            misses_max: 0,
            ..settings()
        });
        for _ in 0..100 {
            assert!(!off.record_miss(ip, 1));
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        let g = guard();
        for i in 1..=4u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, i));
            g.record_miss(ip, 100);
        }
        let same_64: IpAddr = "2001:db8:0:7:ffff::9".parse().unwrap();
        let next_64: IpAddr = "2001:db8:0:8::1".parse().unwrap();
        assert_eq!(
            g.check(same_64, 100),
            Some(60),
            "the whole /64 is one client"
        );
        assert_eq!(g.check(next_64, 100), None);
        // With the prefix at 128 bits, each address is its own client.
        let exact = EnumerationGuard::new(GuardSettings {
            ipv6_prefix_bits: 128,
            ..settings()
        });
        for i in 1..=4u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, i));
            assert!(!exact.record_miss(ip, 100));
        }
        // An IPv4 address mapped into IPv6 is the IPv4 client.
        let v4: IpAddr = "192.0.2.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        for _ in 0..4 {
            g.record_miss(v4, 100);
        }
        assert_eq!(g.check(mapped, 100), Some(60));
    }

    #[test]
    fn memory_is_fixed_and_a_flood_of_clients_only_evicts() {
        let g = guard();
        let capacity = g.capacity();
        assert_eq!(capacity, 1024);
        let walker: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..4 {
            g.record_miss(walker, 100);
        }
        // A hundred times the table in distinct clients, one miss each: the
        // table does not grow, each miss touches one set, and the blocked
        // walker is evicted last (only by blocks in its own set).
        for i in 0..(capacity as u32 * 100) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(!g.record_miss(ip, 101));
        }
        assert_eq!(g.capacity(), capacity);
        assert!(g.evicted() >= u64::from(capacity as u32) * 99);
        assert_eq!(g.check(walker, 102), Some(58));
        assert_eq!(g.blocked(), 1);
    }
}
