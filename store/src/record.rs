//! The link record: what the data plane needs to answer a code.

use crate::code::{Code, Target};

/// A position in the control plane's change log. Every committed change has
/// one; a snapshot covers every change up to and including its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct Seq(pub u64);

/// A link's stable numeric id, used to attribute clicks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct LinkId(pub u64);

/// The moderation and lifecycle state of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
#[repr(u8)]
pub enum LinkStatus {
    #[default]
    Active = 0,
    Disabled = 1,
    Flagged = 2,
    Expired = 3,
    Exhausted = 4,
}

impl LinkStatus {
    pub(crate) fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0 => Self::Active,
            1 => Self::Disabled,
            2 => Self::Flagged,
            3 => Self::Expired,
            4 => Self::Exhausted,
            _ => return None,
        })
    }

    /// The lowercase name used in JSON and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Flagged => "flagged",
            Self::Expired => "expired",
            Self::Exhausted => "exhausted",
        }
    }
}

/// The HTTP status a redirect answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "u16", into = "u16"))]
pub enum RedirectStatus {
    /// 301: permanent; browsers cache it, so later clicks are not seen.
    Moved,
    /// 302: the default, so every click reaches the proxy.
    #[default]
    Found,
    /// 307: temporary, method preserved.
    Temporary,
    /// 308: permanent, method preserved.
    Permanent,
}

impl RedirectStatus {
    pub(crate) fn to_bits(self) -> u8 {
        match self {
            Self::Moved => 0,
            Self::Found => 1,
            Self::Temporary => 2,
            Self::Permanent => 3,
        }
    }

    pub(crate) fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => Self::Moved,
            1 => Self::Found,
            2 => Self::Temporary,
            _ => Self::Permanent,
        }
    }

    /// The numeric HTTP status code.
    #[must_use]
    pub fn code(self) -> u16 {
        match self {
            Self::Moved => 301,
            Self::Found => 302,
            Self::Temporary => 307,
            Self::Permanent => 308,
        }
    }

    /// Maps an HTTP status code to a redirect status, if it is one.
    #[must_use]
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            301 => Self::Moved,
            302 => Self::Found,
            307 => Self::Temporary,
            308 => Self::Permanent,
            _ => return None,
        })
    }

    /// Whether browsers and caches may keep the answer.
    #[must_use]
    pub fn is_permanent(self) -> bool {
        matches!(self, Self::Moved | Self::Permanent)
    }
}

impl TryFrom<u16> for RedirectStatus {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, String> {
        Self::from_code(code)
            .ok_or_else(|| format!("{code} is not a redirect status (301, 302, 307 or 308)"))
    }
}

impl From<RedirectStatus> for u16 {
    fn from(status: RedirectStatus) -> Self {
        status.code()
    }
}

/// One link as the data plane needs it, owned. Invariants live in the field
/// types: [`Code`] and [`Target`] can only hold valid values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LinkRecord {
    pub code: Code,
    pub target: Target,
    pub link_id: LinkId,
    pub status: LinkStatus,
    pub redirect: RedirectStatus,
    /// Unix seconds after which the link answers 410.
    pub expires_at: Option<i64>,
    /// Whether the request's query string is appended to the target.
    pub forward_query: bool,
    /// Unix seconds of the target's last change; `None` if it never
    /// changed. The preview page shows it.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub changed_at: Option<i64>,
    /// The targets the link had before, oldest first (the control plane
    /// keeps the last few): the preview page lists them.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub previous: Vec<PreviousTarget>,
    /// Targeting rules and a split, when the link has them.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub routing: Option<crate::routing::Encoded>,
}

/// A target a link had, and when it was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PreviousTarget {
    /// Unix seconds when the next target replaced it.
    pub until: i64,
    pub target: Target,
}

/// The previous targets of a [`LinkView`]: still encoded in a snapshot's
/// record, or a record's own list. Read only by the preview page, so a
/// lookup never decodes them.
#[derive(Debug, Clone, Copy)]
pub enum Previous<'a> {
    /// Extension items as a record holds them (`extension.rs`).
    Encoded(&'a [u8]),
    Owned(&'a [PreviousTarget]),
}

impl<'a> Previous<'a> {
    /// `(until, target)`, oldest first.
    pub fn iter(self) -> impl Iterator<Item = (i64, &'a [u8])> {
        let (mut items, owned) = match self {
            Self::Encoded(items) => (items, [].iter()),
            Self::Owned(list) => (&[][..], list.iter()),
        };
        let encoded = std::iter::from_fn(move || {
            while let Some((tag, value, rest)) = crate::extension::next(items) {
                items = rest;
                if tag == crate::extension::PREVIOUS_TARGET && value.len() >= 8 {
                    let until = i64::from_le_bytes(value[..8].try_into().ok()?);
                    return Some((until, &value[8..]));
                }
            }
            None
        });
        encoded.chain(owned.map(|p| (p.until, p.target.as_str().as_bytes())))
    }
}

impl PartialEq for Previous<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Previous<'_> {}

impl LinkRecord {
    /// An active 302 link without expiry or query forwarding.
    #[must_use]
    pub fn new(code: Code, target: Target, link_id: LinkId) -> Self {
        Self {
            code,
            target,
            link_id,
            status: LinkStatus::Active,
            redirect: RedirectStatus::Found,
            expires_at: None,
            forward_query: false,
            changed_at: None,
            previous: Vec::new(),
            routing: None,
        }
    }

    /// Borrows this record as a [`LinkView`].
    #[must_use]
    pub fn view(&self) -> LinkView<'_> {
        LinkView {
            code: self.code.as_bytes(),
            target: self.target.as_str().as_bytes(),
            link_id: self.link_id,
            status: self.status,
            redirect: self.redirect,
            expires_at: self.expires_at,
            forward_query: self.forward_query,
            changed_at: self.changed_at,
            previous: Previous::Owned(&self.previous),
            routing: self.routing.as_ref().map(crate::routing::Encoded::as_bytes),
        }
    }
}

