//! The stand-in Prometheus the scale benchmarks ask: every app's series from one process.

const BOUNDS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

/// The stand-in Prometheus: answers `query_range` for the three default queries with every
/// app's series (or one app's, when the query matches `app="appN"`), counters growing steadily (about 20 requests a second per app, 1 % 5xx).
pub fn serve(apps: usize, port: u16) -> anyhow::Result<()> {
    use axum::extract::Query;
    use axum::routing::get;
    #[derive(serde::Deserialize)]
    struct Range {
        query: String,
        start: f64,
        end: f64,
        step: String,
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = axum::Router::new().route(
            "/api/v1/query_range",
            get(move |Query(range): Query<Range>| async move {
                let step: f64 = range.step.trim_end_matches('s').parse().unwrap_or(10.0);
                let times: Vec<f64> = (0..)
                    .map(|i| range.start + i as f64 * step)
                    .take_while(|t| *t <= range.end)
                    .collect();
                let mut body = String::with_capacity(apps * 200);
                body.push_str(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
                let mut first = true;
                let mut series = |labels: String, per_second: f64| {
                    if !first {
                        body.push(',');
                    }
                    first = false;
                    body.push_str(&format!("{{\"metric\":{{{labels}}},\"values\":["));
                    for (i, t) in times.iter().enumerate() {
                        if i > 0 {
                            body.push(',');
                        }
                        body.push_str(&format!("[{t},\"{}\"]", (t * per_second).floor()));
                    }
                    body.push_str("]}");
                };
                // A query for one app (a fresh guard's history) matches its label.
                let only: Option<usize> = range
                    .query
                    .split_once(r#"app="app"#)
                    .and_then(|(_, rest)| rest.split('"').next())
                    .and_then(|n| n.parse().ok());
                for app in (0..apps).filter(|app| only.is_none_or(|only| only == *app)) {
                    let labels = format!(r#""app":"app{app}","version":"v1","instance":"i{app}""#);
                    if range.query.contains("_bucket") {
                        for (i, le) in BOUNDS.iter().enumerate() {
                            let share = ((i + 1) as f64 / BOUNDS.len() as f64).min(1.0);
                            series(format!(r#"{labels},"le":"{le}""#), 20.0 * share);
                        }
                    } else if range.query.contains("5..") {
                        series(labels, 0.2);
                    } else {
                        series(labels, 20.0);
                    }
                }
                body.push_str("]}}");
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}
