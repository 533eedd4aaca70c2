//! The dashboard: server-rendered HTML (minijinja, autoescaped), no script. Signing in
//! puts an API token in a cookie only this site receives (`HttpOnly`, `SameSite=Strict`);
//! every form that writes also carries a token derived from it and is refused from another
//! site (`Sec-Fetch-Site`), so a cross-site request cannot act. Writes go through
//! [`crate::ops`] like the API's, audited under the token's name.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::{Deserialize, Serialize};

use super::Shared;
use super::chart::Chart;
use crate::ledger::{Role, TokenRecord};
use crate::ops::{self, Actor, OpsError};

const COOKIE: &str = "rearguard_session";
/// A session lasts a working day.
const SESSION_SECONDS: u32 = 12 * 3600;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(apps))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/apps/{app}", get(app))
        .route(
            "/apps/{app}/rollback",
            get(confirm_rollback).post(roll_back),
        )
        .route("/incidents/{id}", get(incident))
}

/// The templates, compiled once.
static PAGES: std::sync::LazyLock<minijinja::Environment<'static>> =
    std::sync::LazyLock::new(pages);

fn pages() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("apps.html", include_str!("templates/apps.html")),
        (
            "incident_rows.html",
            include_str!("templates/incident_rows.html"),
        ),
        ("app.html", include_str!("templates/app.html")),
        ("confirm.html", include_str!("templates/confirm.html")),
        ("incident.html", include_str!("templates/incident.html")),
    ] {
        env.add_template(name, source)
            .expect("the dashboard's templates compile (a unit test renders each)");
    }
    env
}

/// A signed-in person: their token's record, the form token of their session, where they
/// are.
struct Session {
    token: TokenRecord,
    csrf: String,
    source: String,
}

impl Session {
    fn actor(&self, role: Role) -> Result<Actor, PageError> {
        if self.token.role < role {
            return Err(PageError(
                StatusCode::FORBIDDEN,
                format!(
                    "this needs a token with the {} role or above",
                    role.as_str()
                ),
            ));
        }
        Ok(Actor {
            name: format!("token:{}", self.token.name),
            source: self.source.clone(),
        })
    }

    /// Refuses a write that does not come from this site's own form.
    fn check_form(&self, headers: &HeaderMap, csrf: &str) -> Result<(), PageError> {
        let expected = self.csrf.as_bytes();
        let same = csrf.len() == expected.len()
            && csrf
                .bytes()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same || !same_site(headers) {
            return Err(PageError(
                StatusCode::FORBIDDEN,
                "this form did not come from this dashboard; reload the page and try again".into(),
            ));
        }
        Ok(())
    }

    fn context(&self) -> (String, String) {
        (
            format!("{} ({})", self.token.name, self.token.role.as_str()),
            self.csrf.clone(),
        )
    }
}

/// Browsers say where a request comes from; one from another site is refused.
fn same_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|site| matches!(site, "same-origin" | "none"))
}

fn session_secret(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string)
}

impl FromRequestParts<Shared> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, Response> {
        let to_login = || Redirect::to("/dashboard/login").into_response();
        let secret = session_secret(parts).ok_or_else(to_login)?;
        let token = ops::authenticate(&shared.workspace, &secret)
            .await
            .map_err(|e| PageError::from(e).into_response())?
            .ok_or_else(to_login)?;
        Ok(Session {
            token,
            csrf: ops::hash(&format!("rearguard-form:{secret}")),
            source: super::auth::client_address(parts),
        })
    }
}

/// A page that could not be shown, as a page that says why: 4xx with the detail, 5xx
/// generic with the real error logged once.
#[derive(Debug)]
struct PageError(StatusCode, String);

impl PageError {
    fn internal(e: impl std::fmt::Display) -> Self {
        OpsError::Internal(anyhow::anyhow!("{e}")).into()
    }
}

impl From<OpsError> for PageError {
    fn from(e: OpsError) -> Self {
        let (status, detail) = super::error::classify(e);
        PageError(status, detail)
    }
}

impl From<crate::ledger::LedgerError> for PageError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        OpsError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = PAGES
            .get_template("base.html")
            .and_then(|t| t.render(minijinja::context! { flash => self.1, flash_error => true }))
            .unwrap_or_else(|_| "error".into());
        (self.0, Html(page)).into_response()
    }
}

type Page = Result<Response, PageError>;

fn serialized(value: &impl Serialize) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

fn render(name: &str, context: minijinja::Value) -> Page {
    let page = PAGES
        .get_template(name)
        .and_then(|t| t.render(context))
        .map_err(PageError::internal)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response())
}

async fn login_page() -> Page {
    render("login.html", minijinja::context! {})
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Page {
    if !same_site(&headers) {
        return Err(PageError(
            StatusCode::FORBIDDEN,
            "sign in from this dashboard's own page".into(),
        ));
    }
    let secret = form.token.trim();
    if ops::authenticate(&shared.workspace, secret)
        .await?
        .is_none()
    {
        let page = minijinja::context! { flash => "that token is not valid (or was revoked)", flash_error => true };
        let mut response = render("login.html", page)?;
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(response);
    }
    let cookie = format!(
        "{COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age={SESSION_SECONDS}"
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/dashboard")).into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(session: Session, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Page {
    session.check_form(&headers, &form.csrf)?;
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age=0");
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/dashboard/login"),
    )
        .into_response())
}

/// An app's line in the overview.
#[derive(Serialize)]
struct AppLine {
    name: String,
    serving: Option<String>,
    state: Option<&'static str>,
    known_good: Option<String>,
    guarded: bool,
    judge: Option<String>,
}

