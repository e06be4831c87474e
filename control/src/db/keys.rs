//! Every key the control plane stores, and its encoding: the one place that
//! says what a space holds and how its keys sort. The spaces are listed in
//! [`Space`](super::Space); this module builds the keys inside them.
//!
//! # Meta singletons ([`Space::Meta`](super::Space::Meta))
//!
//! [`SEQ`], [`PRUNED`], [`NOTIFY`], [`ID_NEXT`], [`HOSTS_INDEXED`],
//! [`DEFAULT_DOMAIN`], [`DOMAINS_MIGRATED`] and
//! [`WAL_THROUGH`], [`STORE_LOG_THROUGH`], [`WEBHOOKS_ACTIVE`],
//! [`WEBHOOKS_CURSOR`], [`WEBHOOKS_LEASE`], plus the secrets' names in the data directory.
//!
//! # Counters ([`Space::Counters`](super::Space::Counters))
//!
//! | key | counts |
//! |-----|--------|
//! | `clicks/` link | every GET click of the link (the link's `clicks`) |
//! | `humans/` link | human GET clicks (what `max_clicks` limits) |
//! | `heads/` link | HEAD requests |
//! | `reports/open` | open abuse reports |
//! | `s` link g bucket `k` kind | clicks of a kind (`human`, `bot`, `preview`, `head`) in an hour or a day |
//! | `s` link `d` day dim value | human clicks by dimension value in a day |
//! | `n` link `d` day dim | distinct values admitted for a bounded dimension |
//! | `t` day link | human clicks of a link on a day, for the top-links report |
//!
//! `link` is the link id (8 bytes, big-endian), `g` is `h` (hourly) or `d`
//! (daily), `bucket` is hours or days since the Unix epoch (4 bytes,
//! big-endian) and `dim` is one byte (see [`dim`]). Counters are
//! little-endian `i64`s changed only by atomic adds ([`counter_value`]).
//!
//! # Indexes
//!
//! | space | key |
//! |-------|-----|
//! | `ByOwner`, `ByTag` | owner or tag, NUL, code ([`pair`]) |
//! | `ByExpiry` | expiry time with the sign bit flipped (8 bytes, big-endian), code ([`expiry`]) |
//! | `ByHost` | target host, labels reversed and dot-ended, NUL, code ([`host`]) |
//! | `ById`, `Limited` | link id (8 bytes, big-endian) -> code ([`link_id`]) |
//! | `StatsHours` | hour (4 bytes, big-endian), link id ([`hour_index`]) |
//! | `ReportsOpen` | code, NUL, report id ([`pair`]) |
//! | `Changes` | change sequence (8 bytes, big-endian) ([`change`]) |
//! | `WebhookQueue`, `WebhookLog` | subscription id, NUL, number (8 bytes, big-endian) ([`webhook_entry`]) |
//! | `WebhookClicks` | Unix ms (8 bytes, big-endian), 8 random bytes |

/// The newest change sequence (little-endian `u64`; embedded store only,
/// FoundationDB keys changes by commit version).
pub const SEQ: &[u8] = b"change_seq";
/// Every change at or below this sequence has been pruned.
pub const PRUNED: &[u8] = b"changes_pruned_through";
/// Bumped by every FoundationDB transaction that logs a change, so other
/// sidecars can watch one key.
pub const NOTIFY: &[u8] = b"changes_notify";
/// The next unleased link id.
pub const ID_NEXT: &[u8] = b"id_next";
/// Present once every stored link has a [`host`] index entry.
pub const HOSTS_INDEXED: &[u8] = b"hosts_indexed_v1";
/// The name of the default short domain.
pub const DEFAULT_DOMAIN: &[u8] = b"default_domain";
/// Present once the first short domain was made from `public_url`.
pub const DOMAINS_MIGRATED: &[u8] = b"domains_migrated_v1";
/// The click log position whose clicks are all counted in the store.
pub const WAL_THROUGH: &[u8] = b"clicks_wal_through";
/// The embedded store's redo log segment whose writes are all in the
/// store file durably (set by every checkpoint).
pub const STORE_LOG_THROUGH: &[u8] = b"store_log_through";
/// Counter of open abuse reports.
pub const OPEN_REPORTS: &[u8] = b"reports/open";
/// How far the re-check of every link against the threat list got.
pub const THREAT_RECHECK: &[u8] = b"threat_recheck";
/// Prefix of a blocklist entry's sweep state, followed by its domain.
pub const SWEEP_PREFIX: &[u8] = b"blocklist_sweep/";

