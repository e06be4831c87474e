//! The admin REST API (`/api/v1`), health and metrics endpoints, and the
//! OpenAPI document generated from these handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use shortline_store::{LinkStatus, RedirectStatus};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::OpenApi;

use crate::auth::{self, Principal};
use crate::codes::{self, Strategy};
use crate::error::{ApiError, Problem};
use crate::links::{self, CodePlan, ListQuery, NewLink, Patch};
use crate::model::{LinkDoc, Role};
use crate::state::{AppState, Unauthenticated};

type AppResult<T> = Result<T, ApiError>;
type Shared = State<Arc<AppState>>;

/// Longest allowed `ttl_seconds`: ten years.
const TTL_SECONDS_MAX: u64 = 10 * 365 * 86_400;
/// Default page size of a list.
const LIST_LIMIT_DEFAULT: usize = 50;

/// The routes of the public API.
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/links", post(create_link).get(list_links))
        .route("/api/v1/links/batch", post(create_batch))
        .route(
            "/api/v1/links/{code}",
            get(get_link).patch(patch_link).delete(delete_link),
        )
        .route("/api/v1/keys", post(create_key).get(list_keys))
        .route("/api/v1/keys/{id}", delete(delete_key))
        .route("/api/v1/backup", get(backup))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/", get(index))
        .route("/api/v1", get(index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Records requests by route and status, and their latency.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("control_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("control_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The JSON body extractor, with every rejection as a problem document.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonDataError(e)) => {
                let text = e.body_text();
                let reason = text
                    .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                    .unwrap_or(&text)
                    .to_owned();
                let field = json_error_field(&reason);
                // serde names the path first; the problem's `field` says it once.
                let reason = reason
                    .strip_prefix(&format!("{field}: "))
                    .unwrap_or(&reason)
                    .to_owned();
                Err(ApiError::invalid(field, reason))
            }
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::BadRequest(format!(
                "body is not valid JSON: {}",
                e.body_text()
            ))),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::BadRequest(
                "send the body as application/json".into(),
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::BadRequest("request body is too large".into()))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// The field a serde error message is about: its path, or the field named
/// in a missing or unknown field message.
fn json_error_field(reason: &str) -> String {
    let named = |marker: &str| {
        reason
            .find(marker)
            .and_then(|at| reason[at + marker.len()..].split('`').next())
            .map(str::to_owned)
    };
    named("missing field `")
        .or_else(|| named("unknown field `"))
        .or_else(|| {
            reason
                .split_once(": ")
                .map(|(path, _)| path.to_owned())
                .filter(|p| !p.contains(' '))
        })
        .unwrap_or_else(|| "body".to_owned())
}

/// The authenticated caller.
#[derive(Debug)]
pub struct Auth(pub Principal);

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?
            .to_owned();
        if let Some(principal) = state.keys.cached(&token) {
            return Ok(Self(principal));
        }
        let backend = Arc::clone(&state.backend);
        let state = Arc::clone(state);
        let principal = tokio::task::spawn_blocking(move || state.keys.verify(&backend, &token))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        principal.map(Self).ok_or(ApiError::Unauthorized)
    }
}

/// The caller if the request carries a key: no `Authorization` header is
/// `None`, a bad key is still 401.
#[derive(Debug)]
pub struct MaybeAuth(pub Option<Principal>);

impl FromRequestParts<Arc<AppState>> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            Auth::from_request_parts(parts, state)
                .await
                .map(|Auth(p)| Self(Some(p)))
        } else {
            Ok(Self(None))
        }
    }
}

/// The owner of links created without a key (`anonymous_create`).
pub const ANONYMOUS_OWNER: &str = "anonymous";

pub(crate) fn require_admin(principal: &Principal) -> AppResult<()> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this endpoint needs an admin key".into(),
        ))
    }
}