impl From<ops::AppStatus> for AppLine {
    fn from(status: ops::AppStatus) -> Self {
        let watching = status
            .current
            .as_ref()
            .is_some_and(|r| r.state == crate::ledger::ReleaseState::Watching);
        let judge = status.evidence().filter(|_| watching).map(|(errors, latency)| {
            format!(
                "Evidence against the watched release: {:.0}% (errors), {:.0}% (latency) of a rollback.",
                errors * 100.0,
                latency * 100.0
            )
        });
        Self {
            serving: status.current.as_ref().map(|r| r.version.clone()),
            state: status.current.as_ref().map(|r| r.state.as_str()),
            name: status.app,
            known_good: status.known_good,
            guarded: status.guarded,
            judge,
        }
    }
}

/// Incidents detected in the last 30 days, of `app` or of all.
async fn recent_incidents(
    shared: &Shared,
    app: Option<&str>,
) -> Result<Vec<crate::ledger::Incident>, PageError> {
    let ledger = &shared.workspace.ledger;
    let incidents = ledger.incidents(ledger.now() - 30 * 86_400_000).await?;
    Ok(incidents
        .into_iter()
        .filter(|i| app.is_none_or(|app| i.app == app))
        .collect())
}

async fn apps(State(shared): State<Shared>, session: Session) -> Page {
    let workspace = &shared.workspace;
    let lines: Vec<AppLine> = ops::every_app_status(workspace)
        .await?
        .into_iter()
        .map(AppLine::from)
        .collect();
    let incidents = recent_incidents(&shared, None).await?;
    let (who, csrf) = session.context();
    render(
        "apps.html",
        minijinja::context! { apps => serialized(&lines), incidents => serialized(&incidents), who, csrf },
    )
}

#[derive(Deserialize)]
struct Flash {
    done: Option<String>,
}

async fn app(
    State(shared): State<Shared>,
    session: Session,
    Path(app): Path<String>,
    Query(flash): Query<Flash>,
) -> Page {
    let status = ops::app_status(&shared.workspace, &app).await?;
    let ledger = &shared.workspace.ledger;
    let releases = ledger.releases(&app).await?;
    let rollbacks = ledger.rollbacks(&app).await?;
    let incidents = recent_incidents(&shared, Some(&app)).await?;
    let chart = Chart::load(ledger, &app, &releases, &rollbacks).await?;
    let can_roll_back =
        session.token.role >= Role::Operator && status.current.is_some() && status.guarded;
    // Only fixed messages: nothing from the query string is shown.
    let flash = flash.done.as_deref().and_then(|done| match done {
        "rollback" => Some(
            "Rollback requested: the guard performs it now. This page shows it done once it is.",
        ),
        _ => None,
    });
    let (who, csrf) = session.context();
    render(
        "app.html",
        minijinja::context! {
            app => serialized(&AppLine::from(status)),
            releases => serialized(&releases),
            rollbacks => serialized(&rollbacks),
            incidents => serialized(&incidents),
            chart => serialized(&chart),
            can_roll_back, flash, who, csrf,
        },
    )
}

async fn confirm_rollback(
    State(shared): State<Shared>,
    session: Session,
    Path(app): Path<String>,
) -> Page {
    session.actor(Role::Operator)?;
    let workspace = &shared.workspace;
    workspace.check_app(&app)?;
    let current = workspace.ledger.current(&app).await?;
    let current = current.ok_or_else(|| OpsError::Conflict("nothing serves yet".into()))?;
    let target = workspace.ledger.known_good(&app, Some(current.id)).await?;
    let target = target.ok_or_else(|| {
        OpsError::Conflict(format!(
            "no known-good release other than {}; roll back to a version with the CLI or the API",
            current.version
        ))
    })?;
    let (who, csrf) = session.context();
    render(
        "confirm.html",
        minijinja::context! { app, from_version => current.version, to_version => target.version, who, csrf },
    )
}

#[derive(Deserialize)]
struct RollbackForm {
    csrf: String,
    version: String,
    reason: Option<String>,
}

async fn roll_back(
    State(shared): State<Shared>,
    session: Session,
    Path(app): Path<String>,
    headers: HeaderMap,
    Form(form): Form<RollbackForm>,
) -> Page {
    session.check_form(&headers, &form.csrf)?;
    let actor = session.actor(Role::Operator)?;
    let reason = form.reason.as_deref().filter(|r| !r.trim().is_empty());
    ops::request_rollback(
        &shared.workspace,
        &actor,
        &app,
        Some(&form.version),
        reason,
        |_| Ok(()),
    )
    .await?;
    Ok(Redirect::to(&format!("/dashboard/apps/{app}?done=rollback")).into_response())
}

async fn incident(State(shared): State<Shared>, session: Session, Path(id): Path<i64>) -> Page {
    let record = crate::incidents::Record::load(&shared.workspace.ledger, id)
        .await?
        .ok_or_else(|| PageError(StatusCode::NOT_FOUND, format!("no incident {id}")))?;
    let postmortem =
        crate::incidents::render_postmortem(&record, crate::incidents::POSTMORTEM_TEMPLATE)
            .unwrap_or_else(|e| format!("the post-mortem template failed: {e}"));
    let evidence = record
        .incident
        .evidence
        .as_ref()
        .and_then(|e| serde_json::to_string_pretty(e).ok());
    let (who, csrf) = session.context();
    render(
        "incident.html",
        minijinja::context! {
            incident => serialized(&record.incident),
            timeline => serialized(&record.timeline),
            evidence, postmortem, who, csrf,
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_compiles() {
        let pages = super::pages();
        assert_eq!(pages.templates().count(), 7);
    }
}
