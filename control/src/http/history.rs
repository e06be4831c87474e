//! `GET /api/v1/links/{code}/history`: every change of a link's target,
//! open to anyone. Bait and switch (a link that pointed somewhere harmless
//! and was changed after it spread) is the abuse this answers: whoever is
//! about to click can see where the link has pointed before. The key
//! behind each change is shown to the link's owner and admins only.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use serde::{Deserialize, Serialize};

use super::extract::{ApiPath, MaybeAuth, Shared, check_internal, read};
use super::links::{domain_of, link_key};
use super::problem::{ApiError, AppResult};
use super::wire::{page_limit, rfc3339};
use crate::domain::domains::split_key;
use crate::domain::links;
use crate::state::Unauthenticated;

/// Which changes to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// The short domain of the code (default: the default domain).
    pub domain: Option<String>,
    /// List the changes after this one (its `n`); from the first when absent.
    pub after: Option<u32>,
    /// Changes per page, 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

/// One change of a link's target.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// 1 for the first change after the link was made, then 2, 3, ...
    pub n: u32,
    /// RFC 3339, UTC.
    pub at: String,
    pub from: String,
    pub to: String,
    /// The name of the key that made the change: shown to the link's owner
    /// and to admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Where a link points and where it pointed before.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct History {
    pub code: String,
    pub domain: String,
    pub short_url: String,
    /// The target now.
    pub url: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// When the target last changed; null if never.
    pub target_changed_at: Option<String>,
    /// Only an admin can change the target.
    pub target_locked: bool,
    /// Changes of the target, oldest first.
    pub changes: Vec<Change>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/links/{code}/history",
    params(("code" = String, Path), HistoryParams),
    responses((status = 200, body = History), (status = 404, body = super::problem::Problem),
        (status = 422, body = super::problem::Problem), (status = 429, body = super::problem::Problem)))]
pub(super) async fn link_history(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    MaybeAuth(principal): MaybeAuth,
    ApiPath(code): ApiPath<String>,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<History>> {
    if principal.is_none() {
        state.limit_unauthenticated(Unauthenticated::Read, client.ip())?;
    }
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    history_of(&state, code, params, principal.as_ref())
        .await
        .map(Json)
}

/// `GET /internal/v1/history/{code}`: the same, for a proxy's preview page
/// (`/{code}+?history`). The proxy limits its clients itself (each page
/// counts against the client's enumeration budget), so control does not
/// limit the proxy's address; who made each change is not shown.
pub(super) async fn internal_history(
    State(state): Shared,
    headers: axum::http::HeaderMap,
    ApiPath(code): ApiPath<String>,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<History>> {
    check_internal(&state, &headers)?;
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    history_of(&state, code, params, None).await.map(Json)
}

/// One page of the history of `code`; who made each change is shown to
/// `principal` when it may see the link.
async fn history_of(
    state: &std::sync::Arc<crate::state::AppState>,
    code: String,
    params: HistoryParams,
    principal: Option<&crate::domain::auth::Principal>,
) -> AppResult<History> {
    let limit = page_limit(params.limit)?;
    // Anyone may read a link's history: its domain is not limited by a
    // key's domains here.
    let key = link_key(state, None, params.domain.as_deref(), code)?;
    let after = params.after.unwrap_or(0);
    let found = read(state, move |txn| {
        let Some(link) = links::get(txn, &key)? else {
            return Ok(None);
        };
        // One more than asked says whether a next page exists.
        let changes = links::history(txn, link.id.0, after, limit + 1)?;
        Ok(Some((link, changes)))
    })
    .await?;
    let Some((link, mut changes)) = found else {
        return Err(ApiError::NotFound);
    };
    let more = changes.len() > limit;
    changes.truncate(limit);
    let shows_who = principal.is_some_and(|p| p.may_access(&link.owner));
    let (domain, base) = domain_of(state, &link.code);
    let code = split_key(&link.code).1.to_owned();
    Ok(History {
        short_url: format!("{base}/{code}"),
        code,
        domain,
        url: link.url.to_string(),
        created_at: rfc3339(link.created_at),
        target_changed_at: link.target_changed_at.map(rfc3339),
        target_locked: link.target_locked,
        next_after: more.then(|| changes.last().map_or(after, |(n, _)| *n)),
        changes: changes
            .into_iter()
            .map(|(n, change)| Change {
                n,
                at: rfc3339(change.at),
                from: change.from,
                to: change.to,
                by: shows_who.then_some(change.by),
            })
            .collect(),
    })
}
