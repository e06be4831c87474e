//! Routes of the abuse tools: the domain blocklist (admin), abuse reports
//! (anyone) and the moderation queue (admin).

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, Auth, Shared, read, require_admin};
use super::problem::{ApiError, AppResult, Problem};
use super::wire::page_limit;
use crate::domain::blocklist::{self, BlockEntry};
use crate::domain::reports::{self, Action, Category, Filter, Report, ReportState};
use crate::state::Unauthenticated;
use crate::tasks::abuse::run_sweep;

/// Longest report comment, in characters.
const COMMENT_CHARS_MAX: usize = 2000;

/// Now, as Unix seconds and as RFC 3339 to the second (as links show times).
fn now() -> (i64, String) {
    let unix = crate::model::now_unix();
    (unix, super::wire::rfc3339(unix))
}

/// Page parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

/// A page of blocklist entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BlocklistPage {
    pub items: Vec<BlockEntry>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/blocklist", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = BlocklistPage), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn list_blocklist(
    State(state): Shared,
    Auth(principal): Auth,
    params: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<BlocklistPage>> {
    require_admin(&principal)?;
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = page_limit(params.limit)?;
    let cursor = params.cursor;
    let mut items = read(&state, move |txn| {
        blocklist::list(txn, cursor.as_deref(), limit + 1)
    })
    .await?;
    let next_cursor = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|e| e.domain.clone()).unwrap_or_default()
    });
    Ok(Json(BlocklistPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/v1/blocklist/{domain}", security(("bearer" = [])), params(("domain" = String, Path)),
    responses((status = 200, body = BlockView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn get_block(
    State(state): Shared,
    Auth(principal): Auth,
    ApiPath(domain): ApiPath<String>,
) -> AppResult<Json<BlockView>> {
    require_admin(&principal)?;
    let domain = blocklist::normalise(&domain)?;
    let (entry, sweep) = read(&state, move |txn| {
        Ok((
            blocklist::get(txn, &domain)?,
            blocklist::sweep(txn, &domain)?,
        ))
    })
    .await?;
    let entry = entry.ok_or(ApiError::NotFound)?;
    Ok(Json(BlockView {
        entry,
        sweep: sweep.filter(|s| s.block).map(SweepOut::from),
    }))
}

/// How long a PUT or DELETE waits for its sweep before answering with how
/// far it got; the sweep goes on in the background, and after a crash it
/// resumes where it stopped.
const SWEEP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the sweep of `domain` in the background and waits for it up to
/// [`SWEEP_WAIT`]. Returns it as it stands then.
async fn sweep_a_moment(
    state: &std::sync::Arc<crate::state::AppState>,
    domain: &str,
) -> AppResult<Option<blocklist::Sweep>> {
    let task = tokio::spawn({
        let state = std::sync::Arc::clone(state);
        let domain = domain.to_owned();
        async move { run_sweep(&state, &domain).await }
    });
    if let Ok(finished) = tokio::time::timeout(SWEEP_WAIT, task).await {
        return Ok(finished??);
    }
    let domain = domain.to_owned();
    read(state, move |txn| blocklist::sweep(txn, &domain)).await
}

/// Where an entry's sweep over the links it covers stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SweepOut {
    /// `running` while pages remain (it goes on in the background), then
    /// `done`.
    pub state: SweepState,
    /// Links flagged so far.
    pub links_flagged: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SweepState {
    Running,
    Done,
}

impl From<blocklist::Sweep> for SweepOut {
    fn from(sweep: blocklist::Sweep) -> Self {
        Self {
            state: if sweep.done {
                SweepState::Done
            } else {
                SweepState::Running
            },
            links_flagged: sweep.changed,
        }
    }
}

/// A blocklist entry and how its sweep stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BlockView {
    #[serde(flatten)]
    pub entry: BlockEntry,
    /// Absent for entries added before sweeps were recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepOut>,
}

/// A blocklist entry request; the body may be empty.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutBlock {
    /// Why the domain is blocked (shown to admins only).
    pub reason: Option<String>,
}

/// A blocklist entry and what adding it did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BlockOut {
    #[serde(flatten)]
    pub entry: BlockEntry,
    /// Existing links to the domain or its subdomains flagged so far (all
    /// of them once `sweep.state` is `done`).
    pub links_flagged: u64,
    pub sweep: SweepOut,
}

#[utoipa::path(put, path = "/api/v1/blocklist/{domain}", security(("bearer" = [])), params(("domain" = String, Path)),
    request_body(content = Option<PutBlock>, description = "optional"),
    responses((status = 201, body = BlockOut), (status = 200, description = "the entry existed and was replaced", body = BlockOut),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub(super) async fn put_block(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(domain): ApiPath<String>,
    body: Bytes,
) -> AppResult<Response> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    let domain = blocklist::normalise(&domain)?;
    let body: PutBlock = if body.iter().all(u8::is_ascii_whitespace) {
        PutBlock::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("body", e.to_string()))?
    };
    if let Some(reason) = &body.reason
        && (reason.chars().count() > 500 || reason.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "reason",
            "a reason is at most 500 printable characters",
        ));
    }
    let (_, created_at) = now();
    let entry = BlockEntry {
        domain: domain.clone(),
        reason: body.reason,
        created_at,
        created_by: principal.key_name.clone(),
        created_by_key_id: Some(principal.key_id.clone()),
    };
    let (entry, new) = state
        .committer
        .write(move |txn| blocklist::put(txn, &entry))
        .await?;
    let sweep = sweep_a_moment(&state, &domain).await?.map_or(
        SweepOut {
            state: SweepState::Done,
            links_flagged: 0,
        },
        SweepOut::from,
    );
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(BlockOut {
            entry,
            links_flagged: sweep.links_flagged,
            sweep,
        }),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/v1/blocklist/{domain}", security(("bearer" = [])), params(("domain" = String, Path)),
    responses((status = 204, description = "removed; the flags it set are lifted"), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub(super) async fn delete_block(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(domain): ApiPath<String>,
) -> AppResult<StatusCode> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    let domain = blocklist::normalise(&domain)?;
    let target = domain.clone();
    let existed = state
        .committer
        .write(move |txn| blocklist::remove(txn, &target))
        .await?;
    if !existed {
        return Err(ApiError::NotFound);
    }
    sweep_a_moment(&state, &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An abuse report.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReport {
    pub category: Category,
    /// What is wrong with the link, up to 2000 characters.
    pub comment: Option<String>,
}

/// The receipt of a report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportReceipt {
    pub id: String,
    /// Always `open`.
    pub state: ReportState,
}

#[utoipa::path(post, path = "/api/v1/links/{code}/report", params(("code" = String, Path), super::links::DomainParam), request_body = NewReport,
    responses((status = 202, body = ReportReceipt), (status = 404, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem), (status = 503, body = Problem)))]