/// RFC 3339 in UTC, to the second: every time the API shows.
pub(crate) fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Deserialises a field that may be absent (`None`), null (`Some(None)`) or set.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A link as the API returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkOut {
    pub code: String,
    pub short_url: String,
    pub url: String,
    pub owner: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub expires_at: Option<String>,
    pub max_clicks: Option<u64>,
    /// 301, 302, 307 or 308.
    pub redirect: u16,
    /// active, disabled, flagged, expired or exhausted.
    pub status: String,
    pub forward_query: bool,
    pub tags: Vec<String>,
    pub title: Option<String>,
    pub clicks: u64,
    /// Why the link is flagged: `admin`, `report`, `blocklist:<domain>` or `threat_list`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag_reason: Option<String>,
}

impl LinkOut {
    fn new(state: &AppState, link: LinkDoc, clicks: u64) -> Self {
        // The proxies answer 410 from `expires_at` on; the stored status
        // catches up at the next sweep, so the answer says what they do.
        let status = match link.status {
            LinkStatus::Active if link.expires_at.is_some_and(|at| at <= now_unix()) => {
                LinkStatus::Expired
            }
            status => status,
        };
        Self {
            short_url: format!(
                "{}/{}",
                state.config.public_url.trim_end_matches('/'),
                link.code
            ),
            code: link.code,
            url: link.url,
            owner: link.owner,
            created_at: rfc3339(link.created_at),
            expires_at: link.expires_at.map(rfc3339),
            max_clicks: link.max_clicks,
            redirect: link.redirect.code(),
            status: status.as_str().to_owned(),
            forward_query: link.forward_query,
            tags: link.tags,
            title: link.title,
            clicks,
            flag_reason: link.flag_reason.map(String::from),
        }
    }
}

/// A create request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    /// The target: an absolute http or https URL.
    pub url: String,
    /// A custom code, 3 to 64 characters of `[A-Za-z0-9_-]`.
    pub alias: Option<String>,
    pub strategy: Option<Strategy>,
    /// RFC 3339 time after which the link answers 410.
    pub expires_at: Option<String>,
    /// Seconds from now after which the link answers 410.
    pub ttl_seconds: Option<u64>,
    /// Human clicks after which the link answers 410.
    pub max_clicks: Option<u64>,
    /// 301, 302 (default), 307 or 308.
    pub redirect: Option<u16>,
    /// Append the request's query string to the target.
    pub forward_query: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub title: Option<String>,
}

/// A batch create request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    pub links: Vec<CreateLink>,
}

/// One item's outcome in a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    /// The HTTP status this item would have had alone.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// A batch create response: one result per item, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchOut {
    pub results: Vec<BatchItem>,
}

/// A patch request; absent fields are left alone, null clears.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchLink {
    pub url: Option<String>,
    /// RFC 3339 time after which the link answers 410; null removes the expiry.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    /// Seconds from now after which the link answers 410 (instead of expires_at).
    pub ttl_seconds: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>)]
    pub max_clicks: Option<Option<u64>>,
    pub redirect: Option<u16>,
    /// active, disabled or flagged.
    pub status: Option<String>,
    pub forward_query: Option<bool>,
    pub tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub title: Option<Option<String>>,
}

/// A page of links.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkPage {
    pub items: Vec<LinkOut>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// List filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub tag: Option<String>,
    /// Admins only: links of this owner.
    pub owner: Option<String>,
    pub cursor: Option<String>,
    /// Page size, 1 to the configured maximum (default 50).
    pub limit: Option<usize>,
}

fn parse_redirect(code: u16) -> AppResult<RedirectStatus> {
    RedirectStatus::from_code(code).ok_or_else(|| {
        ApiError::invalid(
            "redirect",
            format!("{code} is not one of 301, 302, 307, 308"),
        )
    })
}

fn parse_time(field: &str, text: &str, now: i64) -> AppResult<i64> {
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| ApiError::invalid(field, format!("{text:?} is not an RFC 3339 time: {e}")))?
        .unix_timestamp();
    if at <= now {
        return Err(ApiError::invalid(field, "must be in the future"));
    }
    Ok(at)
}

