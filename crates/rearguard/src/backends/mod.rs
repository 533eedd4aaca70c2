//! How versions run on a platform: one trait, one file per kind with its config beside it,
//! and the tagged enum below as the only list of kinds. A backend makes a version run and
//! says what runs; moving traffic between running versions is `traffic`'s job.

pub mod command;
pub mod compose;
pub mod kubernetes;
pub mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use rearguard_judge::Span;
use serde::{Deserialize, Serialize};

use crate::config::Flaw;

/// A running version: where each of its components that listens can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instances {
    pub version: String,
    pub endpoints: BTreeMap<String, SocketAddr>,
}

/// How long a replaced version stays warm for an instant switch back, unless configured.
fn default_keep_warm() -> rearguard_judge::Span {
    rearguard_judge::Span::from_secs(300)
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("version {version} does not exist or is incomplete: {}", missing.join("; "))]
    Unavailable {
        version: String,
        missing: Vec<String>,
    },
    #[error("component {component} of version {version} could not start: {why}")]
    StartFailed {
        component: String,
        version: String,
        why: String,
    },
    #[error(
        "component {component} of version {version} did not become ready within {within}: {why}"
    )]
    NotReady {
        component: String,
        version: String,
        within: Span,
        why: String,
    },
    #[error("{what} failed: {why}")]
    Platform { what: String, why: String },
}

/// What an incident keeps of the platform when a release goes bad: its state, and the last
/// lines each component of the bad version logged (secrets redacted).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Capture {
    pub state: serde_json::Value,
    pub logs: BTreeMap<String, String>,
}

/// Where a backend works: the config file's directory (relative paths and commands start
/// there) and its own directory for state and logs, under the data directory. Both are
/// absolute: processes started in one of them are given paths in the other.
#[derive(Debug, Clone)]
pub struct Workdirs {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Workdirs {
    pub fn of(config: &crate::config::Config, config_path: &std::path::Path) -> Self {
        let absolute = |path: PathBuf| std::path::absolute(&path).unwrap_or(path);
        Self {
            config_dir: absolute(config.resolve(config_path, std::path::Path::new("."))),
            state_dir: absolute(config.data_dir(config_path)),
        }
    }
}

/// What every kind of backend does. Every operation is safe to repeat: starting what runs,
/// stopping what is stopped, are successes.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Takes over what a guard of this app left (it died): adopt what still runs, forget
    /// what does not. Called once the app's lease is ours.
    async fn recover(&self);
    /// Whether every component of `version` can be deployed; else what is missing.
    async fn check_available(&self, version: &str) -> Result<(), BackendError>;
    /// Makes `version` run (every component ready) and says where; a version running
    /// already is checked and returned, dead parts of it brought back.
    async fn deploy(&self, version: &str) -> Result<Instances, BackendError>;
    /// Makes `version` (the known-good release) run again after a bad one. Most kinds
    /// deploy it; a platform with its own rollback command uses that.
    async fn rollback(&self, version: &str) -> Result<Instances, BackendError> {
        self.deploy(version).await
    }
    /// Where `version` runs, if every component of it runs.
    async fn running(&self, version: &str) -> Option<Instances>;
    /// How the components of `version` that died ended (`deploy` brings them back).
    async fn exited(&self, version: &str) -> Vec<String>;
    /// Stops `version` (gracefully, then forcibly).
    async fn stop(&self, version: &str);
    /// Stops everything this backend runs (when the guard stops).
    async fn stop_all(&self);
    /// The platform's state and `version`'s recent logs, for the incident.
    async fn capture(&self, version: &str) -> Capture;
    /// How long a replaced version keeps running, for an instant switch-back.
    fn keep_previous_warm(&self) -> Span;
    /// CPU and memory of `version`'s instances, summed; `None` where the platform does not
    /// tell (or nothing of it runs).
    async fn usage(&self, _version: &str) -> Option<rearguard_judge::Usage> {
        None
    }
}

/// The backend kinds, chosen in the config by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendConfig {
    /// Local processes, one per component, started from each component's `command`.
    Process(process::ProcessConfig),
    /// Docker Compose: a version is an image tag for every service of a compose file.
    Compose(compose::ComposeConfig),
    /// A platform driven by commands (a CLI, an API call): deploy, rollback, current,
    /// available hooks.
    Command(command::CommandConfig),
    /// Kubernetes: a version is the image tag on each component's Deployment.
    Kubernetes(kubernetes::KubernetesConfig),
}

impl BackendConfig {
    pub fn build(&self, app: &str, dirs: Workdirs) -> Box<dyn Backend> {
        match self {
            BackendConfig::Process(config) => {
                Box::new(process::ProcessBackend::new(app, config.clone(), dirs))
            }
            BackendConfig::Compose(config) => {
                Box::new(compose::ComposeBackend::new(app, config.clone(), dirs))
            }
            BackendConfig::Command(config) => {
                Box::new(command::CommandBackend::new(app, config.clone(), dirs))
            }
            BackendConfig::Kubernetes(config) => Box::new(kubernetes::KubernetesBackend::new(
                app,
                config.clone(),
                dirs,
            )),
        }
    }

    /// Problems, with keys below the app.
    pub fn problems(&self) -> Vec<Flaw> {
        match self {
            BackendConfig::Process(config) => config.problems(),
            BackendConfig::Compose(config) => config.problems(),
            BackendConfig::Command(config) => config.problems(),
            BackendConfig::Kubernetes(config) => config.problems(),
        }
    }

    /// The app's components, by name.
    pub fn components(&self) -> Vec<String> {
        match self {
            BackendConfig::Process(config) => config.components(),
            BackendConfig::Compose(config) => config.listening_components(),
            BackendConfig::Command(config) => config.listening_components(),
            BackendConfig::Kubernetes(config) => config.components.keys().cloned().collect(),
        }
    }

    /// The components that listen (can take traffic and be checked), by name.
    pub fn listening_components(&self) -> Vec<String> {
        match self {
            BackendConfig::Process(config) => config.listening_components(),
            BackendConfig::Compose(config) => config.listening_components(),
            BackendConfig::Command(config) => config.listening_components(),
            BackendConfig::Kubernetes(config) => config.listening_components(),
        }
    }
}
