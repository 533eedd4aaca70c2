//! Who calls: the bearer token of the request, checked against the ledger's hashes.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::Shared;
use super::error::ApiError;
use crate::ledger::{Role, TokenRecord};
use crate::ops::Actor;

/// A caller with a live token. Handlers say which role they need with [`Caller::require`].
pub struct Caller {
    pub token: TokenRecord,
    pub source: String,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<Actor, ApiError> {
        if self.token.role < role {
            return Err(ApiError::Forbidden(role.as_str()));
        }
        Ok(Actor {
            name: format!("token:{}", self.token.name),
            source: self.source.clone(),
        })
    }
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthenticated)?;
        let token = crate::ops::authenticate(&shared.workspace, presented)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        Ok(Caller {
            token,
            source: client_address(parts),
        })
    }
}

/// The caller's address, for the audit log.
pub fn client_address(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |info| info.0.ip().to_string())
}