fn check_tags(state: &AppState, tags: Option<Vec<String>>) -> AppResult<Vec<String>> {
    let mut tags = tags.unwrap_or_default();
    if tags.len() > state.config.tags_max {
        return Err(ApiError::invalid(
            "tags",
            format!("at most {} tags", state.config.tags_max),
        ));
    }
    for tag in &tags {
        if tag.is_empty() || tag.len() > state.config.tag_length_max {
            return Err(ApiError::invalid(
                "tags",
                format!("a tag is 1 to {} bytes", state.config.tag_length_max),
            ));
        }
        if tag.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "tags",
                "a tag must not contain control characters",
            ));
        }
    }
    tags.sort();
    tags.dedup();
    Ok(tags)
}

fn check_title(state: &AppState, title: Option<String>) -> AppResult<Option<String>> {
    if let Some(t) = &title {
        if t.len() > state.config.title_length_max {
            return Err(ApiError::invalid(
                "title",
                format!("at most {} bytes", state.config.title_length_max),
            ));
        }
        if t.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "title",
                "must not contain control characters",
            ));
        }
    }
    Ok(title)
}

/// Validates a create request into a plan (without its link id yet).
/// Validates a target and checks it against the threat list.
fn check_target(state: &AppState, raw: &str) -> AppResult<String> {
    let url = state.validator.target(raw)?;
    if let Some(expression) = state.threats.current().matching(&url) {
        metrics::counter!("control_threat_list_refusals_total").increment(1);
        return Err(ApiError::invalid(
            "url",
            format!("url is on the threat list (malware or phishing) as {expression:?}"),
        ));
    }
    Ok(url)
}

/// The expiry time from `expires_at` (RFC 3339) or `ttl_seconds`, as create
/// and PATCH both take them.
fn expiry(expires_at: Option<&str>, ttl_seconds: Option<u64>, now: i64) -> AppResult<Option<i64>> {
    match (expires_at, ttl_seconds) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "ttl_seconds",
            "give either expires_at or ttl_seconds, not both",
        )),
        (Some(at), None) => Ok(Some(parse_time("expires_at", at, now)?)),
        (None, Some(0)) => Err(ApiError::invalid("ttl_seconds", "must be at least 1")),
        (None, Some(ttl)) if ttl > TTL_SECONDS_MAX => Err(ApiError::invalid(
            "ttl_seconds",
            format!("at most {TTL_SECONDS_MAX} (ten years)"),
        )),
        (None, Some(ttl)) => Ok(Some(now + ttl as i64)),
        (None, None) => Ok(None),
    }
}

fn plan_create(state: &AppState, owner: &str, body: CreateLink, now: i64) -> AppResult<NewLink> {
    let url = check_target(state, &body.url)?;
    let code = match (body.alias, body.strategy) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "alias",
                "give either alias or strategy, not both",
            ));
        }
        (Some(alias), None) => {
            codes::check_alias(&alias).map_err(|reason| ApiError::invalid("alias", reason))?;
            CodePlan::Alias(alias)
        }
        (None, strategy) => CodePlan::Generated {
            strategy: strategy.unwrap_or(state.config.default_strategy),
            length: state.config.code_length,
        },
    };
    let expires_at = expiry(body.expires_at.as_deref(), body.ttl_seconds, now)?;
    if body.max_clicks == Some(0) {
        return Err(ApiError::invalid("max_clicks", "must be at least 1"));
    }
    Ok(NewLink {
        id: 0,
        code,
        url,
        owner: owner.to_owned(),
        now,
        expires_at,
        max_clicks: body.max_clicks,
        redirect: body
            .redirect
            .map(parse_redirect)
            .transpose()?
            .unwrap_or_default(),
        forward_query: body.forward_query.unwrap_or(false),
        tags: check_tags(state, body.tags)?,
        title: check_title(state, body.title)?,
    })
}

