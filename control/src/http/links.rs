//! `/api/v1/links`: create (one or a batch), read, list, patch, delete.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shortline_store::routing::Routing;
use shortline_store::{Code, LinkId, LinkStatus, RedirectStatus, Target};

use super::extract::{ApiJson, ApiPath, Auth, MaybeAuth, Shared, read};
use super::problem::AppResult;
use super::problem::{ApiError, Problem};
use super::routing::{self, RuleBody, VariantBody};
use super::wire::{nullable, rfc3339};
use crate::domain::auth::Principal;
use crate::domain::codes;
use crate::domain::domains;
use crate::domain::links::ANONYMOUS_OWNER;
use crate::domain::links::{self, CodePlan, ListQuery, NewLink, Patch};
use crate::model::LinkDoc;
use crate::model::Strategy;
use crate::model::now_unix;
use crate::state::{AppState, Unauthenticated};

/// Longest allowed `ttl_seconds`: ten years.
const TTL_SECONDS_MAX: u64 = 10 * 365 * 86_400;
/// Default page size of a list.
const LIST_LIMIT_DEFAULT: usize = 50;

/// A link as the API returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkOut {
    pub code: String,
    /// The short domain the code belongs to.
    pub domain: String,
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
    /// Only an admin can change the target, or unlock it.
    pub target_locked: bool,
    /// When the target last changed (RFC 3339); null if never. The changes
    /// are at `/api/v1/links/{code}/history`.
    pub target_changed_at: Option<String>,
    /// Targeting rules, in the order they are tried.
    pub rules: Vec<RuleBody>,
    /// The split's targets and weights; empty without a split.
    pub variants: Vec<VariantBody>,
    /// Whether a client keeps its variant across clicks.
    pub sticky_variants: bool,
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
        let (domain, base) = domain_of(state, &link.code);
        let code = domains::split_key(&link.code).1.to_owned();
        Self {
            short_url: format!("{base}/{code}"),
            code,
            domain,
            url: link.url.into(),
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
            target_locked: link.target_locked,
            target_changed_at: link.target_changed_at.map(rfc3339),
            rules: link
                .routing
                .as_deref()
                .map(routing::rules_out)
                .unwrap_or_default(),
            variants: link
                .routing
                .as_deref()
                .map(routing::variants_out)
                .unwrap_or_default(),
            sticky_variants: link
                .routing
                .as_deref()
                .is_none_or(|r| r.variants.is_empty() || r.sticky),
        }
    }
}

/// The short domain of a link's table key and the start of its short URLs.
pub(super) fn domain_of(state: &AppState, key: &str) -> (String, String) {
    state.domain_of(key)
}

/// Which short domain a by-code request means (`?domain=`, default: the
/// default domain).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DomainParam {
    /// The short domain of the code (default: the default domain).
    pub domain: Option<String>,
}

/// The table key of `code` on the domain a request names, once the caller
/// is allowed that domain. A path that is not a code is not found (a table
/// key given whole, `go.acme.com%2Fsale`, is not a way around `domain`).
pub(super) fn link_key(
    state: &AppState,
    principal: Option<&Principal>,
    domain: Option<&str>,
    code: String,
) -> AppResult<String> {
    let name = plan_domain(state, principal, domain)?;
    let doc = match &name {
        Some(name) => state.domains.find(&*state.backend, name)?,
        None => state.domains.current().default_domain().cloned(),
    };
    let Some(doc) = doc else {
        return Err(ApiError::invalid(
            "domain",
            format!(
                "{:?} is not a short domain here (see /api/v1/domains)",
                name.unwrap_or_default()
            ),
        ));
    };
    let code = Code::parse(&code).map_err(|_| ApiError::NotFound)?;
    Ok(doc.key(&code).into())
}

