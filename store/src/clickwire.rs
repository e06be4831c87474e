//! The click batch wire format between proxies and control.
//!
//! Binary and compact: user agents and referrers repeat across a batch, so
//! each distinct string is sent once in a table and clicks refer to it by
//! index. Control parses each distinct agent once per batch instead of once
//! per click. All integers are little-endian.
//!
//! ```text
//! "SLCB" version:u8=2
//! proxy_id_len:u8 proxy_id batch_seq:u64
//! strings:u32 { len:u16 bytes }*
//! clicks:u32 { link_id:u64 at_unix_ms:u64 flags:u8 [ip:4|16] [route:u8] agent:u32 referrer:u32 }*
//! flags: bit 0 HEAD, bit 1 has IPv4 address, bit 2 has IPv6 address,
//!        bit 3 has route (version 2)
//! ```
//!
//! `route` says where a link with targeting rules or a split sent the
//! click ([`crate::routing::route_code`]). Version 1, without it, is still
//! read.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// First bytes of a batch.
pub const MAGIC: &[u8; 4] = b"SLCB";
/// The version written.
pub const VERSION: u8 = 2;
/// Content type of a batch.
pub const CONTENT_TYPE: &str = "application/x-shortline-clicks";

const FLAG_HEAD: u8 = 1;
const FLAG_V4: u8 = 2;
const FLAG_V6: u8 = 4;
const FLAG_ROUTE: u8 = 8;

/// One click of a decoded batch. Its user agent and referrer are indexes
/// into its batch's string table, checked by [`decode`], so only a decoded
/// batch makes clicks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireClick {
    pub link_id: u64,
    pub at_unix_ms: u64,
    pub head: bool,
    pub client: Option<IpAddr>,
    /// Where a link with rules or a split sent it; 0 for a plain link.
    pub route: u8,
    agent: u32,
    referrer: u32,
}

impl WireClick {
    /// The user agent's index in its batch's string table, below
    /// [`WireBatch::string_count`]: a key for per-batch caches.
    #[must_use]
    pub fn agent_index(&self) -> usize {
        self.agent as usize
    }

    /// The referrer's index in its batch's string table, below
    /// [`WireBatch::string_count`].
    #[must_use]
    pub fn referrer_index(&self) -> usize {
        self.referrer as usize
    }
}

/// A decoded batch. Made only by [`decode`], so every click's string
/// indexes are within the string table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireBatch {
    proxy_id: String,
    batch_seq: u64,
    strings: Vec<String>,
    clicks: Vec<WireClick>,
}

impl WireBatch {
    /// The sending proxy's id: 1 to 255 bytes.
    #[must_use]
    pub fn proxy_id(&self) -> &str {
        &self.proxy_id
    }

    /// The sender's sequence number of this batch.
    #[must_use]
    pub fn batch_seq(&self) -> u64 {
        self.batch_seq
    }

    /// The same batch under another sequence number (benchmarks replay one
    /// batch many times).
    #[must_use]
    pub fn with_batch_seq(mut self, batch_seq: u64) -> Self {
        self.batch_seq = batch_seq;
        self
    }

    /// The distinct strings the clicks refer to.
    #[must_use]
    pub fn string_count(&self) -> usize {
        self.strings.len()
    }

    /// The clicks, in the order the proxy captured them.
    #[must_use]
    pub fn clicks(&self) -> &[WireClick] {
        &self.clicks
    }

    /// A click's user agent. `click` must come from this batch.
    #[must_use]
    pub fn agent(&self, click: &WireClick) -> &str {
        debug_assert!(click.agent_index() < self.strings.len());
        self.strings
            .get(click.agent_index())
            .map_or("", String::as_str)
    }

    /// A click's referrer. `click` must come from this batch.
    #[must_use]
    pub fn referrer(&self, click: &WireClick) -> &str {
        debug_assert!(click.referrer_index() < self.strings.len());
        self.strings
            .get(click.referrer_index())
            .map_or("", String::as_str)
    }
}

/// Builds a batch click by click.
#[derive(Debug, Default)]
pub struct Encoder<'a> {
    index: HashMap<&'a [u8], u32>,
    strings: Vec<&'a [u8]>,
    clicks: Vec<u8>,
    count: u32,
}

