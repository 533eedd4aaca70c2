//! Benchmark: the whole guard (`rearguard guard`, the release binary) guarding many apps, each
//! with a release under watch (bake 1 h, so every app is judged every step for the whole run),
//! signals from a stand-in Prometheus (examples/common/stand_in.rs) serving every app's
//! series, deploys through a command hook (`true`), traffic moved by the platform. Reports
//! the guard process's CPU (cores) over a steady window once every release is watched, and
//! its resident memory, peak and at the end. Usage (see bench/guard_at_scale.sh):
//!
//!     cargo run --release --example guard_at_scale -- [APPS] [SECONDS] [TICK]

// A benchmark measures real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rearguard::ledger::{Ledger, ReleaseState};

#[path = "common/proc_status.rs"]
mod proc_status;
#[path = "common/stand_in.rs"]
mod stand_in;

use proc_status::{cpu_seconds, status_kib};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--stand-in") {
        return stand_in::serve(args[2].parse()?, args[3].parse()?);
    }
    let apps: usize = args.get(1).map_or(Ok(10_000), |a| a.parse())?;
    let seconds: u64 = args.get(2).map_or(Ok(60), |a| a.parse())?;
    let tick = args.get(3).cloned().unwrap_or_else(|| "10s".into());
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut children = Children(Vec::new());
    children.0.push(
        Command::new(std::env::current_exe()?)
            .args(["--stand-in", &apps.to_string(), &port.to_string()])
            .spawn()?,
    );
    let config = dir.path().join("rearguard.yaml");
    std::fs::write(&config, config_text(apps, port, &tick))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ledger_url = format!(
        "sqlite://{}",
        dir.path().join("data/rearguard.db").display()
    );
    let ledger = runtime.block_on(async {
        let ledger = Ledger::open(&ledger_url, rearguard::clock::system()).await?;
        for app in 0..apps {
            ledger
                .record_release(&format!("app{app}"), "v1", "bench")
                .await?;
        }
        anyhow::Ok(ledger)
    })?;
    let started = Instant::now();
    let log = std::fs::File::create(dir.path().join("guard.log"))?;
    let guard = Command::new(guard_binary()?)
        .args(["--config", &config.to_string_lossy(), "guard"])
        .env(
            "RUST_LOG",
            std::env::var("GUARD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let pid = guard.id().to_string();
    children.0.push(guard);
    runtime.block_on(async {
        // Bounded: 20 minutes for every release to be deployed and watched.
        for _ in 0..240 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let mut watched = 0;
            for app in 0..apps {
                let current = ledger.current(&format!("app{app}")).await?;
                watched += usize::from(current.is_some_and(|r| r.state == ReleaseState::Watching));
            }
            println!(
                "{watched} of {apps} releases watched after {:.0}s; resident {} MiB",
                started.elapsed().as_secs_f64(),
                status_kib(&pid, "VmRSS") / 1024
            );
            if watched == apps {
                return Ok(());
            }
        }
        anyhow::bail!("the guard did not watch every release in 20 minutes; see its log")
    })?;
    let warm_up_s = started.elapsed().as_secs_f64();
    let (cpu_before, at) = (cpu_seconds(&pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let cores = (cpu_seconds(&pid)? - cpu_before) / at.elapsed().as_secs_f64();
    let log = std::fs::read_to_string(dir.path().join("guard.log"))?;
    if let Ok(keep) = std::env::var("GUARD_LOG_TO") {
        std::fs::write(keep, &log)?;
    }
    for line in log.lines().skip(1).take(3) {
        println!("guard log: {line}");
    }
    println!(
        "{{\"apps\": {apps}, \"tick\": \"{tick}\", \"warm_up_s\": {warm_up_s:.0}, \"steady_cores\": {cores:.3}, \"peak_resident_mib\": {}, \"resident_mib\": {}, \"guard_log_lines\": {}}}",
        status_kib(&pid, "VmHWM") / 1024,
        status_kib(&pid, "VmRSS") / 1024,
        log.lines().count()
    );
    Ok(())
}

fn config_text(apps: usize, port: u16, tick: &str) -> String {
    let mut text = format!("data_dir: data\nguard:\n  tick: {tick}\napps:\n");
    for app in 0..apps {
        text.push_str(&format!(
            "  app{app}:
    bake: 1h
    backend: {{kind: command, deploy: [\"true\"]}}
    traffic: {{kind: platform}}
    signals: {{kind: prometheus, url: \"http://127.0.0.1:{port}\", step: 10s}}
"
        ));
    }
    text
}

/// `rearguard` beside this example's directory (target/release/examples/..).
fn guard_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("rearguard"))
        .filter(|path| path.exists());
    binary
        .ok_or_else(|| anyhow::anyhow!("build the rearguard binary first (cargo build --release)"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Every process the benchmark started, killed when it ends however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
