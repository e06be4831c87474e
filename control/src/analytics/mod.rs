//! Click analytics: clicks are classified and folded in memory, and the
//! folded counts are added to pre-aggregated counters in one store
//! transaction per flush, so stats never scan raw events.
//!
//! The counters and their keys are listed in [`crate::db::keys`].
//! Breakdowns have day resolution: the series has hourly and daily points,
//! the breakdowns of a period are summed over the days it touches (a tenth of
//! the keys an hourly breakdown needs). Referrers and countries are bounded:
//! once `analytics_top_n` distinct values are stored for a link on a day,
//! further values count as `other`. Hourly buckets are listed in
//! [`Space::StatsHours`](crate::db::Space::StatsHours) so the retention
//! sweep finds expired ones without scanning.

pub mod aggregate;
pub mod classify;
pub mod export;
pub mod stats;

pub use aggregate::Analytics;

pub use crate::db::keys::{Granularity, OTHER, dim};
