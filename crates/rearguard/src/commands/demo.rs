//! `rearguard demo`: from nothing, deploy a good release behind the built-in router, drive
//! traffic, deploy a bad one, and show it rolled back on its own. Everything real: the
//! ledger on SQLite, the demo service as child processes, the router, the judge.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::output::Status;
use super::{Workspace, stop_on_signals};
use crate::cli::DemoArgs;
use crate::clock::Stopwatch;
use crate::guard::{Guardian, Progress};
use crate::ledger::{Rollback, RollbackStatus};
use crate::router::VERSION_HEADER;
use crate::{Outcome, UsageError, config, identity};

const APP: &str = "demo";
/// The whole demo gives up after this long.
const DEMO_LIMIT: Duration = Duration::from_secs(110);

/// The demo's config: one component served by the bundled demo service. A short bake and
/// warm-up suit a demo; real services want the defaults.
const CONFIG: &str = r#"# Written by `rearguard demo`.
data_dir: .
apps:
  demo:
    bake: 8s
    backend:
      kind: process
      components:
        web:
          command: [@EXE@, "demo-app", "--version", "{version}", "--port", "{port}", "--bad-version", "v2", "--bad-error-rate", "@RATE@"]
          ready_path: /health
      keep_previous_warm: 60s
      stop_grace: 2s
    traffic:
      kind: router
      listen:
        web: @PORT@
    checks:
      - kind: http
        name: health
        path: /health
    policy:
      warmup: 3s
      transient: 2s
"#;

pub async fn run(args: DemoArgs) -> anyhow::Result<Outcome> {
    if !(0.0..=1.0).contains(&args.bad_error_rate) {
        return Err(UsageError("--bad-error-rate must be between 0 and 1".into()).into());
    }
    // A fresh directory that stays afterwards: its ledger, logs and post-mortem are there
    // to look at.
    let dir: PathBuf = match &args.dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new()
            .prefix("rearguard-demo-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config_path = dir.join("rearguard.yaml");
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let text = CONFIG
        .replace("@PORT@", &args.port.to_string())
        .replace("@EXE@", &serde_json::to_string(&exe.display().to_string())?)
        .replace("@RATE@", &args.bad_error_rate.to_string());
    let text = match &args.notifications {
        Some(path) => {
            let extra = std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
            format!("{text}{extra}")
        }
        None => text,
    };
    std::fs::write(&config_path, &text)?;
    let config = config::parse(
        &config_path,
        &text,
        &|name| std::env::var(name).ok(),
        config::Needs::Everything,
    )
    .map_err(|problems| anyhow::anyhow!("the demo's own config is invalid: {}", problems[0]))?;
    let workspace = Workspace::with_config(config, &config_path).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let context = workspace.guard_context(Some(tx))?;
    // Ctrl-C ends everything; the demo's own end stops only the demo (a dashboard stays).
    let signals = stop_on_signals();
    let stop = signals.child_token();
    let dashboard = match args.listen {
        Some(address) => Some(Dashboard::start(&config_path, address, &context, signals).await?),
        None => None,
    };
    let guardian = Guardian::start(&context, APP).await?;
    let guard_task = tokio::spawn(guardian.run(crate::guard::Ending {
        stop: stop.clone(),
        ..Default::default()
    }));
    let traffic = Traffic::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)),
        stop.clone(),
    );
    let story = tokio::time::timeout(DEMO_LIMIT, tell_story(&workspace, rx, &traffic, &stop)).await;
    stop.cancel();
    traffic.stop().await;
    guard_task.await??;
    let summary = match story {
        Ok(result) => result?,
        Err(_) => anyhow::bail!("the demo did not finish within {}s", DEMO_LIMIT.as_secs()),
    };
    let Some(summary) = summary else {
        crate::say!("demo interrupted; everything it started is stopped");
        return Ok(Outcome::Failed);
    };
    // With --json, stdout holds only the JSON line; the story goes to stderr.
    let say = |text: String| {
        if args.json {
            crate::say!("{text}");
        } else {
            println!("{text}");
        }
    };
    say(format!(
        "\n{}",
        super::versions::history(&workspace.ledger, APP).await?
    ));
    let rollback = &summary.rollback;
    say(format!(
        "rollback #{}: {} -> {} ({}) by {}: {}",
        rollback.id,
        rollback.from_version,
        rollback.to_version,
        rollback.trigger.as_str(),
        rollback.requested_by,
        rollback.reason
    ));
    say(format!(
        "rollback log: {}",
        workspace.config.rollback_log(&config_path).display()
    ));
    let (incident, postmortem) = close_incident(&workspace, rollback, &dir).await?;
    say(format!(
        "incident #{incident} resolved; post-mortem draft: {}",
        postmortem.display()
    ));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "rolled_back": rollback.from_version,
                "restored": rollback.to_version,
                "detected_after_s": round(summary.detected_after_s),
                "restored_after_s": round(summary.restored_after_s),
                "incident": incident,
                "postmortem": postmortem,
                "dashboard": dashboard.as_ref().map(|d| d.url.clone()),
                "token": dashboard.as_ref().map(|d| d.token.expose().to_string()),
            })
        );
    }
    if let Some(dashboard) = dashboard {
        dashboard.serve_until_stopped(&say).await?;
    }
    Ok(Outcome::Success)
}