async fn create_many(
    state: &Arc<AppState>,
    plans: Vec<NewLink>,
) -> AppResult<Vec<AppResult<links::Created>>> {
    let ids = state.take_ids(plans.len()).await?;
    let plans: Vec<NewLink> = plans
        .into_iter()
        .zip(ids)
        .map(|(p, id)| NewLink { id, ..p })
        .collect();
    let permutation = state.permutation.clone();
    let results = state
        .committer
        .write(move |txn| {
            plans
                .iter()
                .map(|p| links::create(txn, p, &permutation))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    for created in results.iter().flatten() {
        let outcome = if created.created {
            "created"
        } else {
            "existing"
        };
        metrics::counter!("control_links_created_total", "outcome" => outcome).increment(1);
    }
    Ok(results)
}

#[utoipa::path(post, path = "/api/v1/links", request_body = CreateLink, security(("bearer" = [])),
    responses((status = 201, body = LinkOut), (status = 200, description = "hash strategy: the same link already existed", body = LinkOut),
        (status = 409, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn create_link(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    MaybeAuth(principal): MaybeAuth,
    ApiJson(body): ApiJson<CreateLink>,
) -> AppResult<Response> {
    let owner = match &principal {
        Some(principal) => {
            state.limit_write(principal, client.ip())?;
            principal.owner.clone()
        }
        None if state.config.anonymous_create => {
            state.limit_unauthenticated(Unauthenticated::Create, client.ip())?;
            if body.alias.is_some() {
                return Err(ApiError::Forbidden(
                    "anonymous links get generated codes; custom aliases need an API key".into(),
                ));
            }
            ANONYMOUS_OWNER.to_owned()
        }
        None => return Err(ApiError::Unauthorized),
    };
    let strategy = body.strategy.unwrap_or(state.config.default_strategy);
    let plan = plan_create(&state, &owner, body, now_unix())?;
    let label = if matches!(plan.code, CodePlan::Alias(_)) {
        "alias"
    } else {
        strategy.as_str()
    };
    let created = create_many(&state, vec![plan])
        .await?
        .pop()
        .expect("one result per plan")?;
    metrics::counter!("control_creates_total", "strategy" => label).increment(1);
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(LinkOut::new(&state, created.link, 0))).into_response())
}

#[utoipa::path(post, path = "/api/v1/links/batch", request_body = CreateBatch, security(("bearer" = [])),
    responses((status = 200, body = BatchOut), (status = 422, body = Problem)))]
async fn create_batch(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateBatch>,
) -> AppResult<Json<BatchOut>> {
    state.limit_write(&principal, client.ip())?;
    if body.links.is_empty() || body.links.len() > state.config.batch_links_max {
        return Err(ApiError::invalid(
            "links",
            format!("a batch holds 1 to {} links", state.config.batch_links_max),
        ));
    }
    let now = now_unix();
    let planned: Vec<AppResult<NewLink>> = body
        .links
        .into_iter()
        .map(|item| plan_create(&state, &principal.owner, item, now))
        .collect();
    let valid: Vec<NewLink> = planned
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let mut outcomes = create_many(&state, valid).await?.into_iter();
    let results = planned
        .into_iter()
        .map(|plan| {
            let outcome = match plan {
                Ok(_) => outcomes.next().expect("one outcome per valid plan"),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(created) => BatchItem {
                    status: if created.created { 201 } else { 200 },
                    link: Some(LinkOut::new(&state, created.link, 0)),
                    error: None,
                },
                Err(e) => {
                    let problem = e.problem();
                    BatchItem {
                        status: problem.status,
                        link: None,
                        error: Some(problem),
                    }
                }
            }
        })
        .collect();
    Ok(Json(BatchOut { results }))
}

async fn read_link(
    state: &Arc<AppState>,
    code: String,
    principal: &Principal,
) -> AppResult<(LinkDoc, u64)> {
    let backend = Arc::clone(&state.backend);
    let found = tokio::task::spawn_blocking(move || {
        let mut found = None;
        backend.read(|txn| {
            found = match links::get(txn, &code)? {
                Some(link) => {
                    let clicks = links::clicks(txn, link.id)?;
                    Some((link, clicks))
                }
                None => None,
            };
            Ok(())
        })?;
        Ok::<_, crate::db::StoreError>(found)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    match found {
        Some((link, clicks)) if principal.may_access(&link.owner) => Ok((link, clicks)),
        _ => Err(ApiError::NotFound),
    }
}

#[utoipa::path(get, path = "/api/v1/links/{code}", security(("bearer" = [])),
    params(("code" = String, Path)), responses((status = 200, body = LinkOut), (status = 404, body = Problem)))]