pub(super) async fn report_link(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    ApiPath(code): ApiPath<String>,
    params: Result<Query<super::links::DomainParam>, axum::extract::rejection::QueryRejection>,
    ApiJson(body): ApiJson<NewReport>,
) -> AppResult<(StatusCode, Json<ReportReceipt>)> {
    state.limit_unauthenticated(Unauthenticated::Report, client.ip())?;
    if !shortline_store::is_valid_code(code.as_bytes()) {
        return Err(ApiError::NotFound);
    }
    let domain = super::links::domain_param(params)?;
    let code = super::links::link_key(&state, None, domain.as_deref(), code)?;
    let comment = body
        .comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if let Some(c) = &comment
        && (c.chars().count() > COMMENT_CHARS_MAX
            || c.chars().any(|ch| ch.is_control() && ch != '\n'))
    {
        return Err(ApiError::invalid(
            "comment",
            format!(
                "a comment is at most {COMMENT_CHARS_MAX} characters, without control characters"
            ),
        ));
    }
    let (now_unix, created_at) = now();
    let report = Report {
        id: reports::new_id(
            (now_unix as u64).saturating_mul(1000)
                + u64::from(time::OffsetDateTime::now_utc().millisecond()),
        ),
        code,
        category: body.category,
        comment,
        created_at,
        state: ReportState::Open,
        action: None,
        resolved_at: None,
        resolved_by: None,
        resolved_by_key_id: None,
    };
    let id = report.id.clone();
    let open_max = state.config.reports_open_max;
    state
        .committer
        .write(move |txn| reports::file(txn, &report, open_max))
        .await??;
    metrics::counter!("control_reports_total").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(ReportReceipt {
            id,
            state: ReportState::Open,
        }),
    ))
}

/// Which reports to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// `open` (default) or `all`.
    pub state: Option<String>,
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

/// A page of reports, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportPage {
    pub items: Vec<Report>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/reports", security(("bearer" = [])), params(ReportParams),
    responses((status = 200, body = ReportPage), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn list_reports(
    State(state): Shared,
    Auth(principal): Auth,
    params: Result<Query<ReportParams>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<ReportPage>> {
    require_admin(&principal)?;
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let filter = match params.state.as_deref() {
        None | Some("open") => Filter::Open,
        Some("all") => Filter::All,
        Some(other) => {
            return Err(ApiError::invalid(
                "state",
                format!("{other:?} is not one of open, all"),
            ));
        }
    };
    let limit = page_limit(params.limit)?;
    let cursor = params.cursor;
    let (items, next_cursor) = read(&state, move |txn| {
        reports::list(txn, filter, cursor.as_deref(), limit)
    })
    .await?;
    Ok(Json(ReportPage { items, next_cursor }))
}

/// How to resolve a report.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    pub action: Action,
}

/// A resolved report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResolvedOut {
    pub report: Report,
    /// Open reports of the same link resolved with it, this one included.
    pub reports_resolved: u64,
}

#[utoipa::path(post, path = "/api/v1/reports/{id}/resolve", security(("bearer" = [])), params(("id" = String, Path)), request_body = Resolve,
    responses((status = 200, body = ResolvedOut), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub(super) async fn resolve_report(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Resolve>,
) -> AppResult<Json<ResolvedOut>> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    let (now_unix, now_text) = now();
    let resolved = state
        .committer
        .write(move |txn| reports::resolve(txn, &id, body.action, &principal, now_unix, &now_text))
        .await??;
    Ok(Json(ResolvedOut {
        report: resolved.report,
        reports_resolved: resolved.reports,
    }))
}
