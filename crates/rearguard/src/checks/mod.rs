//! Health checks run against a new release: one trait, one file per kind, and the closed
//! enum below as the only list of kinds. A check answers pass, warn or fail; the checks of
//! an app run concurrently, each bounded by its own timeout.

/// The methods every kind writes the same way from its `name`, `failures` and `timeout`
/// fields (and, with `component`, its `component` field).
macro_rules! common_check_methods {
    () => {
        fn name(&self) -> &str {
            &self.name
        }

        fn failures_to_rollback(&self) -> u32 {
            self.failures
        }

        fn timeout(&self) -> rearguard_judge::Span {
            self.timeout
        }
    };
    (component) => {
        common_check_methods!();

        fn component_mut(&mut self) -> Option<&mut Option<String>> {
            Some(&mut self.component)
        }
    };
}

pub mod command;
pub mod http;
pub mod postgres;
pub mod redis;
pub mod tcp;

use std::net::SocketAddr;
use std::path::Path;

use rearguard_judge::Span;
use serde::{Deserialize, Serialize};

use crate::backends::Instances;
use crate::clock::Stopwatch;
use crate::config::Flaw;

/// Worst last: `max` of several is their overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Pass,
    Warn,
    Fail,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Pass => "pass",
            Health::Warn => "warn",
            Health::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: String,
    /// The check's kind (`http`, `tcp`, ...).
    pub kind: String,
    pub health: Health,
    pub detail: String,
    /// How long it took.
    pub took_ms: u64,
}

/// What a check looks at: the running instances of one version of an app.
pub struct Subject<'a> {
    pub app: &'a str,
    pub instances: &'a Instances,
    /// Where commands run (the config file's directory).
    pub config_dir: &'a Path,
    /// Now, in epoch milliseconds (a certificate's days left are counted from it).
    pub now_ms: i64,
}

/// What every kind of check does.
#[async_trait::async_trait]
pub trait Check: Send + Sync {
    fn name(&self) -> &str;
    /// Consecutive failures before the release is rolled back.
    fn failures_to_rollback(&self) -> u32;
    /// How long it may take; past this it fails.
    fn timeout(&self) -> Span;
    /// Problems, with keys below the check; `listening` are the components that can be
    /// checked.
    fn problems(&self, listening: &[String]) -> Vec<Flaw>;
    /// The component it looks at, for a kind that looks at one (set to the served one when
    /// the config names none).
    fn component_mut(&mut self) -> Option<&mut Option<String>> {
        None
    }
    /// Looks once: the health and a one-line detail.
    async fn look(&self, subject: &Subject<'_>) -> (Health, String);
}

/// The check kinds, chosen in the config by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckConfig {
    /// An HTTP GET against a component of the release: status, body, JSON, latency.
    Http(http::HttpCheck),
    /// A TCP connection to a component of the release.
    Tcp(tcp::TcpCheck),
    /// A command (argv, no shell): exit 0 passes, 1 warns, anything else fails.
    Command(command::CommandCheck),
    /// A PostgreSQL server the release needs: connect, and an optional query.
    Postgres(postgres::PostgresCheck),
    /// A Redis server the release needs: PING.
    Redis(redis::RedisCheck),
}

impl CheckConfig {
    pub fn kind(&self) -> &dyn Check {
        match self {
            CheckConfig::Http(check) => check,
            CheckConfig::Tcp(check) => check,
            CheckConfig::Command(check) => check,
            CheckConfig::Postgres(check) => check,
            CheckConfig::Redis(check) => check,
        }
    }

    fn kind_mut(&mut self) -> &mut dyn Check {
        match self {
            CheckConfig::Http(check) => check,
            CheckConfig::Tcp(check) => check,
            CheckConfig::Command(check) => check,
            CheckConfig::Postgres(check) => check,
            CheckConfig::Redis(check) => check,
        }
    }

    /// The `kind` as written in the config.
    pub fn kind_name(&self) -> &'static str {
        match self {
            CheckConfig::Http(_) => "http",
            CheckConfig::Tcp(_) => "tcp",
            CheckConfig::Command(_) => "command",
            CheckConfig::Postgres(_) => "postgres",
            CheckConfig::Redis(_) => "redis",
        }
    }

    /// Problems, with keys below the check: the kind's own and those every kind shares.
    pub fn problems(&self, listening: &[String]) -> Vec<Flaw> {
        let check = self.kind();
        let name = check.name();
        let mut problems = check.problems(listening);
        if check.failures_to_rollback() == 0 {
            problems.push(Flaw::at(
                &["failures"],
                format!("check {name}: failures must be at least 1"),
            ));
        }
        if check.timeout().as_millis() == 0 {
            problems.push(Flaw::at(
                &["timeout"],
                format!("check {name}: timeout must be above 0s"),
            ));
        }
        problems
    }

    /// Sets the component looked at when the check names none.
    pub fn default_component(&mut self, component: Option<&str>) {
        if let Some(own) = self.kind_mut().component_mut()
            && own.is_none()
        {
            *own = component.map(str::to_string);
        }
    }

    pub fn name(&self) -> &str {
        self.kind().name()
    }

    pub fn failures_to_rollback(&self) -> u32 {
        self.kind().failures_to_rollback()
    }

    /// Runs the check once, bounded by its timeout.
    pub async fn run(&self, subject: &Subject<'_>) -> CheckResult {
        let check = self.kind();
        let watch = Stopwatch::start();
        let timeout = check.timeout();
        let (health, detail) = tokio::time::timeout(timeout.std(), check.look(subject))
            .await
            .unwrap_or_else(|_| (Health::Fail, format!("no answer within {timeout}")));
        CheckResult {
            check: check.name().to_string(),
            kind: self.kind_name().to_string(),
            health,
            detail,
            took_ms: watch.elapsed().as_millis() as u64,
        }
    }
}

/// Runs every check at once; each is bounded by its own timeout, so the whole takes no
/// longer than the slowest timeout.
pub async fn run_all(checks: &[CheckConfig], subject: &Subject<'_>) -> Vec<CheckResult> {
    futures_util::future::join_all(checks.iter().map(|check| check.run(subject))).await
}

/// The worst of several healths (no check: pass).
pub fn worst(results: &[CheckResult]) -> Health {
    results
        .iter()
        .map(|r| r.health)
        .max()
        .unwrap_or(Health::Pass)
}

/// The address of `component` (or the first one) among the subject's instances.
pub fn endpoint(component: Option<&str>, subject: &Subject<'_>) -> Result<SocketAddr, String> {
    let endpoints = &subject.instances.endpoints;
    match component {
        Some(component) => endpoints.get(component),
        None => endpoints.values().next(),
    }
    .copied()
    .ok_or_else(|| "the component is not running".to_string())
}

/// "unknown component" when a check names one that does not listen.
pub fn component_problem(
    name: &str,
    component: Option<&String>,
    listening: &[String],
) -> Option<Flaw> {
    let component = component.filter(|c| !listening.contains(c))?;
    Some(Flaw::at(
        &["component"],
        format!(
            "check {name}: unknown component {component:?}, or one that does not listen (listening: {})",
            listening.join(", ")
        ),
    ))
}

fn default_failures() -> u32 {
    3
}

fn default_timeout() -> Span {
    Span::from_secs(2)
}