/// What a link resolves to at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Redirect to the target.
    Redirect,
    /// Gone (410) for the given reason.
    Gone(LinkStatus),
    /// Show the warning page instead of redirecting.
    Flagged,
}

/// A link borrowed from a snapshot or the overlay. Nothing is copied: the byte
/// slices point into the memory map or the overlay's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkView<'a> {
    pub(crate) code: &'a [u8],
    pub(crate) target: &'a [u8],
    pub link_id: LinkId,
    pub status: LinkStatus,
    pub redirect: RedirectStatus,
    pub expires_at: Option<i64>,
    pub forward_query: bool,
    /// Unix seconds of the target's last change; `None` if never.
    pub changed_at: Option<i64>,
    /// The targets it had before, oldest first.
    pub previous: Previous<'a>,
    /// Its rules and split, encoded ([`crate::routing::route`]).
    pub routing: Option<&'a [u8]>,
}

impl<'a> LinkView<'a> {
    /// The code, as ASCII bytes.
    #[must_use]
    pub fn code(&self) -> &'a [u8] {
        self.code
    }

    /// The target, as bytes free of control characters (checked when the
    /// record was written).
    #[must_use]
    pub fn target(&self) -> &'a [u8] {
        self.target
    }

    /// The target as text, if it is valid UTF-8 (always so for records written
    /// by this crate).
    #[must_use]
    pub fn target_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.target).ok()
    }

    /// What the link does at `now_unix_seconds`, folding expiry into status.
    #[must_use]
    pub fn resolve(&self, now_unix_seconds: i64) -> Resolution {
        match self.status {
            LinkStatus::Active => match self.expires_at {
                Some(at) if at <= now_unix_seconds => Resolution::Gone(LinkStatus::Expired),
                _ => Resolution::Redirect,
            },
            LinkStatus::Flagged => Resolution::Flagged,
            gone => Resolution::Gone(gone),
        }
    }

    /// Copies the view into an owned record, if its bytes are valid.
    #[must_use]
    pub fn to_record(&self) -> Option<LinkRecord> {
        let code = Code::key(std::str::from_utf8(self.code).ok()?).ok()?;
        let target = Target::parse(self.target_str()?).ok()?;
        Some(LinkRecord {
            code,
            target,
            link_id: self.link_id,
            status: self.status,
            redirect: self.redirect,
            expires_at: self.expires_at,
            forward_query: self.forward_query,
            changed_at: self.changed_at,
            previous: self
                .previous
                .iter()
                .map(|(until, target)| {
                    Some(PreviousTarget {
                        until,
                        target: Target::parse(std::str::from_utf8(target).ok()?).ok()?,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
            routing: match self.routing {
                Some(bytes) => Some(crate::routing::Encoded::from_bytes(bytes)?),
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_folds_expiry_into_active_links_only() {
        let mut record = LinkRecord::new(
            Code::parse("a").unwrap(),
            Target::parse("https://e.com/").unwrap(),
            LinkId(1),
        );
        assert_eq!(record.view().resolve(100), Resolution::Redirect);
        record.expires_at = Some(100);
        assert_eq!(record.view().resolve(99), Resolution::Redirect);
        assert_eq!(
            record.view().resolve(100),
            Resolution::Gone(LinkStatus::Expired)
        );
        record.status = LinkStatus::Flagged;
        assert_eq!(record.view().resolve(0), Resolution::Flagged);
        record.status = LinkStatus::Disabled;
        assert_eq!(
            record.view().resolve(0),
            Resolution::Gone(LinkStatus::Disabled)
        );
    }

    #[test]
    fn redirect_codes_round_trip() {
        for code in [301, 302, 307, 308] {
            let status = RedirectStatus::from_code(code).unwrap();
            assert_eq!(status.code(), code);
            assert_eq!(RedirectStatus::from_bits(status.to_bits()), status);
        }
        assert_eq!(RedirectStatus::from_code(200), None);
    }
}
