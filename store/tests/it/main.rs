//! Integration tests of the snapshot table: files on disk, property tests
//! against a `HashMap` model, corruption, concurrency and allocation counting.

mod alloc;
mod blocks;
mod concurrency;
mod corruption;
mod files;
mod model;

use shortline_store::{Code, LinkId, LinkRecord, LinkStatus, RedirectStatus, Target};

/// A record whose every field is derived from `code` and `version`, so a reader
/// can tell a torn or stale entry from a good one.
pub fn record(code: &str, version: u64) -> LinkRecord {
    let mut record = LinkRecord::new(
        Code::parse(code).expect("test codes are valid"),
        Target::parse(&format!("https://example.com/{code}/v{version}")).expect("valid target"),
        LinkId(version),
    );
    record.redirect = [
        RedirectStatus::Found,
        RedirectStatus::Moved,
        RedirectStatus::Temporary,
    ][version as usize % 3];
    record.status = if version.is_multiple_of(7) {
        LinkStatus::Disabled
    } else {
        LinkStatus::Active
    };
    record.forward_query = version.is_multiple_of(2);
    record.expires_at = version.is_multiple_of(5).then_some(version as i64);
    record
}