impl<'a> Encoder<'a> {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn intern(&mut self, s: &'a [u8]) -> u32 {
        let s = &s[..s.len().min(u16::MAX as usize)];
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s);
        self.index.insert(s, i);
        i
    }

    /// Adds a click on a plain link.
    pub fn push(
        &mut self,
        link_id: u64,
        at_unix_ms: u64,
        head: bool,
        client: Option<IpAddr>,
        agent: &'a [u8],
        referrer: &'a [u8],
    ) {
        self.push_routed(link_id, at_unix_ms, head, client, 0, agent, referrer);
    }

    /// Adds a click and where the link's rules or split sent it (`route`,
    /// 0 for none).
    #[allow(clippy::too_many_arguments)] // one click's fields, in wire order
    pub fn push_routed(
        &mut self,
        link_id: u64,
        at_unix_ms: u64,
        head: bool,
        client: Option<IpAddr>,
        route: u8,
        agent: &'a [u8],
        referrer: &'a [u8],
    ) {
        let agent = self.intern(agent);
        let referrer = self.intern(referrer);
        let out = &mut self.clicks;
        out.extend_from_slice(&link_id.to_le_bytes());
        out.extend_from_slice(&at_unix_ms.to_le_bytes());
        let mut flags = if head { FLAG_HEAD } else { 0 };
        if route != 0 {
            flags |= FLAG_ROUTE;
        }
        match client {
            Some(IpAddr::V4(v4)) => {
                flags |= FLAG_V4;
                out.push(flags);
                out.extend_from_slice(&v4.octets());
            }
            Some(IpAddr::V6(v6)) => {
                flags |= FLAG_V6;
                out.push(flags);
                out.extend_from_slice(&v6.octets());
            }
            None => out.push(flags),
        }
        if route != 0 {
            out.push(route);
        }
        out.extend_from_slice(&agent.to_le_bytes());
        out.extend_from_slice(&referrer.to_le_bytes());
        self.count += 1;
    }

    /// The encoded batch.
    #[must_use]
    pub fn finish(&self, proxy_id: &str, batch_seq: u64) -> Vec<u8> {
        let id = &proxy_id.as_bytes()[..proxy_id.len().min(u8::MAX as usize)];
        let strings: usize = self.strings.iter().map(|s| s.len() + 2).sum();
        let mut out = Vec::with_capacity(32 + id.len() + strings + self.clicks.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&batch_seq.to_le_bytes());
        out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
        for s in &self.strings {
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s);
        }
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.clicks);
        out
    }
}

/// Why a batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a click batch (bad magic)")]
    Magic,
    #[error("click batch version {0} is not supported")]
    Version(u8),
    #[error("click batch is truncated at byte {0}")]
    Truncated(usize),
    #[error("click batch has {0} bytes after its last click")]
    Trailing(usize),
    #[error("click {0} refers to string {1}, beyond the table")]
    BadString(usize, u32),
    #[error("click batch field is not UTF-8: {0}")]
    Utf8(&'static str),
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(WireError::Truncated(self.at))?;
        let out = self
            .bytes
            .get(self.at..end)
            .ok_or(WireError::Truncated(self.at))?;
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
}

