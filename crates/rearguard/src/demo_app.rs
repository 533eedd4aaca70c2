//! The bundled demo service: a tiny HTTP app that reports its version and fails a chosen
//! share of requests, so `rearguard demo` and the tests need nothing but this binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::cli::DemoAppArgs;

struct Settings {
    version: String,
    /// Fail request n when floor(n * rate) moves: exactly `rate` of requests, evenly spread.
    error_rate: f64,
    latency: Duration,
    served: AtomicU64,
}

pub async fn run(args: DemoAppArgs) -> anyhow::Result<crate::Outcome> {
    crate::names::check_version(&args.version).map_err(crate::UsageError)?;
    if !(0.0..=1.0).contains(&args.error_rate) || !(0.0..=1.0).contains(&args.bad_error_rate) {
        return Err(crate::UsageError("error rates must be between 0 and 1".into()).into());
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
    });
    let app = Router::new()
        .route("/health", get(move || async move { (health, "health\n") }))
        .route(
            "/version",
            get(|State(s): State<Arc<Settings>>| async move { s.version.clone() }),
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
    eprintln!(
        "demo-app {} listening on {}:{} (error rate {})",
        settings.version, args.address, args.port, settings.error_rate
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
    tokio::time::sleep(settings.latency).await;
    let n = settings.served.fetch_add(1, Ordering::Relaxed) as f64;
    let fails = ((n + 1.0) * settings.error_rate).floor() > (n * settings.error_rate).floor();
    if fails {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{} failed\n", settings.version),
        )
    } else {
        (StatusCode::OK, format!("hello from {}\n", settings.version))
    }
}