/// Present while at least one webhook subscription is enabled: link
/// writes then log their event, and click flushes their counts.
pub const WEBHOOKS_ACTIVE: &[u8] = b"webhooks/active";
/// The change sequence through which link events were queued for webhooks
/// (little-endian `u64`).
pub const WEBHOOKS_CURSOR: &[u8] = b"webhooks/cursor";
/// Which process delivers webhooks, and until when (JSON).
pub const WEBHOOKS_LEASE: &[u8] = b"webhooks/lease";

/// A subscription's queue or log entry: its id, NUL, the number big-endian.
#[must_use]
pub fn webhook_entry(id: &str, n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 9);
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// The key of the sweep state of the blocklist entry for `domain`.
#[must_use]
pub fn sweep(domain: &str) -> Vec<u8> {
    [SWEEP_PREFIX, domain.as_bytes()].concat()
}

/// Seconds in a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    #[must_use]
    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }

    #[must_use]
    pub fn tag(self) -> u8 {
        match self {
            Self::Hour => b'h',
            Self::Day => b'd',
        }
    }

    /// The bucket holding `unix` seconds.
    #[must_use]
    pub fn bucket(self, unix: i64) -> u32 {
        u32::try_from(unix.max(0).div_euclid(self.seconds())).unwrap_or(u32::MAX)
    }

    /// The start of `bucket`, in Unix seconds.
    #[must_use]
    pub fn start(self, bucket: u32) -> i64 {
        i64::from(bucket) * self.seconds()
    }
}

/// The value counted in place of a bounded dimension's values beyond
/// `analytics_top_n` in a day.
pub const OTHER: &str = "other";

/// Dimension bytes of series keys.
pub mod dim {
    pub const KIND: u8 = b'k';
    pub const REFERRER: u8 = b'r';
    pub const COUNTRY: u8 = b'c';
    pub const BROWSER: u8 = b'b';
    pub const OS: u8 = b'o';
    pub const DEVICE: u8 = b'd';
    /// Where a link with targeting rules or a split sent the click.
    pub const ROUTE: u8 = b't';
}

fn counter(prefix: &[u8], link_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&link_id.to_be_bytes());
    key
}

/// The prefix of the total-click counters.
pub const CLICKS_PREFIX: &[u8] = b"clicks/";

/// Counter of a link's total clicks.
#[must_use]
pub fn clicks(link_id: u64) -> Vec<u8> {
    counter(CLICKS_PREFIX, link_id)
}

/// The prefix of the human-click counters.
pub const HUMANS_PREFIX: &[u8] = b"humans/";

/// Counter of a link's human clicks.
#[must_use]
pub fn humans(link_id: u64) -> Vec<u8> {
    counter(HUMANS_PREFIX, link_id)
}

/// Counter of a link's HEAD requests, kept apart from clicks.
#[must_use]
pub fn heads(link_id: u64) -> Vec<u8> {
    counter(b"heads/", link_id)
}

/// Decodes a counter value (absent or malformed counts as zero).
#[must_use]
pub fn counter_value(bytes: &[u8]) -> i64 {
    bytes.try_into().map_or(0, i64::from_le_bytes)
}

/// Prefix of one link's series in one granularity.
#[must_use]
pub fn series_prefix(link_id: u64, granularity: Granularity) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.push(b's');
    key.extend_from_slice(&link_id.to_be_bytes());
    key.push(granularity.tag());
    key
}

/// Prefix of one bucket of a link's series.
#[must_use]
pub fn bucket_prefix(link_id: u64, granularity: Granularity, bucket: u32) -> Vec<u8> {
    let mut key = series_prefix(link_id, granularity);
    key.extend_from_slice(&bucket.to_be_bytes());
    key
}

