//! The extensions a record may carry after its target (format versions 4
//! and 5, flag bit 7): a `u16` length, then items of a tag byte, a `u16`
//! length and that many bytes. Readers skip tags they do not know.

/// When the target last changed, Unix seconds as an `i64`.
pub(crate) const CHANGED_AT: u8 = 1;
/// Repeated oldest first: a target the link had, as the Unix seconds
/// (`i64`) it was replaced, then its bytes.
pub(crate) const PREVIOUS_TARGET: u8 = 2;
/// Targeting rules and a split: [`crate::routing`]'s encoding.
pub(crate) const ROUTING: u8 = 3;

/// The first extension item of `items`: its tag, its value and the items
/// after it; `None` at the end or on an item that overruns `items`.
#[inline]
pub(crate) fn next(items: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = items.split_first()?;
    let len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let value = rest.get(2..2 + len)?;
    Some((tag, value, &rest[2 + len..]))
}
