//! Command-hook backend, for platforms driven by a CLI or an API (`vercel promote`, a CI
//! workflow carrying the SHA, `kubectl set image`): argv templates (no shell) with
//! `{version}` and `{app}`, run for deploy, rollback, the current version and availability.
//! The platform moves traffic itself (traffic `platform`), or serves at fixed `endpoints`
//! the router or checks can reach. Hooks get only the environment their config names; their
//! output is kept, secrets redacted, for the incident.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use rearguard_judge::Span;
use serde::{Deserialize, Serialize};

use super::{Backend, BackendError, Capture, Instances, Workdirs};
use crate::config::Flaw;
use crate::names;

/// Hook runs whose output an incident keeps.
const KEPT_RUNS: usize = 10;
/// Bytes of a hook's output kept per run.
const KEPT_OUTPUT: usize = 16 * 1024;

/// Settings of the command-hook backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Makes `{version}` live (its exit status 0 means done). Placeholders: `{version}`,
    /// `{app}`.
    pub deploy: Vec<String>,
    /// Puts the known-good `{version}` back (default: `deploy` with it).
    #[serde(default)]
    pub rollback: Vec<String>,
    /// Prints the version live now (its first line), so a restarted guard knows.
    #[serde(default)]
    pub current: Vec<String>,
    /// Exits 0 when `{version}` can be deployed; its output says what is missing otherwise.
    #[serde(default)]
    pub available: Vec<String>,
    /// The hooks' whole environment, beside PATH, REARGUARD_APP and REARGUARD_VERSION; the
    /// guard's own is not passed on. Values may use `${NAME}`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where the platform serves each component, if rearguard can reach it (for the router
    /// in front, and checks); `HOST:PORT`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, SocketAddr>,
    /// A hook that has not finished within this long has failed.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
}

fn default_timeout() -> Span {
    Span::from_secs(300)
}

const PLACEHOLDERS: [&str; 2] = ["version", "app"];

impl CommandConfig {
    pub fn problems(&self) -> Vec<Flaw> {
        let mut problems = Vec::new();
        if self.deploy.is_empty() {
            problems.push(Flaw::at(
                &["backend", "deploy"],
                "the command backend needs a `deploy` command",
            ));
        }
        for (key, args) in [
            ("deploy", &self.deploy),
            ("rollback", &self.rollback),
            ("current", &self.current),
            ("available", &self.available),
        ] {
            if let Some(unknown) = args.iter().find_map(|arg| unknown_placeholder(arg)) {
                problems.push(Flaw::at(
                    &["backend", key],
                    format!(
                        "unknown placeholder {{{unknown}}} in {key}; use {{version}} or {{app}}"
                    ),
                ));
            }
        }
        for name in self.endpoints.keys() {
            if let Err(e) = names::check_name(name) {
                problems.push(Flaw::at(
                    &["backend", "endpoints", name],
                    format!("component name {e}"),
                ));
            }
        }
        if self.current.iter().any(|arg| arg.contains("{version}")) {
            problems.push(Flaw::at(
                &["backend", "current"],
                "the current hook prints the version: it is given none ({version})",
            ));
        }
        problems.extend(Flaw::if_zero(&["backend", "timeout"], self.timeout));
        problems
    }

    pub fn listening_components(&self) -> Vec<String> {
        self.endpoints.keys().cloned().collect()
    }
}

fn unknown_placeholder(arg: &str) -> Option<String> {
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}')? + start;
        let name = &rest[start + 1..end];
        if !PLACEHOLDERS.contains(&name) {
            return Some(name.to_string());
        }
        rest = &rest[end + 1..];
    }
    None
}

/// One hook run, for the incident.
#[derive(Debug, Clone)]
struct Run {
    hook: &'static str,
    version: String,
    outcome: String,
    output: String,
}

pub struct CommandBackend {
    app: String,
    config: CommandConfig,
    dirs: Workdirs,
    /// The version this backend last made live (or the platform said is live).
    live: Mutex<Option<String>>,
    runs: Mutex<VecDeque<Run>>,
}

impl CommandBackend {
    pub fn new(app: &str, config: CommandConfig, dirs: Workdirs) -> Self {
        Self {
            app: app.to_string(),
            config,
            dirs,
            live: Mutex::new(None),
            runs: Mutex::new(VecDeque::new()),
        }
    }

