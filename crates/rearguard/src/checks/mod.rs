//! Health checks run against a new release: one trait, one file per kind, and the closed
//! enum below as the only list of kinds. A check answers pass, warn or fail.

pub mod http;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub health: Health,
    pub detail: String,
}

/// What every kind of check does: look at the running instances of one version.
pub trait Check {
    fn name(&self) -> &str;
    /// Consecutive failures before the release is rolled back.
    fn failures_to_rollback(&self) -> u32;
    fn run(
        &self,
        endpoints: &BTreeMap<String, SocketAddr>,
    ) -> impl Future<Output = CheckResult> + Send;
}

/// The check kinds, chosen in the config by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckConfig {
    /// An HTTP GET against a component of the release.
    Http(http::HttpCheck),
}

impl CheckConfig {
    /// Problems, with keys below the check; `listening` are the components that can be
    /// checked.
    pub fn problems(&self, listening: &[String]) -> Vec<crate::config::Flaw> {
        match self {
            CheckConfig::Http(check) => check.problems(listening),
        }
    }

    /// Sets the component looked at when the check names none.
    pub fn default_component(&mut self, component: Option<&str>) {
        match self {
            CheckConfig::Http(check) => {
                if check.component.is_none() {
                    check.component = component.map(str::to_string);
                }
            }
        }
    }

    pub fn name(&self) -> &str {
        match self {
            CheckConfig::Http(check) => check.name(),
        }
    }

    pub fn failures_to_rollback(&self) -> u32 {
        match self {
            CheckConfig::Http(check) => check.failures_to_rollback(),
        }
    }

    pub async fn run(&self, endpoints: &BTreeMap<String, SocketAddr>) -> CheckResult {
        match self {
            CheckConfig::Http(check) => check.run(endpoints).await,
        }
    }
}
