//! `rearguard serve`: the HTTP edge over [`crate::ops`]. The REST API under `/api/v1` (its
//! OpenAPI document at `/api/v1/openapi.json`), the dashboard under `/dashboard`,
//! rearguard's own `/metrics`, and `/health/live` and `/health/ready`. Every `/api/v1` route needs a bearer token, writes
//! an operator's; the use cases audit every write.

mod api;
mod auth;
mod chart;
mod dashboard;
mod error;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

pub use api::{IncidentRecord, RollbackAnswer};

use crate::guard::GuardMetrics;
use crate::ops::Workspace;

/// Request bodies are small JSON documents; anything larger is refused (413).
const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct Shared {
    workspace: Arc<Workspace>,
    metrics: Arc<metrics::Metrics>,
    /// The guard's own figures, when it runs in this process.
    guard: Option<Arc<GuardMetrics>>,
}

/// The whole HTTP surface. Layers, outermost first: a panic becomes a 500 (not a dropped
/// connection), the body limit (before anything reads a body), then the request counter
/// (so refusals are counted too).
pub fn router(workspace: Arc<Workspace>, guard: Option<Arc<GuardMetrics>>) -> Router {
    let shared = Shared {
        workspace,
        metrics: Arc::new(metrics::Metrics::default()),
        guard,
    };
    Router::new()
        .nest("/api/v1", api::routes())
        .nest("/dashboard", dashboard::routes())
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/dashboard") }),
        )
        .route("/metrics", get(metrics::render))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            metrics::count_requests,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .with_state(shared)
}

/// Serves on `listener` until `ended` completes; with `guard`, `/metrics` has the guard's
/// own figures too (it runs in this process).
pub async fn serve(
    workspace: Arc<Workspace>,
    listener: tokio::net::TcpListener,
    guard: Option<Arc<GuardMetrics>>,
    ended: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(workspace, guard).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(ended)
        .await
}

const HEALTH_JSON: &str = "application/health+json";

fn health(status: StatusCode, body: serde_json::Value) -> impl IntoResponse {
    (
        status,
        [(header::CONTENT_TYPE, HEALTH_JSON)],
        body.to_string(),
    )
}

/// The process answers.
async fn live() -> impl IntoResponse {
    health(StatusCode::OK, serde_json::json!({"status": "pass"}))
}

/// The ledger answers too: without it nothing can be read or recorded.
async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.workspace.ledger.ping().await {
        Ok(_) => health(StatusCode::OK, serde_json::json!({"status": "pass"})),
        Err(e) => {
            tracing::error!(error = %crate::telemetry::redact(&e.to_string()), "readiness: the ledger does not answer");
            health(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "fail", "output": "the ledger does not answer"}),
            )
        }
    }
}
