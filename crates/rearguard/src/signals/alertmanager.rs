//! Alertmanager's webhook (the version 4 payload), received by the guard: an alert firing
//! for an app while one of its releases is watched is a finding against that release,
//! rolled back as the judge's findings are, with the alert as the evidence.
//!
//! Configured once for the guard (top-level `alertmanager:`), not per app: one receiver
//! serves every app, matched by the alert's app label. It takes writes, so it needs its
//! own bearer token (Alertmanager's `http_config.authorization.credentials`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde::{Deserialize, Serialize};

use crate::config::Flaw;
use crate::secret::Secret;

/// Alertmanager batches alerts; a body larger than this is refused (413).
const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// The path Alertmanager posts to.
pub const PATH: &str = "/alertmanager";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Where the receiver listens, `ADDRESS:PORT`.
    pub listen: SocketAddr,
    /// The bearer token Alertmanager sends; write it as `${NAME}`.
    pub token: Secret,
    /// The alert label holding the app's name.
    #[serde(default = "default_app_label")]
    pub app_label: String,
}

fn default_app_label() -> String {
    "app".into()
}

impl AlertmanagerConfig {
    pub fn problems(&self) -> Vec<Flaw> {
        let mut problems = Vec::new();
        if self.token.expose().len() < 16 {
            problems.push(Flaw::at(
                &["alertmanager", "token"],
                "token must be at least 16 characters (it guards a write)",
            ));
        }
        problems
    }
}

/// The webhook's body, as Alertmanager 0.25 sends it (`version: "4"`).
#[derive(Debug, Deserialize)]
struct Notification {
    version: String,
    alerts: Vec<Alert>,
}

/// One alert, kept as the evidence of the rollback it causes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    /// "alert NAME fired: SUMMARY" for the rollback's reason.
    pub fn reason(&self) -> String {
        let name = self.labels.get("alertname").map_or("(unnamed)", |n| n);
        match self
            .annotations
            .get("summary")
            .or(self.annotations.get("description"))
        {
            Some(summary) => format!("alert {name} fired: {summary}"),
            None => format!("alert {name} fired"),
        }
    }
}

/// Firing alerts received and not yet taken, by app.
#[derive(Default)]
pub struct Inbox {
    firing: Mutex<BTreeMap<String, Vec<Alert>>>,
}

impl Inbox {
    /// The alerts that fired for `app` since the last call.
    pub fn take(&self, app: &str) -> Vec<Alert> {
        self.firing
            .lock()
            .expect("lock")
            .remove(app)
            .unwrap_or_default()
    }
}

struct Receiver {
    config: AlertmanagerConfig,
    inbox: Arc<Inbox>,
}

/// Listens on the configured address until `stop` completes; returns the inbox the
/// guardians read.
pub async fn serve(
    config: &AlertmanagerConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Arc<Inbox>> {
    let inbox = Arc::new(Inbox::default());
    let receiver = Arc::new(Receiver {
        config: config.clone(),
        inbox: inbox.clone(),
    });
    let app = axum::Router::new()
        .route(PATH, post(receive))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            crate::UsageError(format!(
                "cannot listen on {} for Alertmanager: {e}",
                config.listen
            ))
        })?;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the Alertmanager receiver stopped");
        }
    });
    Ok(inbox)
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|token| same(token, receiver.config.token.expose())) {
        return (StatusCode::UNAUTHORIZED, "a bearer token is needed\n");
    }
    let notification: Notification = match serde_json::from_slice(&body) {
        Ok(notification) => notification,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "not an Alertmanager notification\n",
            );
        }
    };
    if notification.version != "4" {
        return (
            StatusCode::BAD_REQUEST,
            "only version 4 notifications are read\n",
        );
    }
    let mut firing = receiver.inbox.firing.lock().expect("lock");
    for alert in notification.alerts {
        if alert.status != "firing" {
            continue;
        }
        let Some(app) = alert.labels.get(&receiver.config.app_label).cloned() else {
            tracing::info!(alert = %alert.reason(), "an alert without an app label; ignored");
            continue;
        };
        tracing::warn!(app, alert = %alert.reason(), "alert received");
        firing.entry(app).or_default().push(alert);
    }
    (StatusCode::OK, "received\n")
}

/// Compares tokens in time that does not depend on where they differ.
fn same(presented: &str, expected: &str) -> bool {
    presented.len() == expected.len()
        && presented
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_4_payload_reads_and_names_the_alert() {
        let body = r#"{"receiver":"rearguard","status":"firing","version":"4","groupKey":"{}:{}",
            "truncatedAlerts":0,"groupLabels":{},"commonLabels":{},"commonAnnotations":{},
            "externalURL":"http://am","alerts":[{"status":"firing",
            "labels":{"alertname":"HighErrors","app":"shop"},
            "annotations":{"summary":"5xx above 5%"},"startsAt":"2026-12-02T10:00:00Z",
            "endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":"ab12"}]}"#;
        let notification: Notification = serde_json::from_str(body).unwrap();
        assert_eq!(notification.alerts.len(), 1);
        assert_eq!(
            notification.alerts[0].reason(),
            "alert HighErrors fired: 5xx above 5%"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abd", "abc") && !same("ab", "abc") && !same("", "abc"));
    }
}