/// The `?domain=` of a by-code request.
pub(super) fn domain_param(
    params: Result<Query<DomainParam>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Option<String>> {
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    Ok(params.domain)
}

/// A create request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    /// The target: an absolute http or https URL.
    pub url: String,
    /// A custom code, 3 to 64 characters of `[A-Za-z0-9_-]`.
    pub alias: Option<String>,
    /// The short domain (default: the default domain). Codes are unique
    /// per domain.
    pub domain: Option<String>,
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
    /// Lock the target from the start: only an admin can change it
    /// afterwards (default false).
    pub target_locked: Option<bool>,
    /// Targeting rules, tried in order; the first that holds wins.
    pub rules: Option<Vec<RuleBody>>,
    /// A split: weighted targets for the clicks no rule takes (two or more).
    pub variants: Option<Vec<VariantBody>>,
    /// Whether a client keeps its variant across clicks, by a cookie
    /// (default true).
    pub sticky_variants: Option<bool>,
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
    /// Lock the target: after that, only an admin can change it, or
    /// unlock it, or its rules and variants.
    pub target_locked: Option<bool>,
    /// Replaces the rules; `[]` removes them.
    pub rules: Option<Vec<RuleBody>>,
    /// Replaces the variants; `[]` removes the split.
    pub variants: Option<Vec<VariantBody>>,
    pub sticky_variants: Option<bool>,
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
    let at = super::wire::parse_rfc3339(field, text)?;
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
fn check_target(state: &AppState, raw: &str) -> AppResult<Target> {
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

/// The normalised short domain a request names (or the default), checked
/// against what `principal` may use.
fn plan_domain(
    state: &AppState,
    principal: Option<&Principal>,
    domain: Option<&str>,
) -> AppResult<Option<String>> {
    let name = domain
        .map(|d| domains::normalize(d).map_err(|e| ApiError::invalid("domain", e.to_string())))
        .transpose()?;
    if let Some(principal) = principal
        && principal.domains.is_some()
    {
        let used = match &name {
            Some(name) => name.clone(),
            None => state.domains.current().default.clone().unwrap_or_default(),
        };
        if !principal.may_use_domain(&used) {
            return Err(ApiError::Forbidden(format!(
                "this key may not use the domain {used:?}"
            )));
        }
    }
    Ok(name)
}

/// Checks a create request into the link it makes. `imported` keeps a
/// code shorter than an alias may be: an import keeps every code a link
/// already had.
pub(crate) fn plan_create(
    state: &AppState,
    principal: Option<&Principal>,
    owner: &str,
    body: CreateLink,
    now: i64,
    imported: bool,
) -> AppResult<NewLink> {
    let domain = plan_domain(state, principal, body.domain.as_deref())?;
    let url = check_target(state, &body.url)?;
    let code = match (body.alias, body.strategy) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "alias",
                "give either alias or strategy, not both",
            ));
        }
        (Some(alias), None) => {
            let shortest = if imported { 1 } else { codes::ALIAS_LEN_MIN };
            codes::check_alias(&alias, shortest)
                .map_err(|reason| ApiError::invalid("alias", reason))?;
            CodePlan::Alias(
                Code::parse(&alias).map_err(|e| ApiError::invalid("alias", e.to_string()))?,
            )
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
        id: LinkId(0),
        code,
        domain,
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
        target_locked: body.target_locked.unwrap_or(false),
        routing: plan_routing(state, body.rules, body.variants, body.sticky_variants)?,
    })
}

async fn create_many(
    state: &Arc<AppState>,
    plans: Vec<NewLink>,
) -> AppResult<Vec<AppResult<links::Created>>> {
    let plans = state.number(plans).await?;
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
    Ok(results
        .into_iter()
        .map(|r| r.map_err(ApiError::from))
        .collect())
}