    /// Runs one hook (for `version`, when it is about one) bounded, keeps its output, and
    /// returns it, or why it failed.
    async fn hook(
        &self,
        hook: &'static str,
        template: &[String],
        version: Option<&str>,
    ) -> Result<String, BackendError> {
        let args: Vec<String> = template
            .iter()
            .map(|a| {
                a.replace("{version}", version.unwrap_or(""))
                    .replace("{app}", &self.app)
            })
            .collect();
        let failed = |why: String| BackendError::Platform {
            what: format!("the {hook} hook"),
            why,
        };
        let version_env: Vec<(&str, &str)> = std::iter::once(("REARGUARD_APP", self.app.as_str()))
            .chain(version.map(|v| ("REARGUARD_VERSION", v)))
            .collect();
        let ran = crate::argv::run(
            &args,
            &self.config.env,
            &version_env,
            &self.dirs.config_dir,
            self.config.timeout,
        )
        .await;
        let output = ran.output.clone();
        let outcome = ran.outcome.clone();
        let kept: String = output
            .chars()
            .rev()
            .take(KEPT_OUTPUT)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut runs = self.runs.lock().expect("lock");
        runs.push_back(Run {
            hook,
            version: version.unwrap_or("").to_string(),
            outcome: outcome.clone(),
            output: kept,
        });
        while runs.len() > KEPT_RUNS {
            runs.pop_front();
        }
        drop(runs);
        if ran.succeeded() {
            Ok(output)
        } else {
            Err(failed(format!("{outcome}: {}", ran.last_line())))
        }
    }

    /// Runs `hook` to make `version` live, then waits (bounded) until its endpoints answer.
    async fn make_live(
        &self,
        hook: &'static str,
        template: &[String],
        version: &str,
    ) -> Result<Instances, BackendError> {
        names::check_version(version).map_err(|why| BackendError::Unavailable {
            version: version.into(),
            missing: vec![why],
        })?;
        self.hook(hook, template, Some(version)).await?;
        *self.live.lock().expect("lock") = Some(version.to_string());
        let deadline = tokio::time::Instant::now() + self.config.timeout.std();
        for (component, address) in &self.config.endpoints {
            while tokio::net::TcpStream::connect(address).await.is_err() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(BackendError::NotReady {
                        component: component.clone(),
                        version: version.into(),
                        within: self.config.timeout,
                        why: format!("nothing answers on {address}"),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(self.instances(version))
    }

    fn instances(&self, version: &str) -> Instances {
        Instances {
            version: version.to_string(),
            endpoints: self.config.endpoints.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Backend for CommandBackend {
    /// Asks the platform which version is live, if it can tell.
    async fn recover(&self) {
        if self.config.current.is_empty() {
            return;
        }
        match self.hook("current", &self.config.current, None).await {
            Ok(output) => {
                let version = output.lines().next().unwrap_or("").trim().to_string();
                if names::check_version(&version).is_ok() {
                    tracing::info!(app = %self.app, version, "the platform says this version is live");
                    *self.live.lock().expect("lock") = Some(version);
                } else {
                    tracing::warn!(app = %self.app, output = %version, "the current hook printed no version");
                }
            }
            Err(e) => {
                tracing::warn!(app = %self.app, error = %e, "cannot ask the platform which version is live")
            }
        }
    }

    async fn check_available(&self, version: &str) -> Result<(), BackendError> {
        names::check_version(version).map_err(|why| BackendError::Unavailable {
            version: version.into(),
            missing: vec![why],
        })?;
        if self.config.available.is_empty() {
            return Ok(());
        }
        self.hook("available", &self.config.available, Some(version))
            .await
            .map(|_| ())
            .map_err(|e| BackendError::Unavailable {
                version: version.into(),
                missing: vec![e.to_string()],
            })
    }

    async fn deploy(&self, version: &str) -> Result<Instances, BackendError> {
        if self.live.lock().expect("lock").as_deref() == Some(version) {
            return Ok(self.instances(version));
        }
        self.make_live("deploy", &self.config.deploy, version).await
    }

    async fn rollback(&self, version: &str) -> Result<Instances, BackendError> {
        if self.live.lock().expect("lock").as_deref() == Some(version) {
            return Ok(self.instances(version));
        }
        match self.config.rollback.is_empty() {
            true => self.make_live("deploy", &self.config.deploy, version).await,
            false => {
                self.make_live("rollback", &self.config.rollback, version)
                    .await
            }
        }
    }

    async fn running(&self, version: &str) -> Option<Instances> {
        (self.live.lock().expect("lock").as_deref() == Some(version))
            .then(|| self.instances(version))
    }

    async fn exited(&self, _version: &str) -> Vec<String> {
        Vec::new()
    }

    /// The platform's releases are its own: nothing is stopped.
    async fn stop(&self, _version: &str) {}

    async fn stop_all(&self) {}

    async fn capture(&self, _version: &str) -> Capture {
        let runs: Vec<Run> = self.runs.lock().expect("lock").iter().cloned().collect();
        Capture {
            state: serde_json::json!({
                "backend": "command",
                "live": *self.live.lock().expect("lock"),
                "hooks": runs.iter().map(|r| serde_json::json!({
                    "hook": r.hook, "version": r.version, "outcome": r.outcome,
                })).collect::<Vec<_>>(),
            }),
            logs: runs
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        format!("{:02} {} {}", i + 1, r.hook, r.version),
                        r.output.clone(),
                    )
                })
                .collect(),
        }
    }

    fn keep_previous_warm(&self) -> Span {
        Span::default()
    }
}
