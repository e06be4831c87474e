//! Documents kept in the store, and their conversions.

use serde::{Deserialize, Serialize};
use shortline_store::{Code, LinkId, LinkRecord, LinkStatus, RedirectStatus, Target};

use crate::store::StoreError;

/// A link as stored (JSON in the `Links` space).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkDoc {
    pub id: u64,
    pub code: String,
    pub url: String,
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
    /// Why the link is flagged, when it is: `admin`, `report`,
    /// `blocklist:<domain>` or `threat_list`. Flags set by a blocklist entry
    /// or the threat list are lifted when that entry or match goes away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_reason: Option<String>,
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
    pub fn record(&self) -> Result<LinkRecord, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("link {}: {e}", self.code));
        Ok(LinkRecord {
            code: Code::parse(&self.code).map_err(|e| corrupt(e.to_string()))?,
            target: Target::parse(&self.url).map_err(|e| corrupt(e.to_string()))?,
            link_id: LinkId(self.id),
            status: self.status,
            redirect: self.redirect,
            expires_at: self.expires_at,
            forward_query: self.forward_query,
        })
    }
}

/// A change as logged: the code and its new record, or `None` when deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeDoc {
    pub code: Code,
    pub record: Option<LinkRecord>,
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
