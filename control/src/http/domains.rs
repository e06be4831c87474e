//! `/api/v1/domains` (admin): the short domains links are served under.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shortline_store::Target;

use super::extract::{ApiJson, ApiPath, Auth, Shared, read, require_admin};
use super::problem::{ApiError, AppResult, Problem};
use super::wire::{nullable, rfc3339};
use crate::domain::acme;
use crate::domain::domains::{self, DomainDoc, DomainPatch};
use crate::model::now_unix;
use crate::state::AppState;

/// HSTS `max-age` at most: two years, what browsers' preload lists ask.
const HSTS_MAX_AGE_MAX: u64 = 2 * 365 * 86_400;

/// A domain as the API returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainOut {
    /// ASCII (an internationalised name in its `xn--` form).
    pub name: String,
    /// The name as people read it (Unicode).
    pub display_name: String,
    /// Whether links created without a `domain` go here.
    pub default: bool,
    /// Where this domain's short links start (`https://go.acme.com`).
    pub base_url: String,
    pub https: bool,
    pub https_redirect: bool,
    pub hsts_max_age: u64,
    /// Whether the certificate is ordered and renewed over ACME.
    pub acme: bool,
    /// The ACME certificate: when it runs out, and how ordering went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateOut>,
    /// Where `/` redirects; null: the built-in page.
    pub root_redirect: Option<String>,
    /// Where an unknown code redirects; null: the built-in 404 page.
    pub not_found_redirect: Option<String>,
    /// Where an expired or used-up link redirects; null: the built-in 410 page.
    pub expired_redirect: Option<String>,
    pub created_at: String,
}

/// The state of a domain's ACME certificate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateOut {
    /// RFC 3339; null until one is issued.
    pub not_after: Option<String>,
    pub issued_at: Option<String>,
    /// The last order's failure, until one succeeds.
    pub last_error: Option<String>,
    /// After a failure: no order before this (RFC 3339).
    pub next_attempt_at: Option<String>,
}

impl DomainOut {
    fn new(doc: DomainDoc, default: bool) -> Self {
        let (display_name, _) = idna::domain_to_unicode(&doc.name);
        Self {
            display_name,
            default,
            base_url: doc.base_url(),
            https: doc.https,
            https_redirect: doc.https_redirect,
            hsts_max_age: doc.hsts_max_age,
            acme: doc.acme,
            certificate: None,
            root_redirect: doc.root_redirect.map(String::from),
            not_found_redirect: doc.not_found_redirect.map(String::from),
            expired_redirect: doc.expired_redirect.map(String::from),
            created_at: rfc3339(doc.created_at),
            name: doc.name,
        }
    }
}

/// A new domain.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    /// The domain name; an internationalised one is stored in its ASCII form.
    pub name: String,
    /// Make it the default domain (the first domain always is).
    pub default: Option<bool>,
    /// Short links are `https://` (default: false).
    pub https: Option<bool>,
    /// The plain listener redirects requests for this domain to HTTPS.
    pub https_redirect: Option<bool>,
    /// HSTS `max-age` in seconds sent over HTTPS (0, the default, sends none).
    pub hsts_max_age: Option<u64>,
    /// Order and renew the certificate over ACME (needs `acme_directory_url`).
    pub acme: Option<bool>,
    pub root_redirect: Option<String>,
    pub not_found_redirect: Option<String>,
    pub expired_redirect: Option<String>,
}

/// Changes to a domain; absent fields are left alone, null clears a redirect.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDomain {
    /// `true` makes this the default domain; to move the default, set it on
    /// the new one.
    pub default: Option<bool>,
    pub https: Option<bool>,
    pub https_redirect: Option<bool>,
    pub hsts_max_age: Option<u64>,
    pub acme: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub root_redirect: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub not_found_redirect: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub expired_redirect: Option<Option<String>>,
}

/// Every domain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainList {
    pub items: Vec<DomainOut>,
}

/// A redirect target of a domain: a good URL, and not on a short domain,
/// where it could loop.
async fn check_redirect(
    state: &Arc<AppState>,
    field: &str,
    raw: Option<String>,
) -> AppResult<Option<Target>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let url = state
        .validator
        .target(&raw)
        .map_err(|e| ApiError::invalid(field, e.to_string()))?;
    if let Some(host) = crate::domain::links::host_of(&url) {
        let short = read(state, move |txn| domains::is_short_domain(txn, &host)).await?;
        if short {
            return Err(ApiError::invalid(
                field,
                "points at a short domain here, where it could loop",
            ));
        }
    }
    Ok(Some(url))
}

fn check_hsts(max_age: Option<u64>) -> AppResult<Option<u64>> {
    match max_age {
        Some(age) if age > HSTS_MAX_AGE_MAX => Err(ApiError::invalid(
            "hsts_max_age",
            format!("at most {HSTS_MAX_AGE_MAX} seconds (two years)"),
        )),
        other => Ok(other),
    }
}

fn check_acme(state: &AppState, acme: Option<bool>) -> AppResult<Option<bool>> {
    if acme == Some(true) && state.config.acme_directory_url.is_none() {
        return Err(ApiError::invalid(
            "acme",
            "no ACME directory is configured (acme_directory_url)",
        ));
    }
    Ok(acme)
}

