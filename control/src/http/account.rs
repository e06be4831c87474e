//! `/api/v1/auth`: signing in and out, the caller's sessions, and setting a
//! password (with the current one, or with a one-time token).
//!
//! A session lives in an `HttpOnly`, `SameSite=Strict` cookie (also `Secure`
//! when the request came over HTTPS, or always with `session_cookie_secure`);
//! its unsafe requests carry the session's CSRF token in `X-CSRF-Token`
//! (checked in [`super::extract`]).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, Auth, SESSION_COOKIE, Shared, read};
use super::problem::{ApiError, AppResult, Problem};
use super::users::UserOut;
use super::wire::rfc3339;
use crate::domain::auth::token_hash;
use crate::domain::users::{self, SignIn};
use crate::model::{SessionDoc, now_unix};
use crate::state::{AppState, Unauthenticated};

/// A sign-in.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: String,
}

/// Who is calling: a signed-in session (with its CSRF token) or a key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Whoami {
    /// `session` or `key`.
    pub kind: String,
    /// The session's or key's user; absent for a key of no user.
    pub user: Option<UserOut>,
    /// The key's name, or the user's email.
    pub name: String,
    /// `admin` or `user` (a member).
    pub role: crate::model::Role,
    /// Whose links it manages.
    pub owner: String,
    /// Sessions only: what unsafe requests send as `X-CSRF-Token`.
    pub csrf_token: Option<String>,
    /// Sessions only: when it ends (RFC 3339).
    pub expires_at: Option<String>,
}

/// One of the caller's sessions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionOut {
    pub id: String,
    pub created_at: String,
    pub expires_at: String,
    /// The address and browser it was started from.
    pub address: String,
    pub user_agent: String,
    /// Whether this request came in it.
    pub current: bool,
}

/// A new password, with the current one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// A one-time token (an invitation or a reset) and the password it sets.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    pub token: String,
    pub password: String,
}

fn cookie(state: &AppState, headers: &HeaderMap, value: &str, max_age: u64) -> HeaderValue {
    let https = state.config.session_cookie_secure
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a cookie of base62 and ASCII is a valid header")
}

fn check_password(field: &str, password: &str) -> AppResult<()> {
    match users::password_problem(password) {
        Some(reason) => Err(ApiError::invalid(field, reason)),
        None => Ok(()),
    }
}