async fn get_link(
    State(state): Shared,
    Auth(principal): Auth,
    Path(code): Path<String>,
) -> AppResult<Json<LinkOut>> {
    let (link, clicks) = read_link(&state, code, &principal).await?;
    Ok(Json(LinkOut::new(&state, link, clicks)))
}

#[utoipa::path(get, path = "/api/v1/links", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = LinkPage), (status = 422, body = Problem)))]
async fn list_links(
    State(state): Shared,
    Auth(principal): Auth,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<LinkPage>> {
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = params.limit.unwrap_or(LIST_LIMIT_DEFAULT);
    if limit == 0 || limit > state.config.list_limit_max {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {}", state.config.list_limit_max),
        ));
    }
    let owner = if principal.is_admin() {
        params.owner
    } else {
        match params.owner {
            Some(owner) if owner != principal.owner => {
                return Err(ApiError::Forbidden(
                    "a user key lists only its own links".into(),
                ));
            }
            _ => Some(principal.owner.clone()),
        }
    };
    if let Some(cursor) = &params.cursor
        && !shortline_store::is_valid_code(cursor.as_bytes())
    {
        return Err(ApiError::invalid(
            "cursor",
            "not a cursor from a previous page",
        ));
    }
    let query = ListQuery {
        owner,
        tag: params.tag,
        after: params.cursor,
        limit,
    };
    let backend = Arc::clone(&state.backend);
    let (page, next) = tokio::task::spawn_blocking(move || {
        let mut out = None;
        backend.read(|txn| {
            let (page, next) = links::list(txn, &query)?;
            let mut with_clicks = Vec::with_capacity(page.len());
            for link in page {
                let clicks = links::clicks(txn, link.id)?;
                with_clicks.push((link, clicks));
            }
            out = Some((with_clicks, next));
            Ok(())
        })?;
        Ok::<_, crate::db::StoreError>(out.expect("read ran"))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(LinkPage {
        items: page
            .into_iter()
            .map(|(l, c)| LinkOut::new(&state, l, c))
            .collect(),
        next_cursor: next,
    }))
}

fn plan_patch(state: &AppState, body: PatchLink, now: i64) -> AppResult<Patch> {
    let status = match body.status.as_deref() {
        None => None,
        Some("active") => Some(LinkStatus::Active),
        Some("disabled") => Some(LinkStatus::Disabled),
        Some("flagged") => Some(LinkStatus::Flagged),
        Some(other) => {
            return Err(ApiError::invalid(
                "status",
                format!("{other:?} is not one of active, disabled, flagged"),
            ));
        }
    };
    Ok(Patch {
        url: body.url.map(|u| check_target(state, &u)).transpose()?,
        // null clears the expiry; a time or a TTL sets it.
        expires_at: match (body.expires_at, body.ttl_seconds) {
            (Some(None), None) => Some(None),
            (Some(None), Some(_)) => {
                return Err(ApiError::invalid(
                    "ttl_seconds",
                    "give either expires_at or ttl_seconds, not both",
                ));
            }
            (at, ttl) => expiry(at.flatten().as_deref(), ttl, now)?.map(Some),
        },
        max_clicks: match body.max_clicks {
            Some(Some(0)) => return Err(ApiError::invalid("max_clicks", "must be at least 1")),
            other => other,
        },
        redirect: body.redirect.map(parse_redirect).transpose()?,
        status,
        forward_query: body.forward_query,
        tags: body.tags.map(|t| check_tags(state, Some(t))).transpose()?,
        title: body.title.map(|t| check_title(state, t)).transpose()?,
    })
}

