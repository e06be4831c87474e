//! `/api/v1/users`: people's accounts, managed by admins. An account is
//! made with an invitation, a one-time token the admin hands over (no mail
//! server is assumed); its holder sets the password at
//! `POST /api/v1/auth/redeem`. A reset is the same kind of token.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, Auth, Shared, read, require_admin};
use super::problem::{ApiError, AppResult, Problem};
use super::wire::rfc3339;
use crate::domain::auth::token_hash;
use crate::domain::users;
use crate::model::{Role, TokenKind, UserDoc, now_unix};

/// A user's role: `admin` (everything) or `member` (their own links).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    Admin,
    Member,
}

impl From<Role> for UserRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Admin => Self::Admin,
            Role::User => Self::Member,
        }
    }
}

impl From<UserRole> for Role {
    fn from(role: UserRole) -> Self {
        match role {
            UserRole::Admin => Self::Admin,
            UserRole::Member => Self::User,
        }
    }
}

/// A user as the API shows it: never the password's hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserOut {
    pub id: String,
    /// Also the owner of the links the user makes.
    pub email: String,
    pub role: UserRole,
    pub created_at: String,
    pub created_by: String,
    pub disabled: bool,
    /// Whether a password is set (an invitation was accepted).
    pub password_set: bool,
    /// When a lock-out after failed sign-ins ends (RFC 3339), while locked.
    pub locked_until: Option<String>,
    pub last_login_at: Option<String>,
}

impl UserOut {
    #[must_use]
    pub fn new(user: UserDoc) -> Self {
        let now = now_unix();
        Self {
            id: user.id,
            email: user.email,
            role: user.role.into(),
            created_at: rfc3339(user.created_at),
            created_by: user.created_by,
            disabled: user.disabled,
            password_set: user.password_hash.is_some(),
            locked_until: user.locked_until.filter(|t| *t > now).map(rfc3339),
            last_login_at: user.last_login_at.map(rfc3339),
        }
    }
}

/// A new user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub role: UserRole,
}

/// A one-time token to hand over: it sets the user's password once, at
/// `POST /api/v1/auth/redeem`, until it expires.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OneTimeToken {
    pub kind: TokenKind,
    pub token: String,
    pub expires_at: String,
}

/// A user made, with their invitation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedUser {
    pub user: UserOut,
    pub invitation: OneTimeToken,
}

/// A change of a user; absent fields are kept.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    pub role: Option<UserRole>,
    /// A disabled user cannot sign in; their sessions end and their keys
    /// stop working.
    pub disabled: Option<bool>,
}

#[utoipa::path(post, path = "/api/v1/users", request_body = CreateUser, security(("bearer" = [])),
    responses((status = 201, body = CreatedUser), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn create_user(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateUser>,
) -> AppResult<(StatusCode, Json<CreatedUser>)> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    let email = users::normalize_email(&body.email).map_err(|e| ApiError::invalid("email", e))?;
    let now = now_unix();
    let user = UserDoc {
        id: format!("usr_{}", crate::domain::codes::random_code(12)),
        email,
        role: body.role.into(),
        password_hash: None,
        created_at: now,
        created_by: principal.key_name.clone(),
        disabled: false,
        failed_logins: 0,
        locked_until: None,
        password_changed_at: None,
        last_login_at: None,
    };
    let token = users::new_secret("inv_");
    let hash = token_hash(&token);
    let stored = user.clone();
    state
        .committer
        .write(move |txn| users::create(txn, &stored, &hash))
        .await??;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user: UserOut::new(user),
            invitation: OneTimeToken {
                kind: TokenKind::Invitation,
                token,
                expires_at: rfc3339(now + users::INVITATION_SECONDS),
            },
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/users", security(("bearer" = [])),
    responses((status = 200, body = [UserOut])))]
pub(super) async fn list_users(
    State(state): Shared,
    Auth(principal): Auth,
) -> AppResult<Json<Vec<UserOut>>> {
    require_admin(&principal)?;
    let all = read(&state, |txn| users::list(txn)).await?;
    Ok(Json(all.into_iter().map(UserOut::new).collect()))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = UserOut), (status = 404, body = Problem)))]
pub(super) async fn get_user(
    State(state): Shared,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> AppResult<Json<UserOut>> {
    require_admin(&principal)?;
    let user = read(&state, move |txn| users::get(txn, &id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(UserOut::new(user)))
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", request_body = PatchUser, security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = UserOut), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn patch_user(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchUser>,
) -> AppResult<Json<UserOut>> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    let user = state
        .committer
        .write(move |txn| {
            let Some(mut user) = users::get(&*txn, &id)? else {
                return Ok(Err(crate::domain::Error::NotFound));
            };
            let role: Option<Role> = body.role.map(Into::into);
            let demoted = user.role == Role::Admin && role == Some(Role::User);
            let disabling = !user.disabled && body.disabled == Some(true);
            if (demoted || disabling)
                && user.role == Role::Admin
                && !users::other_admin(&*txn, &id)?
            {
                return Ok(Err(crate::domain::Error::conflict(
                    if demoted { "role" } else { "disabled" },
                    "this is the last enabled admin; make another admin first",
                )));
            }
            if let Some(role) = role {
                user.role = role;
            }
            if let Some(disabled) = body.disabled {
                user.disabled = disabled;
            }
            users::put(txn, &user)?;
            if user.disabled {
                users::end_sessions(txn, &user.id, None)?;
            }
            Ok(Ok(user))
        })
        .await??;
    // Keys of this user act with its new role, or not at all.
    state.keys.forget_all();
    Ok(Json(UserOut::new(user)))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn delete_user(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> AppResult<StatusCode> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    state
        .committer
        .write(move |txn| {
            let Some(user) = users::get(&*txn, &id)? else {
                return Ok(Err(crate::domain::Error::NotFound));
            };
            if user.role == Role::Admin && !user.disabled && !users::other_admin(&*txn, &id)? {
                return Ok(Err(crate::domain::Error::conflict(
                    "id",
                    "this is the last enabled admin; make another admin first",
                )));
            }
            users::delete(txn, &id)?;
            Ok(Ok(()))
        })
        .await??;
    state.keys.forget_all();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/users/{id}/reset", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = OneTimeToken), (status = 404, body = Problem)))]
pub(super) async fn reset_user(
    State(state): Shared,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> AppResult<Json<OneTimeToken>> {
    require_admin(&principal)?;
    state.limit_write(&principal, client.ip())?;
    let token = users::new_secret("rst_");
    let hash = token_hash(&token);
    let expires_at = now_unix() + users::RESET_SECONDS;
    state
        .committer
        .write(move |txn| {
            if users::get(&*txn, &id)?.is_none() {
                return Ok(Err(crate::domain::Error::NotFound));
            }
            users::grant(txn, &hash, TokenKind::Reset, &id, expires_at)?;
            Ok(Ok(()))
        })
        .await??;
    Ok(Json(OneTimeToken {
        kind: TokenKind::Reset,
        token,
        expires_at: rfc3339(expires_at),
    }))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}/sessions", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub(super) async fn end_user_sessions(
    State(state): Shared,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> AppResult<StatusCode> {
    require_admin(&principal)?;
    state
        .committer
        .write(move |txn| {
            if users::get(&*txn, &id)?.is_none() {
                return Ok(Err(crate::domain::Error::NotFound));
            }
            users::end_sessions(txn, &id, None)?;
            Ok(Ok(()))
        })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}
