//! The stats endpoints: one link's clicks over a period, and the top links.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiPath, Auth, read};
use super::problem::ApiError;
use crate::analytics::Granularity;
use crate::analytics::stats::{self, Stats};
use crate::domain::links;
use crate::state::AppState;

/// Most buckets one stats request may cover.
pub const STATS_BUCKETS_MAX: i64 = 3700;
/// Longest period of the top-links report, in days.
pub const TOP_DAYS_MAX: i64 = 92;
/// Most entries per breakdown in a stats answer.
const BREAKDOWN_MAX: usize = 100;
/// Most links in the top-links report.
const TOP_LIMIT_MAX: usize = 1000;

/// The period and resolution of a stats request.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    /// Start (RFC 3339); default: 30 days (hour: 7 days) before `to`.
    pub from: Option<String>,
    /// End, exclusive (RFC 3339); default: now.
    pub to: Option<String>,
    /// `hour` or `day` (default).
    #[param(value_type = Option<String>)]
    pub granularity: Option<Granularity>,
    /// The short domain of the code (default: the default domain).
    pub domain: Option<String>,
}

/// The period of the top-links report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TopParams {
    /// First day (RFC 3339); default: 7 days before `to`.
    pub from: Option<String>,
    /// End, exclusive (RFC 3339); default: now.
    pub to: Option<String>,
    /// Links to list, 1 to 1000 (default 10).
    pub limit: Option<usize>,
}

/// One link in the top-links report.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopLink {
    pub code: String,
    /// The short domain of the code.
    pub domain: String,
    pub human_clicks: u64,
}

/// The top-links report.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopLinks {
    #[schema(value_type = String)]
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[schema(value_type = String)]
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub items: Vec<TopLink>,
}

fn time_param(field: &str, text: Option<&str>, default: i64) -> Result<i64, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => super::wire::parse_rfc3339(field, text),
    }
}

fn period(from: Option<&str>, to: Option<&str>, default_span: i64) -> Result<(i64, i64), ApiError> {
    let now = crate::model::now_unix();
    let to = time_param("to", to, now)?;
    let from = time_param("from", from, to - default_span)?;
    if from < 0 {
        return Err(ApiError::invalid("from", "must not be before 1970"));
    }
    if from >= to {
        return Err(ApiError::invalid("from", "must be before to"));
    }
    Ok((from, to))
}

#[utoipa::path(get, path = "/api/v1/links/{code}/stats", security(("bearer" = [])),
    params(("code" = String, Path), StatsParams),
    responses((status = 200, body = Stats), (status = 404, body = crate::http::problem::Problem),
        (status = 422, body = crate::http::problem::Problem)))]
pub(super) async fn link_stats(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(code): ApiPath<String>,
    params: Result<Query<StatsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Stats>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let granularity = params.granularity.unwrap_or(Granularity::Day);
    let default_span = match granularity {
        Granularity::Hour => 7 * 86_400,
        Granularity::Day => 30 * 86_400,
    };
    let (from, to) = period(params.from.as_deref(), params.to.as_deref(), default_span)?;
    let buckets = (to - from + granularity.seconds() - 1) / granularity.seconds();
    if buckets > STATS_BUCKETS_MAX {
        return Err(ApiError::invalid(
            "from",
            format!(
                "a request covers at most {STATS_BUCKETS_MAX} buckets; use a shorter period or granularity=day"
            ),
        ));
    }
    let code = super::links::link_key(&state, Some(&principal), params.domain.as_deref(), code)?;
    let found = read(&state, move |txn| {
        Ok(match links::get(txn, &code)? {
            Some(link) if principal.may_access(&link.owner) => Some(stats::link_stats(
                txn,
                &link.code,
                link.id.0,
                from,
                to,
                granularity,
                BREAKDOWN_MAX,
            )?),
            _ => None,
        })
    })
    .await?;
    let mut stats = found.ok_or(ApiError::NotFound)?;
    let (domain, _) = super::links::domain_of(&state, &stats.code);
    stats.code = crate::domain::domains::split_key(&stats.code).1.to_owned();
    stats.domain = domain;
    Ok(Json(stats))
}

#[utoipa::path(get, path = "/api/v1/stats/top", security(("bearer" = [])), params(TopParams),
    responses((status = 200, body = TopLinks), (status = 403, body = crate::http::problem::Problem),
        (status = 422, body = crate::http::problem::Problem)))]
pub(super) async fn top_links(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    params: Result<Query<TopParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TopLinks>, ApiError> {
    if !principal.is_admin() {
        return Err(ApiError::Forbidden(
            "the top-links report is for admins".into(),
        ));
    }
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = params.limit.unwrap_or(10);
    if limit == 0 || limit > TOP_LIMIT_MAX {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {TOP_LIMIT_MAX}"),
        ));
    }
    let (from, to) = period(params.from.as_deref(), params.to.as_deref(), 7 * 86_400)?;
    let first = Granularity::Day.bucket(from);
    let last = Granularity::Day.bucket(to - 1);
    if i64::from(last - first) >= TOP_DAYS_MAX {
        return Err(ApiError::invalid(
            "from",
            format!("the report covers at most {TOP_DAYS_MAX} days"),
        ));
    }
    let items = read(&state, move |txn| {
        let mut items = Vec::new();
        for (id, human_clicks) in stats::top_links(txn, first, last, limit)? {
            if let Some(code) = links::code_of(txn, id)? {
                items.push(TopLink {
                    code,
                    domain: String::new(),
                    human_clicks,
                });
            }
        }
        Ok(items)
    })
    .await?;
    let items = items
        .into_iter()
        .map(|item| TopLink {
            domain: super::links::domain_of(&state, &item.code).0,
            code: crate::domain::domains::split_key(&item.code).1.to_owned(),
            ..item
        })
        .collect();
    Ok(Json(TopLinks {
        from: OffsetDateTime::from_unix_timestamp(Granularity::Day.start(first))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        to: OffsetDateTime::from_unix_timestamp(Granularity::Day.start(last + 1))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        items,
    }))
}
