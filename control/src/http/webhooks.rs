//! `/api/v1/webhooks`: subscriptions to link events, and their delivery
//! logs. An admin's hear about every link (or one owner's); a user's about
//! the user's own links.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, Auth, Shared, read};
use super::problem::{ApiError, AppResult, Problem};
use super::wire::rfc3339;
use crate::domain::auth::Principal;
use crate::domain::codes::random_code;
use crate::domain::webhooks;
use crate::model::{AttemptDoc, EventKind, WebhookDoc, now_unix, rfc3339_ms};
use crate::tasks::webhooks::check_target;

/// A new subscription.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are posted: `http` or `https`, a public address unless
    /// the server allows private ones.
    pub url: String,
    /// Which events: `link.created`, `link.updated`, `link.deleted`,
    /// `link.flagged`, `link.clicks`.
    pub events: Vec<EventKind>,
    /// Admins only: hear about this owner's links alone. A user's
    /// subscription always hears about the user's own links.
    pub owner: Option<String>,
}

/// A change of a subscription; absent fields are kept.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWebhook {
    pub url: Option<String>,
    pub events: Option<Vec<EventKind>>,
    /// `true` turns a disabled subscription back on: its failures are
    /// forgotten and its waiting events are tried at once.
    pub enabled: Option<bool>,
}

/// A subscription as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookOut {
    pub id: String,
    pub url: String,
    pub events: Vec<EventKind>,
    /// Whose links it hears about; null for every link.
    pub owner: Option<String>,
    /// The name of the key that made it.
    pub created_by: String,
    pub created_at: String,
    pub enabled: bool,
    /// Why it was disabled, when deliveries kept failing.
    pub disabled_reason: Option<String>,
    /// Events waiting to be delivered.
    pub pending: u64,
    /// Events delivered, ever.
    pub delivered: u64,
    /// Since when the oldest waiting event has been failing (RFC 3339).
    pub failing_since: Option<String>,
    /// Failed attempts at the oldest waiting event.
    pub attempts: u32,
    /// When it is tried next, while failing (RFC 3339).
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    /// The signing secret: only in the answer that created the subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookOut {
    fn new(hook: WebhookDoc, secret: bool) -> Self {
        Self {
            pending: hook.queued.saturating_sub(hook.delivered),
            failing_since: hook.failing_since.map(rfc3339_ms),
            next_attempt_at: hook
                .failing_since
                .is_some()
                .then(|| rfc3339_ms(hook.next_attempt_at)),
            secret: secret.then_some(hook.secret),
            id: hook.id,
            url: hook.url,
            events: hook.events,
            owner: hook.owner,
            created_by: hook.created_by,
            created_at: rfc3339(hook.created_at),
            enabled: hook.enabled,
            disabled_reason: hook.disabled_reason,
            delivered: hook.delivered,
            attempts: hook.attempts,
            last_error: hook.last_error,
        }
    }
}

/// One delivery attempt, newest first in a log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptOut {
    /// When it started (RFC 3339, to the millisecond).
    pub at: String,
    pub event_id: String,
    pub event_type: String,
    /// The receiver's status; null when none came back.
    pub status: Option<u16>,
    /// Why it failed; null when delivered.
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Which attempt at this event, from 1.
    pub attempt: u32,
}

impl From<AttemptDoc> for AttemptOut {
    fn from(a: AttemptDoc) -> Self {
        Self {
            at: rfc3339_ms(a.at),
            event_id: a.event_id,
            event_type: a.event_type,
            status: a.status,
            error: a.error,
            duration_ms: a.duration_ms,
            attempt: a.attempt,
        }
    }
}

/// A subscription's delivery log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deliveries {
    pub webhook: WebhookOut,
    /// The newest attempts (at most 100), newest first.
    pub attempts: Vec<AttemptOut>,
}

fn check_events(events: &[EventKind]) -> AppResult<Vec<EventKind>> {
    let mut events = events.to_vec();
    events.sort_unstable();
    events.dedup();
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            format!(
                "name at least one of {}",
                EventKind::ALL.map(EventKind::as_str).join(", ")
            ),
        ));
    }
    Ok(events)
}

async fn check_url(state: &crate::state::AppState, url: &str) -> AppResult<String> {
    check_target(url, state.config.webhook_allow_private)
        .await
        .map(|u| u.to_string())
        .map_err(|reason| ApiError::invalid("url", reason))
}