#[utoipa::path(patch, path = "/api/v1/links/{code}", request_body = PatchLink, security(("bearer" = [])),
    params(("code" = String, Path)),
    responses((status = 200, body = LinkOut), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn patch_link(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    Path(code): Path<String>,
    ApiJson(body): ApiJson<PatchLink>,
) -> AppResult<Json<LinkOut>> {
    state.limit_write(&principal, client.ip())?;
    let now = now_unix();
    let patch = plan_patch(&state, body, now)?;
    let who = principal.clone();
    let link = state
        .committer
        .write({
            let threats = state.threats.current();
            move |txn| links::patch(txn, &code, &who, &patch, now, &threats)
        })
        .await??;
    let (link, clicks) = read_link(&state, link.code, &principal).await?;
    Ok(Json(LinkOut::new(&state, link, clicks)))
}

#[utoipa::path(delete, path = "/api/v1/links/{code}", security(("bearer" = [])), params(("code" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_link(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    Path(code): Path<String>,
) -> AppResult<StatusCode> {
    state.limit_write(&principal, client.ip())?;
    state
        .committer
        .write(move |txn| links::delete(txn, &code, &principal))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// A new key request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    pub role: Role,
    /// Whose links a user key manages; defaults to the key's name.
    pub owner: Option<String>,
}

/// A key as listed: never the token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyOut {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub owner: String,
    pub created_at: String,
    /// Only in the response that created the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/keys", request_body = CreateKey, security(("bearer" = [])),
    responses((status = 201, body = KeyOut), (status = 403, body = Problem)))]
