//! TCP check: a component of the release accepts a connection.

use rearguard_judge::Span;
use serde::{Deserialize, Serialize};

use super::{Check, Health, Subject, component_problem, default_failures, default_timeout};
use crate::config::Flaw;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    pub name: String,
    /// Component to connect to (default: the first that has a public port).
    #[serde(default)]
    pub component: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    #[serde(default = "default_failures")]
    pub failures: u32,
}

#[async_trait::async_trait]
impl Check for TcpCheck {
    common_check_methods!(component);

    fn problems(&self, listening: &[String]) -> Vec<Flaw> {
        component_problem(&self.name, self.component.as_ref(), listening)
            .into_iter()
            .collect()
    }

    async fn look(&self, subject: &Subject<'_>) -> (Health, String) {
        let address = match super::endpoint(self.component.as_deref(), subject) {
            Ok(address) => address,
            Err(why) => return (Health::Fail, why),
        };
        match tokio::net::TcpStream::connect(address).await {
            Ok(_) => (Health::Pass, format!("{address} accepts connections")),
            Err(e) => (Health::Fail, format!("cannot connect to {address}: {e}")),
        }
    }
}
