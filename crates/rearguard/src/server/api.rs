//! The REST API, `/api/v1`: one handler per route, each a thin call into [`crate::ops`].
//! The OpenAPI document is generated from these handlers and the records' types.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::Shared;
use super::auth::Caller;
use super::error::{ApiError, Problem};
use crate::ledger::{
    AuditEntry, Event, Incident, Release, Role, Rollback, TimelineEntry, TokenRecord,
};
use crate::ops::{self, AppStatus, IncidentAction};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/apps", get(list_apps))
        .route("/apps/{app}", get(app_status))
        .route(
            "/apps/{app}/releases",
            get(list_releases).post(record_release),
        )
        .route(
            "/apps/{app}/rollbacks",
            get(list_rollbacks).post(request_rollback),
        )
        .route("/apps/{app}/events", get(list_events))
        .route("/incidents", get(list_incidents))
        .route("/incidents/{id}", get(show_incident))
        .route("/incidents/{id}/actions", post(act_on_incident))
        .route("/audit", get(audit_log))
        .route("/tokens", get(list_tokens))
        .route("/tokens/{name}", delete(revoke_token))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "rearguard",
        description = "Guarded releases: record releases, request rollbacks, work incidents. \
            Every route needs `Authorization: Bearer <token>` (`rearguard token create`); \
            writes need the operator role, the audit log and tokens the admin role."
    ),
    servers((url = "/api/v1")),
    paths(
        list_apps, app_status, list_releases, record_release, list_rollbacks, request_rollback,
        list_events, list_incidents, show_incident, act_on_incident, audit_log, list_tokens,
        revoke_token
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI document of this API (no token needed).
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A JSON body, its errors answered as [`Problem`]s like every other.
fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Since {
    /// How far back: a number and a unit (s, m, h, d), such as "30d" or "90m"; default 30d.
    #[param(pattern = r"^[0-9]{1,5}(s|m|h|d)$")]
    since: Option<String>,
}

impl Since {
    /// The start of the period in epoch milliseconds. Read exactly as the schema's pattern
    /// says (the CLI's `--since` takes more forms).
    fn from(query: Result<Query<Since>, QueryRejection>, shared: &Shared) -> Result<i64, ApiError> {
        let Query(since) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let text = since.since.as_deref().unwrap_or("30d");
        let invalid = || {
            ApiError::BadRequest(format!(
                "since: expected a number and a unit (s, m, h, d) such as \"30d\", got {text:?}"
            ))
        };
        let unit = text.chars().last().ok_or_else(invalid)?;
        let number = &text[..text.len() - unit.len_utf8()];
        let unit_ms: i64 = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(invalid()),
        };
        if number.is_empty() || number.len() > 5 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let count: i64 = number.parse().map_err(|_| invalid())?;
        Ok(shared.workspace.ledger.now() - count * unit_ms)
    }
}

/// Every configured app and where it stands.
#[utoipa::path(get, path = "/apps", tag = "apps",
    responses((status = 200, body = Vec<AppStatus>), (status = 401, body = Problem)))]
async fn list_apps(
    State(shared): State<Shared>,
    caller: Caller,
) -> Result<Json<Vec<AppStatus>>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(ops::every_app_status(&shared.workspace).await?))
}

/// One app: current and known-good release, guard, live view.
#[utoipa::path(get, path = "/apps/{app}", tag = "apps",
    params(("app" = String, Path, description = "The app's name in the config")),
    responses((status = 200, body = AppStatus), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn app_status(
    State(shared): State<Shared>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<AppStatus>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(ops::app_status(&shared.workspace, &app).await?))
}