/// The domain's ACME certificate state, for domains that use ACME.
async fn with_certificate(state: &Arc<AppState>, mut out: DomainOut) -> AppResult<DomainOut> {
    if !out.acme {
        return Ok(out);
    }
    let name = out.name.clone();
    let (cert, status) = read(state, move |txn| {
        Ok((acme::certificate(txn, &name)?, acme::status(txn, &name)?))
    })
    .await?;
    out.certificate = Some(CertificateOut {
        not_after: cert.as_ref().map(|c| rfc3339(c.not_after)),
        issued_at: cert.as_ref().map(|c| rfc3339(c.issued_at)),
        next_attempt_at: (status.failures > 0).then(|| rfc3339(status.next_attempt_at)),
        last_error: status.last_error,
    });
    Ok(out)
}

fn refreshed(state: &AppState) -> AppResult<Arc<crate::state::domains::DomainTable>> {
    Ok(state.domains.refresh(&*state.backend)?)
}

fn normalized(name: &str) -> AppResult<String> {
    domains::normalize(name).map_err(|_| ApiError::NotFound)
}

#[utoipa::path(post, path = "/api/v1/domains", request_body = CreateDomain, security(("bearer" = [])),
    responses((status = 201, body = DomainOut), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn create_domain(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateDomain>,
) -> AppResult<(StatusCode, Json<DomainOut>)> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    let name = domains::normalize(&body.name)?;
    let now = now_unix();
    let doc = DomainDoc {
        name,
        scoped: true,
        https: body.https.unwrap_or(false),
        https_redirect: body.https_redirect.unwrap_or(false),
        hsts_max_age: check_hsts(body.hsts_max_age)?.unwrap_or(0),
        acme: check_acme(&state, body.acme)?.unwrap_or(false),
        root_redirect: check_redirect(&state, "root_redirect", body.root_redirect).await?,
        not_found_redirect: check_redirect(&state, "not_found_redirect", body.not_found_redirect)
            .await?,
        expired_redirect: check_redirect(&state, "expired_redirect", body.expired_redirect).await?,
        port: None,
        created_at: now,
        updated_at: now,
    };
    let make_default = body.default.unwrap_or(false);
    let created = state
        .committer
        .write(move |txn| domains::create(txn, doc.clone(), make_default))
        .await??;
    let table = refreshed(&state)?;
    let default = table.default.as_deref() == Some(&created.name);
    let out = with_certificate(&state, DomainOut::new(created, default)).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(get, path = "/api/v1/domains", security(("bearer" = [])),
    responses((status = 200, body = DomainList)))]
pub(super) async fn list_domains(
    State(state): Shared,
    Auth(principal): Auth,
) -> AppResult<Json<DomainList>> {
    require_admin(&principal)?;
    let table = refreshed(&state)?;
    let mut items = Vec::with_capacity(table.by_name.len());
    for doc in table.by_name.values() {
        let default = table.default.as_deref() == Some(&doc.name);
        items.push(with_certificate(&state, DomainOut::new(doc.clone(), default)).await?);
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(DomainList { items }))
}

#[utoipa::path(get, path = "/api/v1/domains/{name}", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = DomainOut), (status = 404, body = Problem)))]
pub(super) async fn get_domain(
    State(state): Shared,
    Auth(principal): Auth,
    ApiPath(name): ApiPath<String>,
) -> AppResult<Json<DomainOut>> {
    require_admin(&principal)?;
    let name = normalized(&name)?;
    let (doc, default) = read(&state, move |txn| {
        Ok((domains::get(txn, &name)?, domains::default_name(txn)?))
    })
    .await?;
    let doc = doc.ok_or(ApiError::NotFound)?;
    let is_default = default.as_deref() == Some(&doc.name);
    Ok(Json(
        with_certificate(&state, DomainOut::new(doc, is_default)).await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/domains/{name}", request_body = PatchDomain, security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = DomainOut), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn patch_domain(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PatchDomain>,
) -> AppResult<Json<DomainOut>> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    let name = normalized(&name)?;
    if body.default == Some(false) {
        return Err(ApiError::invalid(
            "default",
            "to move the default, set default: true on the new default domain",
        ));
    }
    let redirect = async |field: &str, value: Option<Option<String>>| match value {
        Some(value) => check_redirect(&state, field, value).await.map(Some),
        None => Ok(None),
    };
    let patch = DomainPatch {
        make_default: body.default == Some(true),
        https: body.https,
        https_redirect: body.https_redirect,
        hsts_max_age: check_hsts(body.hsts_max_age)?,
        acme: check_acme(&state, body.acme)?,
        root_redirect: redirect("root_redirect", body.root_redirect).await?,
        not_found_redirect: redirect("not_found_redirect", body.not_found_redirect).await?,
        expired_redirect: redirect("expired_redirect", body.expired_redirect).await?,
    };
    let now = now_unix();
    let doc = state
        .committer
        .write(move |txn| domains::patch(txn, &name, &patch, now))
        .await??;
    let table = refreshed(&state)?;
    let default = table.default.as_deref() == Some(&doc.name);
    Ok(Json(
        with_certificate(&state, DomainOut::new(doc, default)).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/domains/{name}", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn delete_domain(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(name): ApiPath<String>,
) -> AppResult<StatusCode> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    let name = normalized(&name)?;
    state
        .committer
        .write(move |txn| domains::delete(txn, &name))
        .await??;
    refreshed(&state)?;
    Ok(StatusCode::NO_CONTENT)
}
