//! How versions reach the platform: one trait, one file per kind, and the closed enum below
//! as the only list of kinds. A backend starts and stops versions; moving traffic between
//! running versions is the router's job.

pub mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::AppConfig;

/// A running version: where each component of it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instances {
    pub version: String,
    pub endpoints: BTreeMap<String, SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("component {component} of version {version} is not available: {why}")]
    Unavailable {
        component: String,
        version: String,
        why: String,
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
        within: rearguard_judge::Span,
        why: String,
    },
}

/// What every kind of backend does.
pub trait Backend: Send + Sync {
    /// Cleans up after a guard of this app that died (called once the lease is ours).
    fn recover(&self);
    /// Why `version` cannot be deployed (a component's artifact is missing), if it cannot.
    fn check_available(&self, version: &str) -> Result<(), BackendError>;
    /// Starts every component of `version` and returns once all are ready.
    fn start(&self, version: &str) -> impl Future<Output = Result<Instances, BackendError>> + Send;
    /// Stops `version` (gracefully, then forcibly); stopping what is not running is fine.
    fn stop(&self, version: &str) -> impl Future<Output = ()> + Send;
    /// The instances of `version`, if every component of it is running.
    fn running(&self, version: &str) -> Option<Instances>;
    /// How the components of `version` that died ended (`start` brings them back).
    fn exited(&self, version: &str) -> Vec<String>;
    /// A snapshot of the platform's state for the incident record.
    fn capture_state(&self) -> serde_json::Value;
    /// Stops everything this backend started (on shutdown).
    fn stop_all(&self) -> impl Future<Output = ()> + Send;
}

/// The backend kinds, chosen in the config by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendConfig {
    /// Local processes, one per component, started from each component's `command`.
    Process(process::ProcessConfig),
}

impl BackendConfig {
    /// Problems, with keys below the app.
    pub fn problems(&self, app: &AppConfig) -> Vec<crate::config::Flaw> {
        match self {
            BackendConfig::Process(config) => config.problems(app),
        }
    }
}

/// A configured backend of any kind.
pub enum AnyBackend {
    Process(process::ProcessBackend),
}

impl AnyBackend {
    pub fn new(app_name: &str, app: &AppConfig, dirs: process::InstanceDirs) -> Self {
        match &app.backend {
            BackendConfig::Process(config) => AnyBackend::Process(process::ProcessBackend::new(
                app_name,
                app,
                config.clone(),
                dirs,
            )),
        }
    }

    fn inner(&self) -> &impl Backend {
        match self {
            AnyBackend::Process(backend) => backend,
        }
    }

    pub fn recover(&self) {
        self.inner().recover()
    }

    pub fn check_available(&self, version: &str) -> Result<(), BackendError> {
        self.inner().check_available(version)
    }

    pub async fn start(&self, version: &str) -> Result<Instances, BackendError> {
        self.inner().start(version).await
    }

    pub async fn stop(&self, version: &str) {
        self.inner().stop(version).await
    }

    pub fn running(&self, version: &str) -> Option<Instances> {
        self.inner().running(version)
    }

    pub fn exited(&self, version: &str) -> Vec<String> {
        self.inner().exited(version)
    }

    pub fn capture_state(&self) -> serde_json::Value {
        self.inner().capture_state()
    }

    pub async fn stop_all(&self) {
        self.inner().stop_all().await
    }
}