/// The app's releases, newest first.
#[utoipa::path(get, path = "/apps/{app}/releases", tag = "releases",
    params(("app" = String, Path, description = "The app's name in the config")),
    responses((status = 200, body = Vec<Release>), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn list_releases(
    State(shared): State<Shared>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Vec<Release>>, ApiError> {
    caller.require(Role::Viewer)?;
    shared.workspace.check_app(&app)?;
    Ok(Json(shared.workspace.ledger.releases(&app).await?))
}

/// A release to record.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRelease {
    /// An immutable tag such as the git SHA: `[A-Za-z0-9._-]`, 1 to 128 characters, not
    /// starting with `.` or `-`.
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")]
    version: String,
}

/// Records a release for the guard to deploy and watch (a pipeline's deploy step). Follow
/// it with `GET /apps/{app}/releases`.
#[utoipa::path(post, path = "/apps/{app}/releases", tag = "releases",
    params(("app" = String, Path, description = "The app's name in the config")),
    request_body = NewRelease,
    responses(
        (status = 202, body = Release, description = "Recorded; the guard deploys it"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "No guard runs for the app"),
        (status = 422, body = Problem, description = "Invalid version, or its artifacts are missing")))]
async fn record_release(
    State(shared): State<Shared>,
    caller: Caller,
    Path(app): Path<String>,
    new: Result<Json<NewRelease>, JsonRejection>,
) -> Result<Response, ApiError> {
    let actor = caller.require(Role::Operator)?;
    let new = body(new)?;
    let release = ops::record_release(&shared.workspace, &actor, &app, &new.version, true).await?;
    Ok((StatusCode::ACCEPTED, Json(release)).into_response())
}

/// The app's rollbacks, oldest first.
#[utoipa::path(get, path = "/apps/{app}/rollbacks", tag = "rollbacks",
    params(("app" = String, Path, description = "The app's name in the config")),
    responses((status = 200, body = Vec<Rollback>), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn list_rollbacks(
    State(shared): State<Shared>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Vec<Rollback>>, ApiError> {
    caller.require(Role::Viewer)?;
    shared.workspace.check_app(&app)?;
    Ok(Json(shared.workspace.ledger.rollbacks(&app).await?))
}

/// A rollback to ask for.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRollback {
    /// The version to go back to (default: the last known-good release).
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")]
    version: Option<String>,
    /// Why, for the record.
    reason: Option<String>,
}

/// What a rollback request came to.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct RollbackAnswer {
    /// `requested` (the guard performs it) or `already_serving`.
    pub outcome: String,
    /// The version serving, or to serve once the rollback is done.
    pub target: String,
    /// The rollback recorded, to follow with `GET /apps/{app}/rollbacks`.
    pub rollback: Option<Rollback>,
}

/// Asks the guard to roll the app back, by default to its last known-good release.
#[utoipa::path(post, path = "/apps/{app}/rollbacks", tag = "rollbacks",
    params(("app" = String, Path, description = "The app's name in the config")),
    request_body = NewRollback,
    responses(
        (status = 202, body = RollbackAnswer, description = "Recorded; the guard performs it"),
        (status = 200, body = RollbackAnswer, description = "The target serves already"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Nothing to roll back to, the target is not available, or no guard runs"),
        (status = 422, body = Problem)))]
async fn request_rollback(
    State(shared): State<Shared>,
    caller: Caller,
    Path(app): Path<String>,
    new: Result<Json<NewRollback>, JsonRejection>,
) -> Result<Response, ApiError> {
    let actor = caller.require(Role::Operator)?;
    let new = body(new)?;
    let request = ops::request_rollback(
        &shared.workspace,
        &actor,
        &app,
        new.version.as_deref(),
        new.reason.as_deref(),
        |_| Ok(()),
    )
    .await?;
    Ok(match request {
        ops::RollbackRequest::AlreadyServing(release) => (
            StatusCode::OK,
            Json(RollbackAnswer {
                outcome: "already_serving".into(),
                target: release.version,
                rollback: None,
            }),
        )
            .into_response(),
        ops::RollbackRequest::Requested(rollback) => (
            StatusCode::ACCEPTED,
            Json(RollbackAnswer {
                outcome: "requested".into(),
                target: rollback.to_version.clone(),
                rollback: Some(rollback),
            }),
        )
            .into_response(),
    })
}

