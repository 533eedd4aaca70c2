//! Where the CLI reads and acts: this host's ledger through [`crate::ops`], or a rearguard
//! server's API (`--server URL`, the token in `REARGUARD_TOKEN`). The commands print the
//! same typed records either way.

use std::path::Path;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::Workspace;
use crate::UsageError;
use crate::ledger::{Incident, Release, Rollback, TimelineEntry};
use crate::ops::{self, AppStatus, IncidentAction, RollbackPlan, RollbackRequest};
use crate::secret::Secret;
use crate::server::{IncidentRecord, RollbackAnswer};

pub enum Records {
    Local(Box<Workspace>),
    Remote(Remote),
}

impl Records {
    pub async fn open(config_path: &Path, server: Option<&str>) -> anyhow::Result<Self> {
        Ok(match server {
            Some(url) => Records::Remote(Remote::new(url)?),
            None => Records::Local(Box::new(Workspace::open(config_path).await?)),
        })
    }

    /// Where one app, or every app, stands.
    pub async fn status(&self, app: Option<&str>) -> anyhow::Result<Vec<AppStatus>> {
        match (self, app) {
            (Records::Local(workspace), Some(app)) => {
                Ok(vec![ops::app_status(workspace, app).await?])
            }
            (Records::Local(workspace), None) => Ok(ops::every_app_status(workspace).await?),
            (Records::Remote(remote), Some(app)) => {
                Ok(vec![remote.get(&format!("apps/{app}")).await?])
            }
            (Records::Remote(remote), None) => remote.get("apps").await,
        }
    }

    /// Incidents detected within `since` ("30d", "12h").
    pub async fn incidents(&self, since: &str) -> anyhow::Result<Vec<Incident>> {
        match self {
            Records::Local(workspace) => Ok(workspace
                .ledger
                .incidents(super::incident::since_ms(workspace, since)?)
                .await?),
            Records::Remote(remote) => remote.get(&format!("incidents?since={since}")).await,
        }
    }

    pub async fn incident(&self, id: i64) -> anyhow::Result<(Incident, Vec<TimelineEntry>)> {
        match self {
            Records::Local(workspace) => {
                let record = crate::incidents::Record::load(&workspace.ledger, id)
                    .await?
                    .ok_or_else(|| {
                        UsageError(format!(
                            "no incident {id}; `rearguard incidents` lists them"
                        ))
                    })?;
                Ok((record.incident, record.timeline))
            }
            Records::Remote(remote) => {
                let record: IncidentRecord = remote.get(&format!("incidents/{id}")).await?;
                Ok((record.incident, record.timeline))
            }
        }
    }

    pub async fn act_on_incident(
        &self,
        id: i64,
        action: IncidentAction,
    ) -> anyhow::Result<Incident> {
        match self {
            Records::Local(workspace) => {
                Ok(ops::act_on_incident(workspace, &ops::Actor::cli(), id, &action).await?)
            }
            Records::Remote(remote) => Ok(remote
                .post(&format!("incidents/{id}/actions"), &action)
                .await?
                .1),
        }
    }

    /// Asks for a rollback; `confirm` sees the plan first (remotely: the app and the
    /// version asked for, the server works out the rest).
    pub async fn request_rollback(
        &self,
        app: &str,
        version: Option<&str>,
        reason: Option<&str>,
        confirm: impl FnOnce(&str) -> Result<(), UsageError>,
    ) -> anyhow::Result<RollbackRequest> {
        match self {
            Records::Local(workspace) => {
                let ask = |plan: &RollbackPlan| {
                    confirm(&format!(
                        "Roll {app} back from {} to {}?",
                        plan.current.version, plan.target.version
                    ))
                    .map_err(Into::into)
                };
                Ok(
                    ops::request_rollback(workspace, &ops::Actor::cli(), app, version, reason, ask)
                        .await?,
                )
            }
            Records::Remote(remote) => {
                confirm(&format!(
                    "Roll {app} back to {} through {}?",
                    version.unwrap_or("its last known-good release"),
                    remote.base
                ))?;
                let body = serde_json::json!({"version": version, "reason": reason});
                let (status, answer): (_, RollbackAnswer) =
                    remote.post(&format!("apps/{app}/rollbacks"), &body).await?;
                Ok(match answer.rollback {
                    Some(rollback) if status == StatusCode::ACCEPTED => {
                        RollbackRequest::Requested(rollback)
                    }
                    _ => {
                        let mut status = self.status(Some(app)).await?;
                        let current = status.pop().and_then(|s| s.current);
                        RollbackRequest::AlreadyServing(current.ok_or_else(|| {
                            anyhow::anyhow!(
                                "the server says {app} serves {} but shows no release",
                                answer.target
                            )
                        })?)
                    }
                })
            }
        }
    }

