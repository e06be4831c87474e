//! Reading the counters back: a link's stats over a period, and the top
//! links over a period. Both read pre-aggregated buckets only.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use utoipa::ToSchema;

use crate::db::keys::{self, Granularity, OTHER, counter_value, dim, series_prefix};
use crate::db::{ReadTxn, Space, StoreResult};

/// Counter keys read per range request.
const PAGE: usize = 4096;

/// Clicks of each kind in one bucket.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Point {
    /// Start of the bucket (RFC 3339).
    #[schema(value_type = String)]
    #[serde(with = "time::serde::rfc3339")]
    pub t: time::OffsetDateTime,
    pub total: u64,
    pub human: u64,
    pub bot: u64,
    pub preview: u64,
    pub head: u64,
}

/// One value of a breakdown and its human clicks.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Count {
    pub value: String,
    pub clicks: u64,
}

/// A link's clicks over a period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stats {
    pub code: String,
    /// The short domain of the code.
    pub domain: String,
    #[schema(value_type = String)]
    #[serde(with = "time::serde::rfc3339")]
    pub from: time::OffsetDateTime,
    #[schema(value_type = String)]
    #[serde(with = "time::serde::rfc3339")]
    pub to: time::OffsetDateTime,
    #[schema(value_type = String)]
    pub granularity: Granularity,
    /// GET clicks of every kind: human + bot + preview.
    pub total_clicks: u64,
    pub human_clicks: u64,
    /// Crawlers, monitors and scripts.
    pub bot_clicks: u64,
    /// Link-preview fetchers.
    pub preview_clicks: u64,
    /// HEAD requests, counted apart from clicks.
    pub head_requests: u64,
    /// One point per bucket with clicks, oldest first.
    pub series: Vec<Point>,
    /// Breakdowns of human clicks, largest first.
    pub referrers: Vec<Count>,
    /// Empty unless a GeoIP database is configured.
    pub countries: Vec<Count>,
    pub browsers: Vec<Count>,
    pub os: Vec<Count>,
    pub devices: Vec<Count>,
    /// For a link with targeting rules or a split: its human clicks by
    /// where they went, `rule N`, `variant N` or `link` (its own target).
    pub routes: Vec<Count>,
}

fn sorted(map: HashMap<String, u64>, limit: usize) -> Vec<Count> {
    let mut counts: Vec<Count> = map
        .into_iter()
        .filter(|(_, c)| *c > 0)
        .map(|(value, clicks)| Count { value, clicks })
        .collect();
    counts.sort_by(|a, b| {
        // "other" goes last whatever its size.
        (a.value == OTHER, std::cmp::Reverse(a.clicks), &a.value).cmp(&(
            b.value == OTHER,
            std::cmp::Reverse(b.clicks),
            &b.value,
        ))
    });
    counts.truncate(limit);
    counts
}

/// A link's stats for buckets from the one holding `from` up to the one
/// holding `to - 1` second.
pub fn link_stats(
    txn: &dyn ReadTxn,
    code: &str,
    link_id: u64,
    from: i64,
    to: i64,
    granularity: Granularity,
    breakdown_max: usize,
) -> StoreResult<Stats> {
    let mut series: BTreeMap<u32, Point> = BTreeMap::new();
    let mut dims: [HashMap<String, u64>; 6] = Default::default();
    scan(
        txn,
        link_id,
        granularity,
        from,
        to,
        &mut |bucket, dimension, name, n| {
            if dimension == dim::KIND {
                let point = series.entry(bucket).or_insert_with(|| Point {
                    t: time::OffsetDateTime::from_unix_timestamp(granularity.start(bucket))
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                    total: 0,
                    human: 0,
                    bot: 0,
                    preview: 0,
                    head: 0,
                });
                match name {
                    "human" => point.human += n,
                    "bot" => point.bot += n,
                    "preview" => point.preview += n,
                    "head" => point.head += n,
                    _ => {}
                }
            } else if granularity == Granularity::Day {
                add_dim(&mut dims, dimension, name, n);
            }
        },
    )?;
    if granularity == Granularity::Hour {
        // Breakdowns are kept per day: sum the days the period touches.
        scan(
            txn,
            link_id,
            Granularity::Day,
            from,
            to,
            &mut |_, dimension, name, n| {
                if dimension != dim::KIND {
                    add_dim(&mut dims, dimension, name, n);
                }
            },
        )?;
    }
    let mut stats = Stats {
        code: code.to_owned(),
        // Named by the caller, which knows the domains.
        domain: String::new(),
        from: time::OffsetDateTime::from_unix_timestamp(from)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        to: time::OffsetDateTime::from_unix_timestamp(to)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        granularity,
        total_clicks: 0,
        human_clicks: 0,
        bot_clicks: 0,
        preview_clicks: 0,
        head_requests: 0,
        series: Vec::with_capacity(series.len()),
        referrers: Vec::new(),
        countries: Vec::new(),
        browsers: Vec::new(),
        os: Vec::new(),
        devices: Vec::new(),
        routes: Vec::new(),
    };
    for (_, mut point) in series {
        point.total = point.human + point.bot + point.preview;
        stats.total_clicks += point.total;
        stats.human_clicks += point.human;
        stats.bot_clicks += point.bot;
        stats.preview_clicks += point.preview;
        stats.head_requests += point.head;
        stats.series.push(point);
    }
    let [referrers, countries, browsers, os, devices, routes] = dims;
    stats.referrers = sorted(referrers, breakdown_max);
    stats.countries = sorted(countries, breakdown_max);
    stats.browsers = sorted(browsers, breakdown_max);
    stats.os = sorted(os, breakdown_max);
    stats.devices = sorted(devices, breakdown_max);
    stats.routes = sorted(routes, breakdown_max);
    Ok(stats)
}