async fn create_key(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> AppResult<(StatusCode, Json<KeyOut>)> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "a name is 1 to 128 printable characters",
        ));
    }
    let owner = body.owner.unwrap_or_else(|| name.clone());
    if owner == ANONYMOUS_OWNER && body.role == Role::User {
        return Err(ApiError::invalid(
            "owner",
            "the owner anonymous holds links created without a key; only admins manage them",
        ));
    }
    if owner.is_empty()
        || owner.len() > 128
        || owner.contains('\0')
        || owner.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            "owner",
            "an owner is 1 to 128 printable characters",
        ));
    }
    let token = auth::new_token();
    let doc = auth::key_doc(
        auth::new_key_id(),
        name,
        body.role,
        owner,
        &token,
        now_unix(),
    );
    let hash = auth::token_hash(&token);
    let stored = doc.clone();
    state
        .committer
        .write(move |txn| auth::put_key(txn, &stored, &hash))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyOut {
            id: doc.id,
            name: doc.name,
            role: doc.role,
            owner: doc.owner,
            created_at: rfc3339(doc.created_at),
            token: Some(token),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/keys", security(("bearer" = [])), responses((status = 200, body = [KeyOut])))]
async fn list_keys(State(state): Shared, Auth(principal): Auth) -> AppResult<Json<Vec<KeyOut>>> {
    require_admin(&principal)?;
    let backend = Arc::clone(&state.backend);
    let keys = tokio::task::spawn_blocking(move || {
        let keys = backend.read(|txn| auth::list_keys(txn, 10_000))?;
        Ok::<_, crate::db::StoreError>(keys)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(
        keys.into_iter()
            .map(|k| KeyOut {
                id: k.id,
                name: k.name,
                role: k.role,
                owner: k.owner,
                created_at: rfc3339(k.created_at),
                token: None,
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/keys/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_key(
    State(state): Shared,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    require_admin(&principal)?;
    if id == principal.key_id {
        return Err(ApiError::Conflict {
            field: "id".into(),
            reason: "a key cannot delete itself".into(),
        });
    }
    let target = id.clone();
    let existed = state
        .committer
        .write(move |txn| auth::delete_key(txn, &target))
        .await?;
    state.keys.forget(&id);
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// Writes into a channel in chunks, from a blocking thread, for a streamed body.
struct ChunkWriter {
    buffer: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
}

impl ChunkWriter {
    const CHUNK: usize = 256 * 1024;
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= Self::CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buffer));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

#[utoipa::path(get, path = "/api/v1/backup", security(("bearer" = [])),
    responses((status = 200, description = "a consistent copy of the embedded store as newline-delimited JSON (docs/OPERATIONS.md); restore with `shortline-control restore`", content_type = "application/x-ndjson", body = String),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn backup(State(state): Shared, Auth(principal): Auth) -> AppResult<Response> {
    require_admin(&principal)?;
    if state.backend.shared() {
        return Err(ApiError::Conflict {
            field: "store_backend".into(),
            reason: "this store is FoundationDB: back it up with fdbbackup".into(),
        });
    }
    let key = std::fs::read(state.config.data_dir.join("permutation.key"))
        .map_err(|e| ApiError::Internal(format!("cannot read permutation.key: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let backend = Arc::clone(&state.backend);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            buffer: Vec::with_capacity(ChunkWriter::CHUNK),
            tx: tx.clone(),
        };
        let result = backend.read(|txn| {
            let records = crate::db::backup::export(txn, &key, &mut out)?;
            tracing::info!(records, "backup streamed");
            Ok(())
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "backup failed; the client gets a cut-off file");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// Where to go from the root: what this server is and where its API lives.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Index {
    /// Always `shortline-control`.
    pub name: &'static str,
    pub version: &'static str,
    /// The admin REST API's base path.
    pub api: &'static str,
    /// The OpenAPI document.
    pub openapi: &'static str,
    /// Where short links are served.
    pub short_links: String,
    /// How to authenticate.
    pub authentication: &'static str,
}

#[utoipa::path(get, path = "/api/v1", responses((status = 200, body = Index, description = "what this server is and where its API lives")))]
async fn index(State(state): Shared) -> Json<Index> {
    Json(Index {
        name: "shortline-control",
        version: env!("CARGO_PKG_VERSION"),
        api: "/api/v1",
        openapi: "/api/v1/openapi.json",
        short_links: state.config.public_url.clone(),
        authentication: "Authorization: Bearer <API key>; `shortline-control up` prints the first admin key",
    })
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process is up")))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "the store answers"), (status = 503, body = Problem)))]
async fn readyz(State(state): Shared) -> AppResult<&'static str> {
    let backend = Arc::clone(&state.backend);
    tokio::task::spawn_blocking(move || backend.read(|txn| txn.last_seq().map(|_| ())))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok("ready\n")
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

struct DocFixes;

impl utoipa::Modify for DocFixes {
    /// Declares the bearer scheme, serves every problem document as
    /// `application/problem+json`, and gives every operation a `default`
    /// response: any status not listed (400 for a body that is not JSON, 401,
    /// 413, 429, 503 when the store is unavailable) is a problem document.
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let problem = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem = response.content.get("application/json").is_some_and(|c| {
                        matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
                    });
                    if is_problem {
                        response.content.shift_remove("application/json");
                        response
                            .content
                            .insert("application/problem+json".to_owned(), problem());
                    }
                }
                operation.responses.responses.insert(
                    "default".to_owned(),
                    RefOr::T(
                        ResponseBuilder::new()
                            .description("an error, as an RFC 9457 problem document")
                            .content("application/problem+json", problem())
                            .build(),
                    ),
                );
            }
        }
    }
}

/// The OpenAPI document, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(title = "Shortline admin API", description = "Create and manage short links."),
    paths(create_link, create_batch, list_links, get_link, patch_link, delete_link,
        crate::stats_api::link_stats, crate::stats_api::top_links,
        crate::abuse_api::list_blocklist, crate::abuse_api::get_block, crate::abuse_api::put_block, crate::abuse_api::delete_block,
        crate::abuse_api::report_link, crate::abuse_api::list_reports, crate::abuse_api::resolve_report,
        create_key, list_keys, delete_key, backup, index, healthz, readyz),
    components(schemas(Index, LinkOut, CreateLink, CreateBatch, BatchItem, BatchOut, PatchLink, LinkPage, CreateKey, KeyOut, Problem, Strategy, Role,
        crate::analytics::stats::Stats, crate::analytics::stats::Point, crate::analytics::stats::Count,
        crate::stats_api::TopLinks, crate::stats_api::TopLink,
        crate::abuse::blocklist::BlockEntry, crate::abuse_api::BlocklistPage, crate::abuse_api::PutBlock, crate::abuse_api::BlockOut,
        crate::abuse::reports::Report, crate::abuse::reports::ReportState, crate::abuse::reports::Category, crate::abuse::reports::Action,
        crate::abuse_api::NewReport, crate::abuse_api::ReportReceipt, crate::abuse_api::ReportPage, crate::abuse_api::Resolve, crate::abuse_api::ResolvedOut)),
    modifiers(&DocFixes)
)]
#[derive(Debug)]
pub struct ApiDoc;