fn owner_for(principal: &Principal, asked: Option<String>) -> AppResult<Option<String>> {
    match asked {
        _ if !principal.is_admin() => match asked {
            Some(owner) if owner != principal.owner => Err(ApiError::invalid(
                "owner",
                "a user's subscription hears about the user's own links; leave owner out",
            )),
            _ => Ok(Some(principal.owner.clone())),
        },
        Some(owner)
            if owner.is_empty() || owner.len() > 128 || owner.chars().any(char::is_control) =>
        {
            Err(ApiError::invalid(
                "owner",
                "an owner is 1 to 128 printable characters",
            ))
        }
        asked => Ok(asked),
    }
}

#[utoipa::path(post, path = "/api/v1/webhooks", request_body = CreateWebhook, security(("bearer" = [])),
    responses((status = 201, body = WebhookOut), (status = 422, body = Problem)))]
pub(super) async fn create_webhook(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> AppResult<(StatusCode, Json<WebhookOut>)> {
    state.limit_write(&principal, client.ip())?;
    let events = check_events(&body.events)?;
    let owner = owner_for(&principal, body.owner)?;
    let url = check_url(&state, &body.url).await?;
    let hook = webhooks::subscription(
        format!("wh_{}", random_code(12)),
        url,
        events,
        owner,
        principal.key_name.clone(),
        now_unix(),
    );
    let stored = hook.clone();
    state
        .committer
        .write(move |txn| webhooks::create(txn, &stored))
        .await??;
    Ok((StatusCode::CREATED, Json(WebhookOut::new(hook, true))))
}

#[utoipa::path(get, path = "/api/v1/webhooks", security(("bearer" = [])),
    responses((status = 200, body = [WebhookOut])))]
pub(super) async fn list_webhooks(
    State(state): Shared,
    Auth(principal): Auth,
) -> AppResult<Json<Vec<WebhookOut>>> {
    let hooks = read(&state, |txn| webhooks::list(txn)).await?;
    Ok(Json(
        hooks
            .into_iter()
            .filter(|h| principal.is_admin() || h.owner.as_deref() == Some(&principal.owner))
            .map(|h| WebhookOut::new(h, false))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = WebhookOut), (status = 404, body = Problem)))]
pub(super) async fn get_webhook(
    State(state): Shared,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> AppResult<Json<WebhookOut>> {
    let hook = read(&state, move |txn| webhooks::get_for(txn, &id, &principal)).await??;
    Ok(Json(WebhookOut::new(hook, false)))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Deliveries), (status = 404, body = Problem)))]
pub(super) async fn webhook_deliveries(
    State(state): Shared,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> AppResult<Json<Deliveries>> {
    let (hook, attempts) = read(&state, move |txn| {
        Ok(match webhooks::get_for(txn, &id, &principal)? {
            Ok(hook) => {
                let attempts = webhooks::attempts(txn, &hook)?;
                Ok((hook, attempts))
            }
            Err(e) => Err(e),
        })
    })
    .await??;
    Ok(Json(Deliveries {
        webhook: WebhookOut::new(hook, false),
        attempts: attempts.into_iter().map(AttemptOut::from).collect(),
    }))
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", request_body = PatchWebhook, security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = WebhookOut), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn patch_webhook(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchWebhook>,
) -> AppResult<Json<WebhookOut>> {
    state.limit_write(&principal, client.ip())?;
    let events = body.events.as_deref().map(check_events).transpose()?;
    let url = match &body.url {
        Some(url) => Some(check_url(&state, url).await?),
        None => None,
    };
    let enabled = body.enabled;
    let hook = state
        .committer
        .write(move |txn| {
            let mut hook = match webhooks::get_for(&*txn, &id, &principal)? {
                Ok(hook) => hook,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(url) = &url {
                hook.url.clone_from(url);
            }
            if let Some(events) = &events {
                hook.events.clone_from(events);
            }
            match enabled {
                Some(true) if !hook.enabled => webhooks::enable(&mut hook),
                Some(false) => {
                    hook.enabled = false;
                    hook.disabled_reason = None;
                }
                _ => {}
            }
            webhooks::put(txn, &hook)?;
            Ok(Ok(hook))
        })
        .await??;
    Ok(Json(WebhookOut::new(hook, false)))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub(super) async fn delete_webhook(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> AppResult<StatusCode> {
    state.limit_write(&principal, client.ip())?;
    state
        .committer
        .write(move |txn| {
            if let Err(e) = webhooks::get_for(&*txn, &id, &principal)? {
                return Ok(Err(e));
            }
            webhooks::delete(txn, &id)?;
            Ok(Ok(()))
        })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}
