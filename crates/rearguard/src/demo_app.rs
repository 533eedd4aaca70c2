//! The bundled demo service: a tiny HTTP app that reports its version and fails a chosen
//! share of requests, so `rearguard demo` and the tests need nothing but this binary. It
//! exposes `/metrics` the way most services do (`http_requests_total` by version and status
//! code, `http_request_duration_seconds` by version), so every signal source can be tried
//! on it. `/status` answers JSON (`version`, `served`) for checks that read a JSON body.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::cli::DemoAppArgs;

struct Settings {
    version: String,
    /// Fail request n when floor(n * rate) moves: exactly `rate` of requests, evenly spread.
    error_rate: f64,
    latency: Duration,
    served: AtomicU64,
    metrics: Metrics,
}

type Labels = Vec<(&'static str, String)>;

/// Its own registry (no global one), and what it counts.
struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        // The judge's own bucket bounds, so nothing is lost re-bucketing.
        let duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(rearguard_judge::BUCKET_BOUNDS_MS.map(|ms| ms / 1000.0))
        });
        registry.register("http_requests", "Requests served", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request",
            duration.clone(),
        );
        Self {
            registry,
            requests,
            duration,
        }
    }

    fn record(&self, version: &str, status: StatusCode, seconds: f64) {
        let code = status.as_u16().to_string();
        self.requests
            .get_or_create(&vec![("version", version.to_string()), ("code", code)])
            .inc();
        self.duration
            .get_or_create(&vec![("version", version.to_string())])
            .observe(seconds);
    }
}

pub async fn run(args: DemoAppArgs) -> anyhow::Result<crate::Outcome> {
    crate::names::check_version(&args.version).map_err(crate::UsageError)?;
    if !(0.0..=1.0).contains(&args.error_rate) || !(0.0..=1.0).contains(&args.bad_error_rate) {
        return Err(crate::UsageError("error rates must be between 0 and 1".into()).into());
    }
    if args.busy {
        // A thread spinning for good: the process's CPU, not its answers, is what is wrong.
        std::thread::spawn(|| {
            loop {
                std::hint::spin_loop();
            }
        });
    }
    let bad = args.bad_version.as_deref() == Some(args.version.as_str());
    let health = StatusCode::from_u16(args.health_status).map_err(|_| {
        crate::UsageError(format!(
            "--health-status {} is not a status code",
            args.health_status
        ))
    })?;
    let settings = Arc::new(Settings {
        error_rate: if bad {
            args.bad_error_rate
        } else {
            args.error_rate
        },
        version: args.version,
        latency: Duration::from_millis(args.latency_ms),
        served: AtomicU64::new(0),
        metrics: Metrics::new(),
    });
    let app = Router::new()
        .route("/health", get(move || async move { (health, "health\n") }))
        .route(
            "/version",
            get(|State(s): State<Arc<Settings>>| async move { s.version.clone() }),
        )
        .route("/metrics", get(metrics))
        .route(
            "/status",
            get(|State(s): State<Arc<Settings>>| async move {
                axum::Json(serde_json::json!({
                    "version": s.version,
                    "served": s.served.load(Ordering::Relaxed),
                }))
            }),
        )
        .fallback(serve)
        .with_state(settings.clone());
    let listener = tokio::net::TcpListener::bind((args.address, args.port))
        .await
        .map_err(|e| {
            crate::UsageError(format!(
                "demo-app cannot listen on {}:{}: {e}",
                args.address, args.port
            ))
        })?;
    // One line for its log (an incident keeps the last lines of a bad version's log).
    crate::say!(
        "demo-app {} listening on {}:{} (error rate {})",
        settings.version,
        args.address,
        args.port,
        settings.error_rate
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(crate::Outcome::Success)
}

async fn serve(State(settings): State<Arc<Settings>>) -> (StatusCode, String) {
    let watch = crate::clock::Stopwatch::start();
    tokio::time::sleep(settings.latency).await;
    let n = settings.served.fetch_add(1, Ordering::Relaxed) as f64;
    let fails = ((n + 1.0) * settings.error_rate).floor() > (n * settings.error_rate).floor();
    let answer = if fails {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{} failed\n", settings.version),
        )
    } else {
        (StatusCode::OK, format!("hello from {}\n", settings.version))
    };
    let seconds = watch.elapsed().as_secs_f64();
    settings
        .metrics
        .record(&settings.version, answer.0, seconds);
    answer
}

async fn metrics(
    State(settings): State<Arc<Settings>>,
) -> Result<([(header::HeaderName, &'static str); 1], String), StatusCode> {
    let mut text = String::new();
    encode(&mut text, &settings.metrics.registry).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
