//! Extractors: the JSON body, the caller's key and address, the internal token.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::problem::{ApiError, AppResult};
use crate::db::{StoreResult, View};
use crate::domain::auth::{self, Principal};
use crate::domain::users;
use crate::state::AppState;

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
            Err(e) if super::conn::is_body_timeout(&e) => Err(ApiError::RequestTimeout),
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
        let Some(token) = bearer_token(&parts.headers) else {
            let token = session_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
            let principal = session_principal(state, token)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            return check_csrf(parts, principal).map(Self);
        };
        let token = token.to_owned();
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

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "shortline_session";
/// The header that carries a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session token in the request's cookies, if any.
#[must_use]
pub fn session_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// The caller a session token stands for (their user, role and links),
/// with the session's CSRF token. `None` for no such session, an expired
/// one, or a disabled user. Read from the store every time, so an ended
/// session stops at once.
pub async fn session_principal(
    state: &Arc<AppState>,
    token: &str,
) -> AppResult<Option<(Principal, String)>> {
    let token = token.to_owned();
    let now = crate::model::now_unix();
    let found = read(state, move |txn| users::session(txn, &token, now)).await?;
    Ok(found.map(|(session, user)| {
        let principal = Principal {
            key_id: session.id.clone(),
            key_name: user.email.clone(),
            owner: user.email,
            role: user.role,
            domains: None,
            user_id: Some(user.id),
            session_id: Some(session.id),
        };
        (principal, session.csrf)
    }))
}

/// A session's unsafe request (anything but GET, HEAD and OPTIONS) must
/// carry the session's CSRF token in `X-CSRF-Token`: a page elsewhere can
/// make the browser send the cookie, but cannot read the token.
fn check_csrf(parts: &Parts, (principal, csrf): (Principal, String)) -> AppResult<Principal> {
    if parts.method.is_safe() {
        return Ok(principal);
    }
    let given = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Compare hashes, so the comparison's time says nothing about the token.
    if !given.is_empty() && auth::token_hash(given) == auth::token_hash(&csrf) {
        Ok(principal)
    } else {
        Err(ApiError::Forbidden(
            "a signed-in session must send its CSRF token in the X-CSRF-Token header (GET /api/v1/auth/session gives it)".into(),
        ))
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// matched without regard to case (RFC 9110, section 11.1).
#[must_use]
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A path parameter, with a malformed one (invalid percent-encoding, not
/// UTF-8) answered as a problem document like every other error.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::BadRequest(format!(
                "the request path is not valid: {}",
                e.body_text()
            ))),
        }
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
            return Auth::from_request_parts(parts, state)
                .await
                .map(|Auth(p)| Self(Some(p)));
        }
        // A live session acts as its user (and needs its CSRF token); a
        // stale cookie is no one, as if absent.
        let Some(token) = session_token(&parts.headers) else {
            return Ok(Self(None));
        };
        match session_principal(state, token).await? {
            Some(found) => check_csrf(parts, found).map(|p| Self(Some(p))),
            None => Ok(Self(None)),
        }
    }
}

/// Checks the internal token of a proxy's request.
pub fn check_internal(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let given = bearer_token(headers).ok_or(ApiError::Unauthorized)?;
    // Compare hashes, so the comparison's time says nothing about the token.
    if auth::token_hash(given) == auth::token_hash(&state.internal_token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The shared state, as handlers take it.
pub type Shared = State<Arc<AppState>>;

/// Refuses callers whose key is not an admin's.
pub fn require_admin(principal: &Principal) -> AppResult<()> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this endpoint needs an admin key".into(),
        ))
    }
}

/// Runs `body` against a read view of the store on a blocking thread: the
/// way a handler reads. Store failures map to problems as everywhere.
pub async fn read<T: Send + 'static>(
    state: &AppState,
    body: impl FnMut(&dyn View) -> StoreResult<T> + Send + 'static,
) -> AppResult<T> {
    let backend = Arc::clone(&state.backend);
    Ok(tokio::task::spawn_blocking(move || backend.read(body)).await??)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> axum::http::HeaderMap {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR abc"] {
            assert_eq!(bearer_token(&with(value)), Some("abc"), "{value}");
        }
        for value in ["Basic abc", "Bearer", "Bearer   ", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(&with(value)), None, "{value}");
        }
        assert_eq!(bearer_token(&axum::http::HeaderMap::new()), None);
    }
}
