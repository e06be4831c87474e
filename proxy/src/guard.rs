//! Enumeration guard: a client that asks for many unknown codes in a short
//! window is walking the code space, and is refused with 429 for a while.
//!
//! Only misses (404s) are counted, per client address. The redirect path pays
//! one atomic load per request while nobody is blocked, and a map lookup per
//! request while someone is. The map is bounded: past its limit, entries
//! idle for longer than a window are dropped.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// Entries kept before idle ones are swept.
const ENTRIES_MAX: usize = 100_000;

/// The guard's settings.
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    /// Misses allowed per window; 0 turns the guard off.
    pub misses_max: u32,
    pub window_seconds: u64,
    pub block_seconds: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: u64,
    misses: u32,
    blocked_until: u64,
}

/// Miss counts and blocks per client address.
#[derive(Debug)]
pub struct EnumerationGuard {
    settings: GuardSettings,
    entries: DashMap<IpAddr, Entry>,
    blocked: AtomicUsize,
}

impl EnumerationGuard {
    #[must_use]
    pub fn new(settings: GuardSettings) -> Self {
        Self {
            settings,
            entries: DashMap::new(),
            blocked: AtomicUsize::new(0),
        }
    }

    /// Seconds the client must wait, if it is blocked now.
    #[inline]
    pub fn check(&self, client: IpAddr, now: u64) -> Option<u64> {
        if self.blocked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut entry = self.entries.get_mut(&client)?;
        if entry.blocked_until > now {
            return Some(entry.blocked_until - now);
        }
        if entry.blocked_until != 0 {
            // The block is over: start afresh.
            *entry = Entry {
                window_start: now,
                misses: 0,
                blocked_until: 0,
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
        if self.entries.len() >= ENTRIES_MAX {
            self.sweep(now);
        }
        let mut entry = self.entries.entry(client).or_insert(Entry {
            window_start: now,
            misses: 0,
            blocked_until: 0,
        });
        if entry.blocked_until > now {
            return true;
        }
        if now.saturating_sub(entry.window_start) >= s.window_seconds {
            entry.window_start = now;
            entry.misses = 0;
        }
        entry.misses = entry.misses.saturating_add(1);
        if entry.misses > s.misses_max {
            if entry.blocked_until == 0 {
                self.blocked.fetch_add(1, Ordering::Relaxed);
            }
            entry.blocked_until = now + s.block_seconds;
            return true;
        }
        false
    }

    /// Drops entries that are neither blocked nor in a current window.
    fn sweep(&self, now: u64) {
        let window = self.settings.window_seconds;
        self.entries.retain(|_, e| {
            let keep = e.blocked_until > now || now.saturating_sub(e.window_start) < window;
            if !keep && e.blocked_until != 0 {
                self.blocked.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
    }

    /// Clients blocked now (approximately; expired blocks are noticed lazily).
    #[must_use]
    pub fn blocked(&self) -> usize {
        self.blocked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> EnumerationGuard {
        EnumerationGuard::new(GuardSettings {
            misses_max: 3,
            window_seconds: 10,
            block_seconds: 60,
        })
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
            window_seconds: 10,
            block_seconds: 60,
        });
        for _ in 0..100 {
            assert!(!off.record_miss(ip, 1));
        }
    }
}