fn add_dim(dims: &mut [HashMap<String, u64>; 6], dimension: u8, name: &str, n: u64) {
    let slot = match dimension {
        dim::REFERRER => 0,
        dim::COUNTRY => 1,
        dim::BROWSER => 2,
        dim::OS => 3,
        dim::DEVICE => 4,
        dim::ROUTE => 5,
        _ => return,
    };
    *dims[slot].entry(name.to_owned()).or_default() += n;
}

/// Calls `visit(bucket, dimension, value, count)` for every counter of a
/// link's buckets from the one holding `from` to the one holding `to - 1`.
fn scan(
    txn: &dyn ReadTxn,
    link_id: u64,
    granularity: Granularity,
    from: i64,
    to: i64,
    visit: &mut dyn FnMut(u32, u8, &str, u64),
) -> StoreResult<()> {
    let first = granularity.bucket(from);
    let last = granularity.bucket((to - 1).max(from));
    let prefix = series_prefix(link_id, granularity);
    let mut start = prefix.clone();
    start.extend_from_slice(&first.to_be_bytes());
    let end = match last.checked_add(1) {
        Some(next) => {
            let mut end = prefix.clone();
            end.extend_from_slice(&next.to_be_bytes());
            end
        }
        None => crate::db::prefix_end(&prefix),
    };
    loop {
        let page = txn.range(Space::Counters, &start, &end, PAGE)?;
        let full = page.len() == PAGE;
        for (key, value) in &page {
            let rest = &key[prefix.len()..];
            if rest.len() < 5 {
                continue;
            }
            let bucket = u32::from_be_bytes(rest[..4].try_into().expect("four bytes"));
            let name = String::from_utf8_lossy(&rest[5..]);
            visit(
                bucket,
                rest[4],
                &name,
                u64::try_from(counter_value(value)).unwrap_or(0),
            );
        }
        match page.last() {
            Some((key, _)) if full => {
                start.clone_from(key);
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// Human clicks per link over whole days `from_day..=to_day`, largest first.
pub fn top_links(
    txn: &dyn ReadTxn,
    from_day: u32,
    to_day: u32,
    limit: usize,
) -> StoreResult<Vec<(u64, u64)>> {
    let mut totals: HashMap<u64, u64> = HashMap::new();
    let mut start = keys::top(from_day, 0);
    let end = keys::top(to_day.saturating_add(1), 0);
    loop {
        let page = txn.range(Space::Counters, &start, &end, PAGE)?;
        let full = page.len() == PAGE;
        for (key, value) in &page {
            let Some(id) = key.get(5..13).and_then(|b| b.try_into().ok()) else {
                continue;
            };
            *totals.entry(u64::from_be_bytes(id)).or_default() +=
                u64::try_from(counter_value(value)).unwrap_or(0);
        }
        match page.last() {
            Some((key, _)) if full => {
                start.clone_from(key);
                start.push(0);
            }
            _ => break,
        }
    }
    let mut ranked: Vec<(u64, u64)> = totals.into_iter().collect();
    ranked.sort_by_key(|&(id, clicks)| (std::cmp::Reverse(clicks), id));
    ranked.truncate(limit);
    Ok(ranked)
}