/// The API and dashboard beside the demo, on its ledger, with an operator token of its own.
struct Dashboard {
    url: String,
    token: crate::secret::Secret,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Dashboard {
    async fn start(
        config_path: &std::path::Path,
        address: SocketAddr,
        context: &crate::guard::Context,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let workspace = Arc::new(Workspace::open(config_path).await?);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| UsageError(format!("cannot listen on {address}: {e}")))?;
        let url = format!("http://{}/dashboard", listener.local_addr()?);
        let name = format!("demo-{}", std::process::id());
        let created = crate::ops::create_token(
            &workspace,
            &crate::ops::Actor::cli(),
            &name,
            crate::ledger::Role::Operator,
        )
        .await?;
        crate::say!(
            "dashboard: {url} (sign in with the operator token {})",
            created.token.expose()
        );
        let ended = stop.clone();
        let guard = Some(context.metrics.clone());
        let task = tokio::spawn(crate::server::serve(
            workspace,
            listener,
            guard,
            async move { ended.cancelled().await },
        ));
        Ok(Self {
            url,
            token: created.token,
            stop,
            task,
        })
    }

    /// Keeps the dashboard up after the demo, until Ctrl-C or SIGTERM.
    async fn serve_until_stopped(self, say: &impl Fn(String)) -> anyhow::Result<()> {
        say(format!(
            "the dashboard stays up at {}: Ctrl-C to stop",
            self.url
        ));
        self.stop.cancelled().await;
        self.task.await??;
        Ok(())
    }
}

/// Resolves the demo's incident and writes its post-mortem beside the demo's files.
async fn close_incident(
    workspace: &Workspace,
    rollback: &Rollback,
    dir: &std::path::Path,
) -> anyhow::Result<(i64, PathBuf)> {
    let ledger = &workspace.ledger;
    let incident = ledger
        .incident_of_rollback(rollback.id)
        .await?
        .context("the rollback opened no incident")?;
    let actor = identity::actor();
    ledger
        .add_timeline(
            incident.id,
            None,
            crate::ledger::TimelineKind::Note,
            &actor,
            "the demo's v2 fails requests on purpose",
        )
        .await?;
    ledger
        .set_root_cause(
            incident.id,
            "v2 was built to fail a share of its requests (rearguard demo)",
        )
        .await?;
    ledger.resolve_incident(incident.id, &actor).await?;
    ledger
        .add_timeline(
            incident.id,
            None,
            crate::ledger::TimelineKind::Resolved,
            &actor,
            "resolved",
        )
        .await?;
    let record = crate::incidents::Record::load(ledger, incident.id)
        .await?
        .context("incident vanished")?;
    let text = crate::incidents::render_postmortem(&record, crate::incidents::POSTMORTEM_TEMPLATE)?;
    let path = dir.join(format!("postmortem-{}.md", incident.id));
    std::fs::write(&path, text)?;
    Ok((incident.id, path))
}

fn round(seconds: f64) -> f64 {
    (seconds * 10.0).round() / 10.0
}

struct Summary {
    rollback: Rollback,
    detected_after_s: f64,
    restored_after_s: f64,
}

