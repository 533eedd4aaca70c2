//! The one place use-case errors become HTTP responses: 4xx with the detail, 5xx generic
//! with the real error logged once.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ops::OpsError;

/// An error response's body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// The HTTP status, repeated.
    pub status: u16,
    /// What went wrong and, where it helps, what to do.
    pub detail: String,
}

#[derive(Debug)]
pub enum ApiError {
    /// No token, or one that is not (or no longer) valid.
    Unauthenticated,
    /// A valid token whose role may not do this.
    Forbidden(&'static str),
    /// The request body or query could not be read.
    BadRequest(String),
    Ops(OpsError),
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        ApiError::Ops(e)
    }
}

impl From<crate::ledger::LedgerError> for ApiError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        ApiError::Ops(e.into())
    }
}

/// A use case's error as the status and the words a caller gets, for the API and the
/// dashboard alike: 4xx with the detail; 5xx generic, the real error logged here, once.
pub fn classify(e: OpsError) -> (StatusCode, String) {
    match e {
        OpsError::NotFound(detail) => (StatusCode::NOT_FOUND, detail),
        OpsError::Invalid(detail) => (StatusCode::UNPROCESSABLE_ENTITY, detail),
        OpsError::Conflict(detail) => (StatusCode::CONFLICT, detail),
        OpsError::Internal(e) => {
            tracing::error!(error = %crate::telemetry::redact(&format!("{e:#}")), "request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server's log has the details".to_string(),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "a bearer token is needed: `rearguard token create` makes one".to_string(),
            ),
            ApiError::Forbidden(role) => (
                StatusCode::FORBIDDEN,
                format!("this needs a token with the {role} role or above"),
            ),
            ApiError::BadRequest(detail) => (StatusCode::BAD_REQUEST, detail),
            ApiError::Ops(e) => classify(e),
        };
        let mut response = (
            status,
            Json(Problem {
                status: status.as_u16(),
                detail,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
