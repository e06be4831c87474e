//! The one mapping from errors to RFC 9457 `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::commit::CommitError;
use crate::db::StoreError;
use crate::domain;
use crate::state::RateLimited;

/// The `Retry-After` of a 503, in seconds.
const UNAVAILABLE_RETRY_SECONDS: u64 = 1;

/// What a handler returns.
pub type AppResult<T> = Result<T, ApiError>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid API key")]
    Unauthorized,
    /// A sign-in refused: wrong email or password (which, not said).
    #[error("{0}")]
    SignInRefused(String),
    /// Too many failed sign-ins: the account is locked for a while.
    #[error("too many failed sign-ins for this account; try again in {retry_after_seconds} s")]
    LockedOut { retry_after_seconds: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("no such route; see /api/v1/openapi.json")]
    NoRoute,
    #[error("this route does not take that method; see the Allow header")]
    MethodNotAllowed,
    #[error("{field}: {reason}")]
    Conflict { field: String, reason: String },
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("rate limit exceeded; retry in {retry_after_seconds} s")]
    TooManyRequests { retry_after_seconds: u64 },
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("{0}")]
    Unavailable(String),
    /// The store cannot be reached; the text (the error's whole chain) is
    /// logged, never sent.
    #[error("the store is unavailable; retry shortly")]
    StoreUnavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::SignInRefused(_) => StatusCode::UNAUTHORIZED,
            Self::LockedOut { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) | Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "validation",
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized | Self::SignInRefused(_) => "unauthorized",
            Self::LockedOut { .. } => "locked-out",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound | Self::NoRoute => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict { .. } => "conflict",
            Self::RequestTimeout => "request-timeout",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::TooManyRequests { .. } => "rate-limited",
            Self::UnsupportedMedia(_) => "unsupported-media-type",
            Self::Unavailable(_) | Self::StoreUnavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The problem document for this error.
    #[must_use]
    pub fn problem(&self) -> Problem {
        let status = self.status();
        Problem {
            kind: format!("urn:shortline:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            // Internal details are logged, never sent.
            detail: match self {
                Self::Internal(_) => {
                    "the server failed to handle the request; it has been logged".to_owned()
                }
                other => other.to_string(),
            },
            field: match self {
                Self::Invalid { field, .. } | Self::Conflict { field, .. } => Some(field.clone()),
                _ => None,
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Unavailable { .. } => Self::StoreUnavailable(error.chain()),
            StoreError::Conflict => Self::Unavailable("the store is busy; retry".to_owned()),
            other => Self::Internal(other.chain()),
        }
    }
}

impl From<domain::Error> for ApiError {
    fn from(error: domain::Error) -> Self {
        match error {
            domain::Error::Invalid { field, reason } => Self::Invalid { field, reason },
            domain::Error::NotFound => Self::NotFound,
            domain::Error::Forbidden(reason) => Self::Forbidden(reason),
            domain::Error::Conflict { field, reason } => Self::Conflict { field, reason },
            domain::Error::Exhausted(reason) => Self::Unavailable(reason),
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Store(e) => e.into(),
            CommitError::QueueFull => {
                tracing::warn!("write refused: the commit queue is full");
                Self::Unavailable(error.to_string())
            }
            CommitError::Stopped => Self::Unavailable(error.to_string()),
        }
    }
}

impl From<RateLimited> for ApiError {
    fn from(error: RateLimited) -> Self {
        Self::TooManyRequests {
            retry_after_seconds: error.retry_after_seconds,
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::Internal(format!("a blocking task failed: {error}"))
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        // Logged here, once per response: the detail of a 500 never
        // reaches the client, and a 503 says the service is degraded.
        match &self {
            Self::Internal(detail) => tracing::error!(%detail, "request failed"),
            Self::Unavailable(detail) => tracing::warn!(%detail, "request refused: unavailable"),
            Self::StoreUnavailable(error) => tracing::warn!(%error, "store unavailable"),
            _ => {}
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyRequests {
                retry_after_seconds,
            }
            | Self::LockedOut {
                retry_after_seconds,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            // A full queue or an unreachable store passes: say when to
            // try again, as for a rate limit.
            Self::Unavailable(_) | Self::StoreUnavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_SECONDS),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        Self::Internal(format!("{error:#}"))
    }
}