/// Decodes a batch, checking every length and index.
pub fn decode(bytes: &[u8]) -> Result<WireBatch, WireError> {
    let mut c = Cursor { bytes, at: 0 };
    if c.take(4).map_err(|_| WireError::Magic)? != MAGIC {
        return Err(WireError::Magic);
    }
    let version = c.u8()?;
    if !(1..=VERSION).contains(&version) {
        return Err(WireError::Version(version));
    }
    let id_len = c.u8()? as usize;
    let proxy_id = std::str::from_utf8(c.take(id_len)?)
        .map_err(|_| WireError::Utf8("proxy_id"))?
        .to_owned();
    let batch_seq = u64::from_le_bytes(c.array()?);
    let string_count = u32::from_le_bytes(c.array()?) as usize;
    // Each string takes at least two bytes: a lie about the count is caught
    // before anything is allocated for it.
    if string_count > bytes.len() / 2 {
        return Err(WireError::Truncated(c.at));
    }
    let mut strings = Vec::with_capacity(string_count);
    for _ in 0..string_count {
        let len = u16::from_le_bytes(c.array()?) as usize;
        // Headers may hold any bytes; keep what is valid.
        strings.push(String::from_utf8_lossy(c.take(len)?).into_owned());
    }
    let click_count = u32::from_le_bytes(c.array()?) as usize;
    if click_count > bytes.len() / 25 {
        return Err(WireError::Truncated(c.at));
    }
    let mut clicks = Vec::with_capacity(click_count);
    for i in 0..click_count {
        let link_id = u64::from_le_bytes(c.array()?);
        let at_unix_ms = u64::from_le_bytes(c.array()?);
        let flags = c.u8()?;
        let client = if flags & FLAG_V4 != 0 {
            Some(IpAddr::V4(Ipv4Addr::from(c.array::<4>()?)))
        } else if flags & FLAG_V6 != 0 {
            Some(IpAddr::V6(Ipv6Addr::from(c.array::<16>()?)))
        } else {
            None
        };
        let route = if version >= 2 && flags & FLAG_ROUTE != 0 {
            c.u8()?
        } else {
            0
        };
        let agent = u32::from_le_bytes(c.array()?);
        let referrer = u32::from_le_bytes(c.array()?);
        for s in [agent, referrer] {
            if s as usize >= strings.len() {
                return Err(WireError::BadString(i, s));
            }
        }
        clicks.push(WireClick {
            link_id,
            at_unix_ms,
            head: flags & FLAG_HEAD != 0,
            client,
            route,
            agent,
            referrer,
        });
    }
    if c.at != bytes.len() {
        return Err(WireError::Trailing(bytes.len() - c.at));
    }
    Ok(WireBatch {
        proxy_id,
        batch_seq,
        strings,
        clicks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut e = Encoder::new();
        e.push(
            7,
            1000,
            false,
            Some("203.0.113.9".parse().unwrap()),
            b"ua-1",
            b"",
        );
        e.push(
            8,
            1001,
            true,
            Some("2001:db8::1".parse().unwrap()),
            b"ua-1",
            b"https://r/",
        );
        e.push(9, 1002, false, None, b"ua-2", b"");
        e.push_routed(
            10,
            1003,
            false,
            Some("203.0.113.9".parse().unwrap()),
            33,
            b"ua-2",
            b"",
        );
        e.finish("proxy-a", 42)
    }

    #[test]
    fn batches_round_trip_with_shared_strings() {
        let batch = decode(&sample()).unwrap();
        assert_eq!((batch.proxy_id(), batch.batch_seq()), ("proxy-a", 42));
        assert_eq!(batch.strings, ["ua-1", "", "https://r/", "ua-2"]);
        assert_eq!(batch.string_count(), 4);
        let clicks = batch.clicks();
        assert_eq!(clicks.len(), 4);
        assert_eq!(
            clicks.iter().map(|c| c.route).collect::<Vec<_>>(),
            [0, 0, 0, 33]
        );
        assert_eq!(clicks[3].client, clicks[0].client);
        assert!(clicks[1].head);
        assert_eq!(clicks[1].client, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(batch.referrer(&clicks[1]), "https://r/");
        assert_eq!(batch.agent(&clicks[2]), "ua-2");
        assert_eq!(clicks[2].client, None);
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "{len}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(WireError::Trailing(1)));
        let mut bad = bytes;
        bad[4] = 9;
        assert_eq!(decode(&bad), Err(WireError::Version(9)));
    }

    #[test]
    fn a_version_1_batch_is_still_read() {
        let mut e = Encoder::new();
        e.push(
            7,
            1000,
            false,
            Some("203.0.113.9".parse().unwrap()),
            b"ua",
            b"",
        );
        let mut bytes = e.finish("p", 1);
        bytes[4] = 1;
        let batch = decode(&bytes).unwrap();
        assert_eq!(batch.clicks()[0].route, 0);
        assert_eq!(batch.clicks()[0].link_id, 7);
    }

    #[test]
    fn out_of_table_strings_and_lying_counts_are_refused() {
        let mut e = Encoder::new();
        e.push(1, 1, false, None, b"a", b"a");
        let mut bytes = e.finish("p", 1);
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(decode(&bytes), Err(WireError::BadString(0, 5)));
        let mut huge = e.finish("p", 1);
        let at = 4 + 1 + 1 + 1 + 8;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
    }
}
