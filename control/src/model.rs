//! Documents kept in the store, and their conversions.

use serde::{Deserialize, Serialize};
use shortline_store::routing::{Encoded, Routing};
use shortline_store::{
    Code, LinkId, LinkRecord, LinkStatus, PreviousTarget, RedirectStatus, Target,
};

use crate::db::StoreError;

/// A link as stored (JSON in the `Links` space).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkDoc {
    pub id: LinkId,
    pub code: Code,
    pub url: Target,
    pub owner: String,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    pub max_clicks: Option<u64>,
    pub redirect: RedirectStatus,
    pub status: LinkStatus,
    pub forward_query: bool,
    pub tags: Vec<String>,
    pub title: Option<String>,
    /// Why the link is flagged, when it is. Flags set by a blocklist entry
    /// or the threat list are lifted when that entry or match goes away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_reason: Option<FlagReason>,
    /// Only an admin may change the target, or unlock it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub target_locked: bool,
    /// Changes of the target since the link was made; each is an entry of
    /// its history ([`HistoryDoc`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub target_changes: u32,
    /// When the target last changed (Unix seconds); `None` if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_changed_at: Option<i64>,
    /// The last few targets it had, oldest first, for the proxies' preview
    /// page ([`PREVIOUS_TARGETS_KEPT`]); the whole history is in `History`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_targets: Vec<PreviousTarget>,
    /// Targeting rules and a split, evaluated by the proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Box<Routing>>,
}

/// Targets a link's record keeps for the preview page.
pub const PREVIOUS_TARGETS_KEPT: usize = 5;

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One change of a link's target, kept for as long as the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryDoc {
    /// Unix seconds.
    pub at: i64,
    pub from: String,
    pub to: String,
    /// The name of the key that made the change.
    pub by: String,
}

impl HistoryDoc {
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("history entry: {e}")))
    }

    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a history entry always serialises")
    }
}

/// Why a link is flagged. Stored and shown as its string form: `admin`,
/// `report`, `blocklist:<domain>` or `threat_list`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FlagReason {
    /// An admin set the status to `flagged`.
    Admin,
    /// An admin resolved an abuse report with `flag`.
    Report,
    /// The blocklist entry for this domain covers the target.
    Blocklist(String),
    /// The target matches the threat list.
    ThreatList,
}

const BLOCKLIST_PREFIX: &str = "blocklist:";

impl std::fmt::Display for FlagReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::Report => f.write_str("report"),
            Self::Blocklist(domain) => write!(f, "{BLOCKLIST_PREFIX}{domain}"),
            Self::ThreatList => f.write_str("threat_list"),
        }
    }
}

impl From<FlagReason> for String {
    fn from(reason: FlagReason) -> Self {
        reason.to_string()
    }
}

impl TryFrom<String> for FlagReason {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "admin" => Ok(Self::Admin),
            "report" => Ok(Self::Report),
            "threat_list" => Ok(Self::ThreatList),
            other => match other.strip_prefix(BLOCKLIST_PREFIX) {
                Some(domain) if !domain.is_empty() => Ok(Self::Blocklist(domain.to_owned())),
                _ => Err(format!("{other:?} is not a flag reason")),
            },
        }
    }
}

/// How a code is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Counter,
    Random,
    Hash,
    Uuid,
}

impl Strategy {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Random => "random",
            Self::Hash => "hash",
            Self::Uuid => "uuid",
        }
    }
}

/// Unix milliseconds as RFC 3339, UTC, to the millisecond.
#[must_use]
pub fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Now, in Unix seconds: the clock of every time the store keeps.
#[must_use]
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_reasons_keep_their_string_form() {
        for (reason, text) in [
            (FlagReason::Admin, "admin"),
            (FlagReason::Report, "report"),
            (FlagReason::ThreatList, "threat_list"),
            (
                FlagReason::Blocklist("evil.example".into()),
                "blocklist:evil.example",
            ),
        ] {
            assert_eq!(reason.to_string(), text);
            assert_eq!(FlagReason::try_from(text.to_owned()), Ok(reason.clone()));
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("{text:?}"));
            assert_eq!(serde_json::from_str::<FlagReason>(&json).unwrap(), reason);
        }
        for bad in ["", "blocklist:", "moderator"] {
            assert!(FlagReason::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}

impl LinkDoc {
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("link document: {e}")))
    }

    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a link document always serialises")
    }

    /// The record the data plane serves for this link.
    #[must_use]
    pub fn record(&self) -> LinkRecord {
        LinkRecord {
            code: self.code.clone(),
            target: self.url.clone(),
            link_id: self.id,
            status: self.status,
            redirect: self.redirect,
            expires_at: self.expires_at,
            forward_query: self.forward_query,
            changed_at: self.target_changed_at,
            previous: self.previous_targets.clone(),
            routing: self.routing.as_deref().and_then(Encoded::new),
        }
    }
}

