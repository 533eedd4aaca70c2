//! rearguard's own `/metrics` (Prometheus text format, prometheus-client, no global
//! registry). Release, rollback, guard and notification figures are read from the ledger
//! at each scrape, so they are the same whichever process guards and survive restarts; the
//! server's own requests are counted here.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Shared;

type Labels = Vec<(&'static str, String)>;

/// What the server counts itself.
#[derive(Default)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
}

/// Counts each request by method, route (its pattern, so paths do not explode the label
/// set) and status.
pub async fn count_requests(
    State(shared): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    shared
        .metrics
        .requests
        .get_or_create(&vec![
            ("method", method),
            ("route", route),
            ("status", status),
        ])
        .inc();
    response
}

pub async fn render(State(shared): State<Shared>) -> Response {
    match encode(&shared).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %crate::telemetry::redact(&format!("{e:#}")), "metrics: the ledger does not answer");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn encode(shared: &Shared) -> anyhow::Result<String> {
    let workspace = &shared.workspace;
    let ledger = &workspace.ledger;
    let mut registry = Registry::with_prefix("rearguard");
    let rollbacks = Family::<Labels, Counter>::default();
    let releases = Family::<Labels, Gauge>::default();
    let guarded = Family::<Labels, Gauge>::default();
    let evidence = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for app in workspace.config.apps.keys() {
        for rollback in ledger.rollbacks(app).await? {
            rollbacks
                .get_or_create(&vec![
                    ("app", app.clone()),
                    ("trigger", rollback.trigger.as_str().to_string()),
                    ("status", format!("{:?}", rollback.status).to_lowercase()),
                ])
                .inc();
        }
        for release in ledger.releases(app).await? {
            releases
                .get_or_create(&vec![
                    ("app", app.clone()),
                    ("state", release.state.as_str().to_string()),
                ])
                .inc();
        }
        let status = crate::ops::app_status(workspace, app).await?;
        guarded
            .get_or_create(&vec![("app", app.clone())])
            .set(i64::from(status.guarded));
        let (errors, latency) = status.evidence().unwrap_or_default();
        for (metric, level) in [("error_rate", errors), ("latency", latency)] {
            evidence
                .get_or_create(&vec![("app", app.clone()), ("metric", metric.to_string())])
                .set(level);
        }
    }
    let deliveries = Family::<Labels, Counter>::default();
    for (channel, status, count) in ledger.delivery_counts().await? {
        deliveries
            .get_or_create(&vec![("channel", channel), ("status", status)])
            .inc_by(u64::try_from(count).unwrap_or(0));
    }
    registry.register(
        "rollbacks",
        "Rollbacks recorded, by app, trigger and status",
        rollbacks,
    );
    registry.register("releases", "Releases recorded, by app and state", releases);
    registry.register("guarded", "1 when a live guard holds the app", guarded);
    registry.register(
        "evidence_ratio",
        "Evidence against the watched release as a share of what a rollback needs",
        evidence,
    );
    registry.register(
        "notification_deliveries",
        "Notification deliveries, by channel and status",
        deliveries,
    );
    registry.register(
        "http_requests",
        "Requests this server answered, by method, route and status",
        shared.metrics.requests.clone(),
    );
    if let Some(guard) = &shared.guard {
        guard.register(&mut registry);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}