async fn hashed(password: String) -> AppResult<String> {
    tokio::task::spawn_blocking(move || users::hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

async fn verified(hash: Option<String>, password: String) -> AppResult<bool> {
    tokio::task::spawn_blocking(move || users::verify_password(hash.as_deref(), &password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[utoipa::path(post, path = "/api/v1/auth/login", request_body = Login,
    responses((status = 200, body = Whoami), (status = 401, body = Problem), (status = 429, body = Problem)))]
pub(super) async fn login(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Login>,
) -> AppResult<Response> {
    state.limit_unauthenticated(Unauthenticated::Login, client.ip())?;
    let refused = || ApiError::SignInRefused("wrong email or password".into());
    let Ok(email) = users::normalize_email(&body.email) else {
        return Err(refused());
    };
    let wanted = email.clone();
    let user = read(&state, move |txn| users::by_email(txn, &wanted)).await?;
    let matched = verified(user.and_then(|u| u.password_hash), body.password).await?;
    let now = now_unix();
    let outcome = state
        .committer
        .write(move |txn| users::sign_in(txn, &email, matched, now))
        .await?;
    let user = match outcome {
        SignIn::Accepted(user) => user,
        SignIn::Refused => return Err(refused()),
        SignIn::Locked(until) => {
            return Err(ApiError::LockedOut {
                retry_after_seconds: u64::try_from(until - now).unwrap_or(1).max(1),
            });
        }
        SignIn::Disabled => {
            return Err(ApiError::Forbidden(
                "this account is disabled; ask an admin".into(),
            ));
        }
    };
    let token = users::new_secret("sls_");
    let session = SessionDoc {
        id: format!("ses_{}", crate::domain::codes::random_code(12)),
        user_id: user.id.clone(),
        created_at: now,
        expires_at: now
            .saturating_add(i64::try_from(state.config.session_ttl_seconds).unwrap_or(i64::MAX)),
        csrf: users::new_secret("csrf_"),
        address: client.ip().to_string(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(256)
            .collect(),
    };
    let hash = token_hash(&token);
    let stored = session.clone();
    state
        .committer
        .write(move |txn| users::start_session(txn, &hash, &stored))
        .await?;
    let whoami = Whoami {
        kind: "session".into(),
        name: user.email.clone(),
        role: user.role,
        owner: user.email.clone(),
        user: Some(UserOut::new(user)),
        csrf_token: Some(session.csrf),
        expires_at: Some(rfc3339(session.expires_at)),
    };
    let mut response = Json(whoami).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&state, &headers, &token, state.config.session_ttl_seconds),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/auth/session", security(("bearer" = [])),
    responses((status = 200, body = Whoami)))]
pub(super) async fn whoami(State(state): Shared, Auth(principal): Auth) -> AppResult<Response> {
    let user_id = principal.user_id.clone();
    let session_id = principal.session_id.clone();
    let (user, session) = read(&state, move |txn| {
        let user = match &user_id {
            Some(id) => users::get(txn, id)?,
            None => None,
        };
        let session = match (&user, &session_id) {
            (Some(user), Some(id)) => users::sessions_of(txn, &user.id)?
                .into_iter()
                .map(|(_, s)| s)
                .find(|s| &s.id == id),
            _ => None,
        };
        Ok((user, session))
    })
    .await?;
    let whoami = Whoami {
        kind: if principal.session_id.is_some() {
            "session"
        } else {
            "key"
        }
        .into(),
        user: user.map(UserOut::new),
        name: principal.key_name,
        role: principal.role,
        owner: principal.owner,
        expires_at: session.as_ref().map(|s| rfc3339(s.expires_at)),
        csrf_token: session.map(|s| s.csrf),
    };
    let mut response = Json(whoami).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(post, path = "/api/v1/auth/logout", security(("bearer" = [])),
    responses((status = 204)))]
pub(super) async fn logout(
    State(state): Shared,
    headers: HeaderMap,
    Auth(principal): Auth,
) -> AppResult<Response> {
    if let (Some(user), Some(session)) = (principal.user_id, principal.session_id) {
        state
            .committer
            .write(move |txn| users::end_session(txn, &user, &session))
            .await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, &headers, "", 0));
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/auth/sessions", security(("bearer" = [])),
    responses((status = 200, body = [SessionOut])))]
pub(super) async fn list_sessions(
    State(state): Shared,
    Auth(principal): Auth,
) -> AppResult<Json<Vec<SessionOut>>> {
    let Some(user) = principal.user_id.clone() else {
        return Ok(Json(Vec::new()));
    };
    let now = now_unix();
    let sessions = read(&state, move |txn| users::sessions_of(txn, &user)).await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.expires_at > now)
            .map(|s| SessionOut {
                current: principal.session_id.as_deref() == Some(&s.id),
                id: s.id,
                created_at: rfc3339(s.created_at),
                expires_at: rfc3339(s.expires_at),
                address: s.address,
                user_agent: s.user_agent,
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub(super) async fn end_session(
    State(state): Shared,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> AppResult<StatusCode> {
    let Some(user) = principal.user_id else {
        return Err(ApiError::NotFound);
    };
    let ended = state
        .committer
        .write(move |txn| users::end_session(txn, &user, &id))
        .await?;
    if ended {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[utoipa::path(post, path = "/api/v1/auth/password", request_body = ChangePassword, security(("bearer" = [])),
    responses((status = 204), (status = 422, body = Problem)))]
pub(super) async fn change_password(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<ChangePassword>,
) -> AppResult<StatusCode> {
    state.limit_unauthenticated(Unauthenticated::Login, client.ip())?;
    let Some(user_id) = principal.user_id.clone() else {
        return Err(ApiError::invalid(
            "current_password",
            "this key belongs to no user, so it has no password",
        ));
    };
    check_password("new_password", &body.new_password)?;
    let wanted = user_id.clone();
    let user = read(&state, move |txn| users::get(txn, &wanted))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if !verified(user.password_hash, body.current_password).await? {
        return Err(ApiError::invalid(
            "current_password",
            "the current password is wrong",
        ));
    }
    let hash = hashed(body.new_password).await?;
    let keep = principal.session_id.clone();
    let now = now_unix();
    state
        .committer
        .write(move |txn| {
            let Some(mut user) = users::get(&*txn, &user_id)? else {
                return Ok(());
            };
            user.password_hash = Some(hash.clone());
            user.password_changed_at = Some(now);
            users::put(txn, &user)?;
            // Every other session ends: whoever knew the old password is out.
            users::end_sessions(txn, &user_id, keep.as_deref())?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/auth/redeem", request_body = Redeem,
    responses((status = 200, body = UserOut), (status = 422, body = Problem)))]
pub(super) async fn redeem(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<Redeem>,
) -> AppResult<Json<UserOut>> {
    state.limit_unauthenticated(Unauthenticated::Login, client.ip())?;
    check_password("password", &body.password)?;
    let hash = hashed(body.password).await?;
    let now = now_unix();
    let token = body.token;
    let user = state
        .committer
        .write(move |txn| users::redeem(txn, &token, &hash, now))
        .await??;
    Ok(Json(UserOut::new(user)))
}