/// A change as logged: the code and its new record, or `None` when deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeDoc {
    pub code: Code,
    pub record: Option<LinkRecord>,
    /// What happened to the link, for webhook subscriptions; logged only
    /// while one is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<LinkEvent>,
}

/// A link's change as webhooks see it: the kind and the link as it is now
/// (as it was, for a deletion).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkEvent {
    pub kind: EventKind,
    pub link: Box<LinkDoc>,
}

/// What a webhook subscription can be told about.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum EventKind {
    #[serde(rename = "link.created")]
    Created,
    /// Any change but a flag: target, settings, status, expiry, exhaustion.
    #[serde(rename = "link.updated")]
    Updated,
    #[serde(rename = "link.deleted")]
    Deleted,
    /// Flagged by an admin, a report, the blocklist or the threat list.
    #[serde(rename = "link.flagged")]
    Flagged,
    /// Clicks counted, batched: one event per link set per flush.
    #[serde(rename = "link.clicks")]
    Clicks,
}

impl EventKind {
    pub const ALL: [Self; 5] = [
        Self::Created,
        Self::Updated,
        Self::Deleted,
        Self::Flagged,
        Self::Clicks,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "link.created",
            Self::Updated => "link.updated",
            Self::Deleted => "link.deleted",
            Self::Flagged => "link.flagged",
            Self::Clicks => "link.clicks",
        }
    }
}

/// A webhook subscription, with where its deliveries stand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookDoc {
    pub id: String,
    pub url: String,
    pub events: Vec<EventKind>,
    /// Whose links it hears about; `None` for every link (an admin's).
    pub owner: Option<String>,
    /// The name of the key that made it.
    pub created_by: String,
    pub created_at: i64,
    /// The HMAC-SHA256 key of its signatures.
    pub secret: String,
    pub enabled: bool,
    /// Why it was disabled, when it was by failing.
    pub disabled_reason: Option<String>,
    /// Events queued for it, ever: the next one's queue number.
    pub queued: u64,
    /// Events delivered, ever.
    pub delivered: u64,
    /// Attempts logged, ever: the next one's log number.
    pub logged: u64,
    /// When the event at the head of the queue first failed (Unix ms).
    pub failing_since: Option<i64>,
    /// Failed attempts of the event at the head of the queue.
    pub attempts: u32,
    /// Not before this (Unix ms) is the head tried again.
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

impl WebhookDoc {
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("webhook document: {e}")))
    }

    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a webhook document always serialises")
    }
}

/// One delivery attempt, in a subscription's log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptDoc {
    /// Unix ms.
    pub at: i64,
    pub event_id: String,
    pub event_type: String,
    /// The receiver's status; absent when none came back.
    pub status: Option<u16>,
    /// Why it failed; absent on success.
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Which attempt of this event it was, from 1.
    pub attempt: u32,
}

impl ChangeDoc {
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a change always serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("change document: {e}")))
    }
}

/// The role of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Own links only.
    User,
}

/// A person's account. Their links are owned by their email.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDoc {
    pub id: String,
    /// Lowercase; also the owner of the links the user makes.
    pub email: String,
    pub role: Role,
    /// The argon2id PHC string; `None` until an invitation is accepted.
    pub password_hash: Option<String>,
    pub created_at: i64,
    /// Who invited them (a key's or user's name).
    pub created_by: String,
    pub disabled: bool,
    /// Failed sign-ins since the last success or lock-out.
    pub failed_logins: u32,
    /// No sign-in before this (Unix seconds), after too many failures.
    pub locked_until: Option<i64>,
    pub password_changed_at: Option<i64>,
    pub last_login_at: Option<i64>,
}

/// A signed-in browser session, stored under its token's SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionDoc {
    /// Names it in lists and revocations; never the token.
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The CSRF token every unsafe request of the session must carry.
    pub csrf: String,
    pub address: String,
    pub user_agent: String,
}

/// What a one-time token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Set the first password of an invited account.
    Invitation,
    /// Set a new password, chosen by an admin's reset.
    Reset,
}

/// A one-time token, stored under its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserTokenDoc {
    pub kind: TokenKind,
    pub user_id: String,
    pub expires_at: i64,
}

macro_rules! json_doc {
    ($($doc:ty => $what:literal),* $(,)?) => {$(
        impl $doc {
            pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
                serde_json::from_slice(bytes)
                    .map_err(|e| StoreError::Corrupt(format!(concat!($what, ": {}"), e)))
            }

            #[must_use]
            pub fn encode(&self) -> Vec<u8> {
                serde_json::to_vec(self).expect("a stored document always serialises")
            }
        }
    )*};
}

json_doc!(UserDoc => "user document", SessionDoc => "session document", UserTokenDoc => "user token");

/// An API key as stored: never the token, only its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyDoc {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub owner: String,
    pub created_at: i64,
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
    /// The short domains a user key may create and manage links on; `None`
    /// for every domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<String>>,
    /// The user the key belongs to and acts as (their role and links); the
    /// key stops working when the user is disabled or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl KeyDoc {
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("key document: {e}")))
    }

    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a key document always serialises")
    }
}
