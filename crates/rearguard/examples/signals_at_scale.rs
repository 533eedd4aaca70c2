//! Benchmark: the Prometheus signal source for 10,000 apps in one process, against a
//! stand-in Prometheus (a child process of this binary) serving every app's series: one
//! instance per app, a request counter, a 5xx counter and 12 latency buckets. Each app's
//! source is asked every 10 s (the step), all at once, as the guard's per-app tasks ask
//! them; the first ask reads 10 minutes of history. Reports the CPU the asking process
//! used (cores) and its resident memory, peak and at the end.
//!
//! Only the signal path is measured (queries, answers, per-app increases); the guard's
//! ledger writes and judges for that many apps are not. Usage (see bench/signals_at_scale.sh):
//!
//!     cargo run --release --example signals_at_scale -- [APPS] [TICKS]

// A benchmark measures real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

use std::io::Write;

/// The guard binary's allocator (src/main.rs), so resident memory is measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rearguard::backends::Instances;
use rearguard::signals::prometheus::{PrometheusConfig, Servers};
use rearguard::signals::{Ask, SignalSource};

#[path = "common/proc_status.rs"]
mod proc_status;
#[path = "common/stand_in.rs"]
mod stand_in;

const STEP_S: i64 = 10;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--stand-in") {
        return stand_in::serve(args[2].parse()?, args[3].parse()?);
    }
    let apps: usize = args.get(1).map_or(Ok(10_000), |a| a.parse())?;
    let ticks: usize = args.get(2).map_or(Ok(6), |a| a.parse())?;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let mut stand_in = std::process::Command::new(std::env::current_exe()?)
        .args(["--stand-in", &apps.to_string(), &port.to_string()])
        .spawn()?;
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(apps, ticks, port));
    let _ = stand_in.kill();
    let _ = stand_in.wait();
    outcome
}

async fn measure(apps: usize, ticks: usize, port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config: PrometheusConfig = serde_json::from_value(serde_json::json!({
        "url": format!("http://127.0.0.1:{port}"),
        "step": format!("{STEP_S}s"),
    }))?;
    let servers = Servers::default();
    let sources: Vec<Arc<dyn SignalSource>> = (0..apps)
        .map(|_| Arc::new(servers.source(&config)) as Arc<dyn SignalSource>)
        .collect();
    let names: Arc<Vec<String>> = Arc::new((0..apps).map(|i| format!("app{i}")).collect());
    let mut recorded_until = vec![0i64; apps];
    let mut cpu_at_warm = 0.0;
    let mut warm_at = Instant::now();
    for tick in 0..=ticks {
        let started = Instant::now();
        let now = epoch_seconds();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, source) in sources.iter().enumerate() {
            let (source, names, until) = (source.clone(), names.clone(), recorded_until[i]);
            tasks.spawn(async move {
                let serving: [Instances; 0] = [];
                let ask = Ask {
                    app: &names[i],
                    serving: &serving,
                    recorded_until: until,
                    now,
                };
                (i, source.take(&ask).await)
            });
        }
        let mut steps = 0;
        let mut requests = 0u64;
        while let Some(joined) = tasks.join_next().await {
            let (i, readings) = joined?;
            let readings = readings.map_err(|e| anyhow::anyhow!("{e}"))?;
            steps += readings.len();
            for reading in &readings {
                recorded_until[i] = recorded_until[i].max(reading.t);
                requests += reading.counts.values().map(|c| c.requests).sum::<u64>();
            }
        }
        println!(
            "tick {tick}: {steps} steps for {apps} apps ({requests} requests counted) in {:.2}s; resident {} MiB",
            started.elapsed().as_secs_f64(),
            proc_status::status_kib("self", "VmRSS") / 1024
        );
        std::io::stdout().flush()?;
        if tick == 0 {
            // The first ask reads the history; the steady state is measured after it.
            cpu_at_warm = proc_status::cpu_seconds("self")?;
            warm_at = Instant::now();
        }
        let next = STEP_S as f64 - (epoch_seconds_f64() % STEP_S as f64) + 1.5;
        tokio::time::sleep(Duration::from_secs_f64(next)).await;
    }
    let cores = (proc_status::cpu_seconds("self")? - cpu_at_warm) / warm_at.elapsed().as_secs_f64();
    println!(
        "{{\"apps\": {apps}, \"step_s\": {STEP_S}, \"steady_cores\": {cores:.3}, \"peak_resident_mib\": {}, \"resident_mib\": {}}}",
        proc_status::status_kib("self", "VmHWM") / 1024,
        proc_status::status_kib("self", "VmRSS") / 1024
    );
    Ok(())
}

fn epoch_seconds_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn epoch_seconds() -> i64 {
    epoch_seconds_f64() as i64
}