/// What happened to the app, oldest first.
#[utoipa::path(get, path = "/apps/{app}/events", tag = "apps",
    params(("app" = String, Path, description = "The app's name in the config"), Since),
    responses((status = 200, body = Vec<Event>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn list_events(
    State(shared): State<Shared>,
    caller: Caller,
    Path(app): Path<String>,
    since: Result<Query<Since>, QueryRejection>,
) -> Result<Json<Vec<Event>>, ApiError> {
    caller.require(Role::Viewer)?;
    let since = Since::from(since, &shared)?;
    shared.workspace.check_app(&app)?;
    Ok(Json(shared.workspace.ledger.events(&app, since).await?))
}

/// Incidents detected in the period, newest first.
#[utoipa::path(get, path = "/incidents", tag = "incidents", params(Since),
    responses((status = 200, body = Vec<Incident>), (status = 400, body = Problem), (status = 401, body = Problem)))]
async fn list_incidents(
    State(shared): State<Shared>,
    caller: Caller,
    since: Result<Query<Since>, QueryRejection>,
) -> Result<Json<Vec<Incident>>, ApiError> {
    caller.require(Role::Viewer)?;
    let since = Since::from(since, &shared)?;
    Ok(Json(shared.workspace.ledger.incidents(since).await?))
}

/// An incident with its timeline.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct IncidentRecord {
    pub incident: Incident,
    pub timeline: Vec<TimelineEntry>,
}

/// One incident and its timeline.
#[utoipa::path(get, path = "/incidents/{id}", tag = "incidents",
    params(("id" = i64, Path, description = "The incident's number")),
    responses((status = 200, body = IncidentRecord), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn show_incident(
    State(shared): State<Shared>,
    caller: Caller,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<IncidentRecord>, ApiError> {
    caller.require(Role::Viewer)?;
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let ledger = &shared.workspace.ledger;
    let incident = ledger
        .incident(id)
        .await?
        .ok_or_else(|| ops::OpsError::NotFound(format!("no incident {id}")))?;
    let timeline = ledger.timeline(id).await?;
    Ok(Json(IncidentRecord { incident, timeline }))
}

/// Acknowledges, annotates, re-grades or resolves an incident.
#[utoipa::path(post, path = "/incidents/{id}/actions", tag = "incidents",
    params(("id" = i64, Path, description = "The incident's number")),
    request_body = IncidentAction,
    responses(
        (status = 200, body = Incident, description = "The incident afterwards"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn act_on_incident(
    State(shared): State<Shared>,
    caller: Caller,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
    action: Result<Json<IncidentAction>, JsonRejection>,
) -> Result<Json<Incident>, ApiError> {
    let actor = caller.require(Role::Operator)?;
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let action = body(action)?;
    Ok(Json(
        ops::act_on_incident(&shared.workspace, &actor, id, &action).await?,
    ))
}

/// Every write, from the CLI or the API, oldest first.
#[utoipa::path(get, path = "/audit", tag = "access", params(Since),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn audit_log(
    State(shared): State<Shared>,
    caller: Caller,
    since: Result<Query<Since>, QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    caller.require(Role::Admin)?;
    let since = Since::from(since, &shared)?;
    Ok(Json(shared.workspace.ledger.audit_log(since).await?))
}

/// The tokens (never their secrets), revoked ones included.
#[utoipa::path(get, path = "/tokens", tag = "access",
    responses((status = 200, body = Vec<TokenRecord>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_tokens(
    State(shared): State<Shared>,
    caller: Caller,
) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(shared.workspace.ledger.tokens().await?))
}

/// Revokes a token: it stops working at once.
#[utoipa::path(delete, path = "/tokens/{name}", tag = "access",
    params(("name" = String, Path, description = "The token's name")),
    responses((status = 204, description = "Revoked"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_token(
    State(shared): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = caller.require(Role::Admin)?;
    ops::revoke_token(&shared.workspace, &actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
