//! Click analytics: clicks are classified and folded in memory, and the
//! folded counts are added to pre-aggregated counters in one store
//! transaction per flush, so stats never scan raw events.
//!
//! # Counter layout (all in [`Space::Counters`](crate::store::Space::Counters))
//!
//! | key | counts |
//! |-----|--------|
//! | `clicks/` link | every GET click of the link (the link's `clicks`) |
//! | `humans/` link | human GET clicks (what `max_clicks` limits) |
//! | `heads/` link | HEAD requests |
//! | `s` link g bucket `k` kind | clicks of a kind (`human`, `bot`, `preview`, `head`) in an hour or a day |
//! | `s` link `d` day dim value | human clicks by dimension value in a day |
//! | `n` link `d` day dim | distinct values admitted for a bounded dimension |
//! | `t` day link | human clicks of a link on a day, for the top-links report |
//!
//! `link` is the link id (8 bytes, big-endian), `g` is `h` (hourly) or `d`
//! (daily), `bucket` is hours or days since the Unix epoch (4 bytes,
//! big-endian) and `dim` is one byte: `r` referrer host, `c` country, `b`
//! browser, `o` OS, `d` device class. Breakdowns have day resolution: the
//! series has hourly and daily points, the breakdowns of a period are summed
//! over the days it touches (a tenth of the keys an hourly breakdown needs).
//! Referrers and countries are bounded: once `analytics_top_n` distinct
//! values are stored for a link on a day, further values count as `other`. Hourly buckets are listed in
//! [`Space::StatsHours`](crate::store::Space::StatsHours) so the retention
//! sweep finds expired ones without scanning.

pub mod aggregate;
pub mod classify;
pub mod export;
pub mod geo;
pub mod stats;
pub mod wal;

pub use aggregate::Analytics;

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

/// Dimension bytes.
pub mod dim {
    pub const KIND: u8 = b'k';
    pub const REFERRER: u8 = b'r';
    pub const COUNTRY: u8 = b'c';
    pub const BROWSER: u8 = b'b';
    pub const OS: u8 = b'o';
    pub const DEVICE: u8 = b'd';
}

/// Value counted in place of a bounded dimension's values beyond the limit.
pub const OTHER: &str = "other";

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
pub fn series_key(
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

/// Human clicks of a link on a day, for the top-links report.
#[must_use]
pub fn top_key(day: u32, link_id: u64) -> Vec<u8> {
    let mut key = vec![b't'];
    key.extend_from_slice(&day.to_be_bytes());
    key.extend_from_slice(&link_id.to_be_bytes());
    key
}

/// Entry of the hourly-bucket index: hour then link.
#[must_use]
pub fn hour_index_key(hour: u32, link_id: u64) -> Vec<u8> {
    let mut key = hour.to_be_bytes().to_vec();
    key.extend_from_slice(&link_id.to_be_bytes());
    key
}

/// Counter of a link's human clicks.
#[must_use]
pub fn humans_key(link_id: u64) -> Vec<u8> {
    let mut key = b"humans/".to_vec();
    key.extend_from_slice(&link_id.to_be_bytes());
    key
}

/// Decodes a counter value.
#[must_use]
pub fn counter_value(bytes: &[u8]) -> i64 {
    bytes.try_into().map_or(0, i64::from_le_bytes)
}
