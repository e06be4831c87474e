//! Helpers of the JSON shapes: times as the API shows them, and fields
//! that may be absent, null or set.

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 in UTC, to the second: every time the API shows.
#[must_use]
pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The last second the API can show: `9999-12-31T23:59:59Z`.
pub const UNIX_MAX: i64 = 253_402_300_799;

/// Parses an RFC 3339 time given in a request. A time the API could not
/// show back (before 1970, or past year 9999 once in UTC, such as
/// `9999-12-31T23:59:59-23:59`) is refused rather than stored.
pub fn parse_rfc3339(field: &str, text: &str) -> Result<i64, super::problem::ApiError> {
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| {
            super::problem::ApiError::invalid(
                field,
                format!("{text:?} is not an RFC 3339 time: {e}"),
            )
        })?
        .unix_timestamp();
    if !(0..=UNIX_MAX).contains(&at) {
        return Err(super::problem::ApiError::invalid(
            field,
            format!("{text:?} is outside 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"),
        ));
    }
    Ok(at)
}

/// Deserialises a field that may be absent (`None`), null (`Some(None)`) or set.
pub fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Largest page of a list that is not links (the blocklist, the report
/// queue, a link's history).
pub const PAGE_MAX: usize = 1000;
/// A page's size when the request names none.
pub const PAGE_DEFAULT: usize = 100;

/// The `limit` of a page: [`PAGE_DEFAULT`] when absent, 1 to [`PAGE_MAX`].
pub fn page_limit(limit: Option<usize>) -> Result<usize, super::problem::ApiError> {
    match limit.unwrap_or(PAGE_DEFAULT) {
        n @ 1..=PAGE_MAX => Ok(n),
        _ => Err(super::problem::ApiError::invalid(
            "limit",
            format!("must be 1 to {PAGE_MAX}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_the_api_cannot_show_are_refused() {
        assert_eq!(
            parse_rfc3339("t", "9999-12-31T23:59:59Z").unwrap(),
            UNIX_MAX
        );
        assert_eq!(rfc3339(UNIX_MAX), "9999-12-31T23:59:59Z");
        for text in [
            "9999-12-31T23:59:59-23:59",
            "1969-12-31T23:59:59Z",
            "0000-01-01T00:00:00+01:00",
            "yesterday",
        ] {
            let error = parse_rfc3339("t", text).unwrap_err();
            assert!(error.to_string().starts_with("t: "), "{text}: {error}");
        }
    }
}