/// A counter of one dimension value in a bucket.
#[must_use]
pub fn series(
    link_id: u64,
    granularity: Granularity,
    bucket: u32,
    dimension: u8,
    value: &str,
) -> Vec<u8> {
    let mut key = bucket_prefix(link_id, granularity, bucket);
    key.push(dimension);
    key.extend_from_slice(value.as_bytes());
    key
}

/// Where the value starts in a [`series`] key: `s`, link, granularity,
/// bucket, dimension.
pub const SERIES_VALUE_AT: usize = 1 + 8 + 1 + 4 + 1;

/// The counter of distinct values admitted for the bounded dimension that a
/// daily [`series`] key belongs to: `n`, link, `d`, day, dimension.
#[must_use]
pub fn distinct(series_key: &[u8]) -> Vec<u8> {
    debug_assert!(series_key.len() >= SERIES_VALUE_AT && series_key[0] == b's');
    let mut key = Vec::with_capacity(SERIES_VALUE_AT);
    key.push(b'n');
    key.extend_from_slice(&series_key[1..SERIES_VALUE_AT]);
    key
}

/// Human clicks of a link on a day, for the top-links report.
#[must_use]
pub fn top(day: u32, link_id: u64) -> Vec<u8> {
    let mut key = vec![b't'];
    key.extend_from_slice(&day.to_be_bytes());
    key.extend_from_slice(&link_id.to_be_bytes());
    key
}

/// Entry of the hourly-bucket index: hour then link.
#[must_use]
pub fn hour_index(hour: u32, link_id: u64) -> Vec<u8> {
    let mut key = hour.to_be_bytes().to_vec();
    key.extend_from_slice(&link_id.to_be_bytes());
    key
}

/// Index key `first NUL second`: owner or tag then code, code then report id.
#[must_use]
pub fn pair(first: &str, second: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(first.len() + second.len() + 1);
    key.extend_from_slice(first.as_bytes());
    key.push(0);
    key.extend_from_slice(second.as_bytes());
    key
}

/// Expiry index key: the time offset so negative times still sort before
/// positive ones, then the code.
#[must_use]
pub fn expiry(at: i64, code: &str) -> Vec<u8> {
    let mut key = ((at as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    key.extend_from_slice(code.as_bytes());
    key
}

/// A host with its labels reversed and dot-ended (`example.evil.www.`), so a
/// domain's key prefixes every subdomain's.
#[must_use]
pub fn reversed_host(host: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(host.len() + 1);
    for label in host.trim_end_matches('.').rsplit('.') {
        key.extend_from_slice(label.as_bytes());
        key.push(b'.');
    }
    key
}

/// Host index key: the reversed host, NUL, the code.
#[must_use]
pub fn host(host: &str, code: &str) -> Vec<u8> {
    let mut key = reversed_host(host);
    key.push(0);
    key.extend_from_slice(code.as_bytes());
    key
}

/// Key of a link id in `ById` and `Limited`.
#[must_use]
pub fn link_id(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Key of a change in the embedded store's change log.
#[must_use]
pub fn change(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keys_sort_by_time_across_zero() {
        let mut keys = [
            expiry(5, "a"),
            expiry(-5, "a"),
            expiry(0, "a"),
            expiry(i64::MIN, "z"),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                expiry(i64::MIN, "z"),
                expiry(-5, "a"),
                expiry(0, "a"),
                expiry(5, "a")
            ]
        );
    }

    #[test]
    fn a_domain_prefixes_its_subdomains_only() {
        let domain = reversed_host("evil.example");
        assert!(host("www.evil.example", "c").starts_with(&domain));
        assert!(host("evil.example.", "c").starts_with(&domain));
        assert!(!host("notevil.example", "c").starts_with(&domain));
        assert!(!host("evil.example.org", "c").starts_with(&domain));
    }

    #[test]
    fn series_keys_nest_under_their_bucket_and_series() {
        let key = series(7, Granularity::Hour, 42, dim::KIND, "human");
        assert!(key.starts_with(&bucket_prefix(7, Granularity::Hour, 42)));
        assert!(key.starts_with(&series_prefix(7, Granularity::Hour)));
        assert!(!key.starts_with(&series_prefix(7, Granularity::Day)));
        assert_eq!(counter_value(&9i64.to_le_bytes()), 9);
        assert_eq!(counter_value(b"short"), 0);
    }
}
