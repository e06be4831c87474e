//! `/api/v1/keys`: API keys, created by admins.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, Auth, Shared, read, require_admin};
use super::problem::AppResult;
use super::problem::{ApiError, Problem};
use super::wire::rfc3339;
use crate::domain::auth::{self};
use crate::domain::domains;
use crate::domain::links::ANONYMOUS_OWNER;
use crate::domain::users;
use crate::model::Role;
use crate::model::now_unix;
use crate::state::AppState;

/// A new key request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    /// Needed unless the key belongs to a user, whose role it takes.
    pub role: Option<Role>,
    /// The user the key belongs to and acts as (their role and links);
    /// it stops working when they are disabled or deleted.
    pub user: Option<String>,
    /// Whose links a user key manages; defaults to the key's name.
    pub owner: Option<String>,
    /// User keys: the short domains the key may use (default: all).
    pub domains: Option<Vec<String>>,
}

/// A key as listed: never the token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyOut {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub owner: String,
    /// The short domains the key may use; absent for all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<String>>,
    pub created_at: String,
    /// The user it belongs to and acts as, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Only in the response that created the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/keys", request_body = CreateKey, security(("bearer" = [])),
    responses((status = 201, body = KeyOut), (status = 403, body = Problem)))]
pub(super) async fn create_key(
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
    let user = match &body.user {
        Some(id) => {
            if body.owner.is_some() || body.role.is_some() {
                return Err(ApiError::invalid(
                    "user",
                    "a user's key takes the user's role and links; leave role and owner out",
                ));
            }
            let wanted = id.clone();
            Some(
                read(&state, move |txn| users::get(txn, &wanted))
                    .await?
                    .ok_or_else(|| ApiError::invalid("user", format!("no user {id:?}")))?,
            )
        }
        None => None,
    };
    let role = match (&user, body.role) {
        (Some(user), _) => user.role,
        (None, Some(role)) => role,
        (None, None) => {
            return Err(ApiError::invalid(
                "role",
                "give a role (admin or user), or the user the key belongs to",
            ));
        }
    };
    let owner = match &user {
        Some(user) => user.email.clone(),
        None => body.owner.unwrap_or_else(|| name.clone()),
    };
    if owner == ANONYMOUS_OWNER && role == Role::User {
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
    let domains = match body.domains {
        Some(_) if role == Role::Admin => {
            return Err(ApiError::invalid(
                "domains",
                "admin keys use every domain; limit user keys",
            ));
        }
        Some(names) => Some(known_domains(&state, &names).await?),
        None => None,
    };
    let token = auth::new_token();
    let mut doc = auth::key_doc(auth::new_key_id(), name, role, owner, &token, now_unix());
    doc.domains = domains;
    doc.user_id = user.map(|u| u.id);
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
            domains: doc.domains,
            created_at: rfc3339(doc.created_at),
            user_id: doc.user_id,
            token: Some(token),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/keys", security(("bearer" = [])), responses((status = 200, body = [KeyOut])))]
pub(super) async fn list_keys(
    State(state): Shared,
    Auth(principal): Auth,
) -> AppResult<Json<Vec<KeyOut>>> {
    require_admin(&principal)?;
    let keys = read(&state, |txn| auth::list_keys(txn, 10_000)).await?;
    Ok(Json(
        keys.into_iter()
            .map(|k| KeyOut {
                id: k.id,
                name: k.name,
                role: k.role,
                owner: k.owner,
                domains: k.domains,
                created_at: rfc3339(k.created_at),
                user_id: k.user_id,
                token: None,
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/keys/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub(super) async fn delete_key(
    State(state): Shared,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
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

/// `names` normalised, each checked to be a short domain here.
async fn known_domains(state: &Arc<AppState>, names: &[String]) -> AppResult<Vec<String>> {
    if names.is_empty() {
        return Err(ApiError::invalid(
            "domains",
            "name at least one domain, or leave domains out for all",
        ));
    }
    let mut normalised = Vec::with_capacity(names.len());
    for name in names {
        normalised.push(
            domains::normalize(name).map_err(|e| ApiError::invalid("domains", e.to_string()))?,
        );
    }
    normalised.sort();
    normalised.dedup();
    let wanted = normalised.clone();
    let missing = read(state, move |txn| {
        let mut missing = Vec::new();
        for name in &wanted {
            if domains::get(txn, name)?.is_none() {
                missing.push(name.clone());
            }
        }
        Ok(missing)
    })
    .await?;
    if !missing.is_empty() {
        return Err(ApiError::invalid(
            "domains",
            format!("not short domains here: {}", missing.join(", ")),
        ));
    }
    Ok(normalised)
}