    pub async fn rollback(&self, app: &str, id: i64) -> anyhow::Result<Option<Rollback>> {
        Ok(self.rollbacks(app).await?.into_iter().find(|r| r.id == id))
    }

    /// The app's rollbacks, oldest first.
    pub async fn rollbacks(&self, app: &str) -> anyhow::Result<Vec<Rollback>> {
        match self {
            Records::Local(workspace) => Ok(workspace.ledger.rollbacks(app).await?),
            Records::Remote(remote) => {
                remote
                    .get(&format!("apps/{}/rollbacks", checked(app)?))
                    .await
            }
        }
    }

    /// The app's releases, newest first.
    pub async fn releases(&self, app: &str) -> anyhow::Result<Vec<Release>> {
        match self {
            Records::Local(workspace) => {
                workspace.check_app(app)?;
                Ok(workspace.ledger.releases(app).await?)
            }
            Records::Remote(remote) => {
                remote
                    .get(&format!("apps/{}/releases", checked(app)?))
                    .await
            }
        }
    }

    pub async fn release(&self, app: &str, id: i64) -> anyhow::Result<Option<Release>> {
        match self {
            Records::Local(workspace) => Ok(workspace.ledger.release(id).await?),
            Records::Remote(_) => Ok(self.releases(app).await?.into_iter().find(|r| r.id == id)),
        }
    }

    /// The guard's live view of `app`, when it is fresh.
    pub async fn live(&self, app: &str) -> anyhow::Result<Option<crate::guard::Snapshot>> {
        Ok(self.status(Some(app)).await?.pop().and_then(|s| s.live))
    }

    /// Records a release for the running guard to deploy (remotely: the server refuses
    /// when no guard runs).
    pub async fn record_release(&self, app: &str, version: &str) -> anyhow::Result<Release> {
        match self {
            Records::Local(workspace) => {
                Ok(ops::record_release(workspace, &ops::Actor::cli(), app, version, false).await?)
            }
            Records::Remote(remote) => {
                let body = serde_json::json!({ "version": version });
                Ok(remote
                    .post(&format!("apps/{}/releases", checked(app)?), &body)
                    .await?
                    .1)
            }
        }
    }

    /// This host's workspace, for what only runs here (guarding from the terminal).
    pub fn local(&self) -> Option<&Workspace> {
        match self {
            Records::Local(workspace) => Some(workspace),
            Records::Remote(_) => None,
        }
    }
}

/// An app name checked before it goes into a URL.
fn checked(app: &str) -> Result<&str, UsageError> {
    crate::names::check_name(app).map_err(|e| UsageError(format!("invalid app name: {e}")))?;
    Ok(app)
}

/// A rearguard server's API.
pub struct Remote {
    base: reqwest::Url,
    token: Secret,
    client: reqwest::Client,
}

impl Remote {
    fn new(url: &str) -> Result<Self, UsageError> {
        let mut base = reqwest::Url::parse(url)
            .map_err(|e| UsageError(format!("--server {url:?} is not a URL: {e}")))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let base = base
            .join("api/v1/")
            .map_err(|e| UsageError(format!("--server {url:?}: {e}")))?;
        let token = std::env::var("REARGUARD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UsageError("--server needs a token in REARGUARD_TOKEN (`rearguard token create` on the server's host)".into()))?;
        let client = crate::http_client(std::time::Duration::from_secs(30))
            .map_err(|e| UsageError(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            base,
            token: Secret(token),
            client,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let request = self.client.get(self.url(path)?);
        Ok(self.send(request).await?.1)
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<(StatusCode, T)> {
        let request = self.client.post(self.url(path)?).json(body);
        self.send(request).await
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, UsageError> {
        self.base
            .join(path)
            .map_err(|e| UsageError(format!("cannot make a URL of {path:?}: {e}")))
    }

    /// Sends with the token; a refusal (4xx) is the asker's to fix and says why.
    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(StatusCode, T)> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the server {}: {e}", self.base))?;
        let status = response.status();
        let body = response.text().await?;
        if status.is_client_error() {
            let detail = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_string))
                .unwrap_or(body);
            return Err(UsageError(format!("the server refused ({status}): {detail}")).into());
        }
        if !status.is_success() {
            anyhow::bail!("the server failed ({status}); its log has the details");
        }
        let value = serde_json::from_str(&body).map_err(|e| {
            anyhow::anyhow!("the server's answer is not what this rearguard expects: {e}")
        })?;
        Ok((status, value))
    }
}