#[utoipa::path(post, path = "/api/v1/links", request_body = CreateLink, security(("bearer" = [])),
    responses((status = 201, body = LinkOut), (status = 200, description = "hash strategy: the same link already existed", body = LinkOut),
        (status = 409, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub(super) async fn create_link(
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
    let plan = plan_create(&state, principal.as_ref(), &owner, body, now_unix(), false)?;
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
pub(super) async fn create_batch(
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
        .map(|item| plan_create(&state, Some(&principal), &principal.owner, item, now, false))
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

pub(super) async fn read_link(
    state: &Arc<AppState>,
    code: String,
    principal: &Principal,
) -> AppResult<(LinkDoc, u64)> {
    let found = read(state, move |txn| {
        Ok(match links::get(txn, &code)? {
            Some(link) => {
                let clicks = links::clicks(txn, link.id.0)?;
                Some((link, clicks))
            }
            None => None,
        })
    })
    .await?;
    match found {
        Some((link, clicks)) if principal.may_access(&link.owner) => Ok((link, clicks)),
        _ => Err(ApiError::NotFound),
    }
}

#[utoipa::path(get, path = "/api/v1/links/{code}", security(("bearer" = [])),
    params(("code" = String, Path), DomainParam), responses((status = 200, body = LinkOut), (status = 404, body = Problem)))]
pub(super) async fn get_link(
    State(state): Shared,
    Auth(principal): Auth,
    ApiPath(code): ApiPath<String>,
    params: Result<Query<DomainParam>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<LinkOut>> {
    let domain = domain_param(params)?;
    let key = link_key(&state, Some(&principal), domain.as_deref(), code)?;
    let (link, clicks) = read_link(&state, key, &principal).await?;
    Ok(Json(LinkOut::new(&state, link, clicks)))
}

#[utoipa::path(get, path = "/api/v1/links", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = LinkPage), (status = 422, body = Problem)))]
pub(super) async fn list_links(
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
        && !shortline_store::is_valid_key(cursor.as_bytes())
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
    let (page, next) = read(&state, move |txn| {
        let (page, next) = links::list(txn, &query)?;
        let mut with_clicks = Vec::with_capacity(page.len());
        for link in page {
            let clicks = links::clicks(txn, link.id.0)?;
            with_clicks.push((link, clicks));
        }
        Ok((with_clicks, next))
    })
    .await?;
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
        target_locked: body.target_locked,
        rules: body
            .rules
            .map(|r| routing::rules(state, &r, check_target))
            .transpose()?,
        variants: body
            .variants
            .map(|v| routing::variants(state, &v, check_target))
            .transpose()?,
        sticky_variants: body.sticky_variants,
    })
}

/// A new link's rules and split, every target checked and the whole
/// within its limits.
fn plan_routing(
    state: &AppState,
    rules: Option<Vec<RuleBody>>,
    variants: Option<Vec<VariantBody>>,
    sticky: Option<bool>,
) -> AppResult<Option<Box<Routing>>> {
    let planned = Routing {
        rules: routing::rules(state, &rules.unwrap_or_default(), check_target)?,
        variants: routing::variants(state, &variants.unwrap_or_default(), check_target)?,
        sticky: sticky.unwrap_or(true),
    };
    links::check_routing(&planned).map_err(|(field, reason)| ApiError::invalid(field, reason))?;
    Ok((!planned.is_empty()).then(|| Box::new(planned)))
}

#[utoipa::path(patch, path = "/api/v1/links/{code}", request_body = PatchLink, security(("bearer" = [])),
    params(("code" = String, Path), DomainParam),
    responses((status = 200, body = LinkOut), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn patch_link(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(code): ApiPath<String>,
    params: Result<Query<DomainParam>, axum::extract::rejection::QueryRejection>,
    ApiJson(body): ApiJson<PatchLink>,
) -> AppResult<Json<LinkOut>> {
    state.limit_write(&principal, client.ip())?;
    let domain = domain_param(params)?;
    let code = link_key(&state, Some(&principal), domain.as_deref(), code)?;
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
    let (link, clicks) = read_link(&state, link.code.into(), &principal).await?;
    Ok(Json(LinkOut::new(&state, link, clicks)))
}

#[utoipa::path(delete, path = "/api/v1/links/{code}", security(("bearer" = [])), params(("code" = String, Path), DomainParam),
    responses((status = 204), (status = 404, body = Problem)))]
pub(super) async fn delete_link(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(code): ApiPath<String>,
    params: Result<Query<DomainParam>, axum::extract::rejection::QueryRejection>,
) -> AppResult<StatusCode> {
    state.limit_write(&principal, client.ip())?;
    let domain = domain_param(params)?;
    let code = link_key(&state, Some(&principal), domain.as_deref(), code)?;
    state
        .committer
        .write(move |txn| links::delete(txn, &code, &principal))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}