/// Deploys v1, waits until it is stable, deploys v2, and follows until traffic is back on
/// v1. `None` when interrupted.
async fn tell_story(
    workspace: &Workspace,
    mut progress: mpsc::UnboundedReceiver<Progress>,
    traffic: &Traffic,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Summary>> {
    let bar = Status::new(false);
    let say = |line: String| bar.say(&line);
    let actor = identity::actor();
    workspace.ledger.record_release(APP, "v1", &actor).await?;
    say("deploying v1 (a good release) behind the router".into());
    let mut v2_taking_traffic: Option<Stopwatch> = None;
    let mut detected_after = None;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(500)) => None,
            message = progress.recv() => message,
        };
        bar.show(&traffic.describe());
        match message {
            Some(Progress::Watching { version, .. }) if version == "v1" => {
                say("v1 serves; driving traffic; v1 bakes for 8s before it is known-good".into())
            }
            Some(Progress::Stable { version, .. }) if version == "v1" => {
                say("v1 is stable (known-good); deploying v2, which fails some requests".into());
                workspace.ledger.record_release(APP, "v2", &actor).await?;
            }
            Some(Progress::Watching { version, .. }) if version == "v2" => {
                v2_taking_traffic = Some(Stopwatch::start());
                say("v2 takes the traffic; rearguard watches it against v1".into());
            }
            Some(Progress::RollingBack { reason, .. }) => {
                detected_after = v2_taking_traffic.map(|w| w.elapsed().as_secs_f64());
                say(format!("detected: {reason}"));
                say("rolling back to v1".into());
            }
            Some(Progress::RolledBack {
                rollback,
                verification,
                ..
            }) => {
                let restored_after = v2_taking_traffic
                    .map(|w| w.elapsed().as_secs_f64())
                    .unwrap_or_default();
                let passed = verification["passed"].as_bool().unwrap_or(false);
                // Let the traffic show where it goes now.
                tokio::time::sleep(Duration::from_secs(3)).await;
                say(format!(
                    "traffic is back on {} ({}); verification {}",
                    rollback.to_version,
                    traffic.describe(),
                    if passed { "passed" } else { "FAILED" }
                ));
                bar.finish();
                if rollback.status != RollbackStatus::Done {
                    anyhow::bail!("the rollback did not complete: {}", rollback.reason);
                }
                return Ok(Some(Summary {
                    detected_after_s: detected_after.unwrap_or(restored_after),
                    restored_after_s: restored_after,
                    rollback,
                }));
            }
            Some(Progress::Failed { version, why, .. }) => anyhow::bail!("{version} failed: {why}"),
            Some(Progress::RollbackFailed { why, .. }) => {
                anyhow::bail!("the rollback failed: {why}")
            }
            _ => {}
        }
    }
}

/// One answer the traffic got: when, from which version, failed or not, how fast.
struct Answer {
    at: Stopwatch,
    version: String,
    failed: bool,
    latency_ms: f64,
}

/// Steady traffic through the router, remembering who answered and how.
struct Traffic {
    seen: Arc<Mutex<VecDeque<Answer>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

const WORKERS: usize = 4;
/// Pause between a worker's requests: about 25 requests per second each.
const PAUSE: Duration = Duration::from_millis(40);

impl Traffic {
    fn start(address: SocketAddr, stop: CancellationToken) -> Self {
        let seen = Arc::new(Mutex::new(VecDeque::new()));
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let workers = (0..WORKERS)
            .map(|_| {
                let (seen, client, stop) = (seen.clone(), client.clone(), stop.clone());
                tokio::spawn(async move {
                    let uri: hyper::Uri = format!("http://{address}/").parse().expect("valid uri");
                    while !stop.is_cancelled() {
                        let watch = Stopwatch::start();
                        let answer = tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone())).await;
                        let latency = watch.elapsed().as_secs_f64() * 1000.0;
                        if let Ok(Ok(response)) = answer {
                            // No version: the router had nothing to send it to yet.
                            let Some(version) = response.headers().get(VERSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string) else {
                                continue;
                            };
                            let failed = !response.status().is_success();
                            let _ = response.into_body().collect().await;
                            let mut seen = seen.lock().expect("lock");
                            seen.push_back(Answer { at: Stopwatch::start(), version, failed, latency_ms: latency });
                            while seen.front().is_some_and(|a| a.at.elapsed() > Duration::from_secs(5)) {
                                seen.pop_front();
                            }
                        }
                        tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(PAUSE) => {} }
                    }
                })
            })
            .collect();
        Self { seen, workers }
    }

    /// Error rate and p95 per version over the last seconds.
    fn describe(&self) -> String {
        let seen = self.seen.lock().expect("lock");
        let mut by_version: BTreeMap<&str, Vec<(bool, f64)>> = BTreeMap::new();
        for answer in seen
            .iter()
            .filter(|a| a.at.elapsed() <= Duration::from_secs(3))
        {
            by_version
                .entry(answer.version.as_str())
                .or_default()
                .push((answer.failed, answer.latency_ms));
        }
        let parts: Vec<String> = by_version
            .iter()
            .map(|(version, outcomes)| {
                let errors =
                    outcomes.iter().filter(|(f, _)| *f).count() as f64 / outcomes.len() as f64;
                let mut latencies: Vec<f64> = outcomes.iter().map(|(_, l)| *l).collect();
                latencies.sort_by(f64::total_cmp);
                let p95 =
                    latencies[((latencies.len() as f64 * 0.95) as usize).min(latencies.len() - 1)];
                format!(
                    "{version}: {} req/s, errors {:.1}%, p95 {p95:.0}ms",
                    outcomes.len() / 3,
                    errors * 100.0
                )
            })
            .collect();
        if parts.is_empty() {
            "waiting for traffic".into()
        } else {
            parts.join(" | ")
        }
    }

    async fn stop(self) {
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}
