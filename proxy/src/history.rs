//! A link's whole destination history for its preview page
//! (`/{code}+?history`), fetched from control, which alone keeps every
//! change; the snapshot record carries the last few
//! ([`LinkView::previous`](shortline_store::LinkView::previous)), which the plain
//! preview shows.
//!
//! The page is rare and the redirect path never waits on it. Each fetch
//! counts against the client's enumeration budget, so one client cannot
//! turn the proxies into a flood on control; a few run at a time, and one
//! more is told to come back (503) rather than queued.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;

use crate::upstream::{HttpClient, http_client};

/// Fetches at once, across the whole proxy.
const IN_FLIGHT_MAX: usize = 8;

/// How long a fetch may take, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// Changes per page.
pub const PAGE_CHANGES: usize = 200;

/// A history page to fetch from control.
#[derive(Debug, PartialEq, Eq)]
pub struct HistoryAsk {
    /// The short domain's name; empty where the table has no domains.
    pub domain: String,
    pub code: String,
    /// List the changes after this one.
    pub after: u32,
    /// How the link is shown on its short domain (`s.example/abc`),
    /// escaped for HTML.
    pub short_name: String,
    /// The link no longer redirects (expired, used up, disabled).
    pub gone: bool,
    /// The preview page, sent when the history cannot be fetched.
    pub preview: String,
}

/// The history as control's `/internal/v1/history/{code}` answers it.
#[derive(Debug, Deserialize)]
pub struct History {
    pub url: String,
    pub created_at: String,
    pub target_changed_at: Option<String>,
    pub target_locked: bool,
    /// Oldest first.
    pub changes: Vec<Change>,
    /// The `history=` of the next page; `None` on the last.
    pub next_after: Option<u32>,
}

/// One change of the target.
#[derive(Debug, Deserialize)]
pub struct Change {
    pub n: u32,
    pub at: String,
    pub from: String,
    pub to: String,
}

/// Why a history was not fetched.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("as many history fetches as allowed are running")]
    Busy,
    #[error("control does not know the link")]
    NotFound,
    #[error("control cannot be asked: {0}")]
    Unreachable(String),
}

/// The proxy's internal token, when it has one (control writes it at its
/// first start).
pub type TokenSource = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// Where histories come from: control, over the proxy's internal token.
pub struct HistorySource {
    client: HttpClient,
    /// Control's base URL.
    base: String,
    token: TokenSource,
    permits: tokio::sync::Semaphore,
}

impl std::fmt::Debug for HistorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistorySource")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl HistorySource {
    #[must_use]
    pub fn new(base: String, token: TokenSource) -> Self {
        Self {
            client: http_client(),
            base,
            token,
            permits: tokio::sync::Semaphore::new(IN_FLIGHT_MAX),
        }
    }

    /// One page of the history `ask` names.
    pub async fn fetch(&self, ask: &HistoryAsk) -> Result<History, HistoryError> {
        let _permit = self.permits.try_acquire().map_err(|_| HistoryError::Busy)?;
        let token = (self.token)()
            .ok_or_else(|| HistoryError::Unreachable("no internal token yet".to_owned()))?;
        // Codes and domain names need no escaping in a URL: both are
        // checked to letters, digits and `-_.` before they are served.
        let mut url = format!(
            "{}/internal/v1/history/{}?after={}&limit={PAGE_CHANGES}",
            self.base, ask.code, ask.after
        );
        if !ask.domain.is_empty() {
            url.push_str("&domain=");
            url.push_str(&ask.domain);
        }
        let request = http::Request::get(url)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| HistoryError::Unreachable(e.to_string()))?;
        let fetch = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HistoryError::Unreachable(e.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| HistoryError::Unreachable(e.to_string()))?
                .to_bytes();
            if status == http::StatusCode::NOT_FOUND {
                return Err(HistoryError::NotFound);
            }
            if !status.is_success() {
                return Err(HistoryError::Unreachable(format!(
                    "control answered {status}"
                )));
            }
            serde_json::from_slice(&body)
                .map_err(|e| HistoryError::Unreachable(format!("control's answer: {e}")))
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| HistoryError::Unreachable("control did not answer in time".to_owned()))?
    }
}
