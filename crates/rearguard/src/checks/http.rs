//! HTTP check: GET a path on one component of the release and judge the status code, an
//! optional text in the body, and the response time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rearguard_judge::Span;
use serde::{Deserialize, Serialize};

use super::{Check, CheckResult, Health};
use crate::clock::Stopwatch;
use crate::config::Flaw;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// Name shown in status, logs and incidents.
    pub name: String,
    /// Component to check (default: the first that has a public port).
    #[serde(default)]
    pub component: Option<String>,
    /// Path to GET.
    #[serde(default = "default_path")]
    pub path: String,
    /// Expected status code.
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// No answer within this long is a failure.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// An answer slower than this is a warning ("500ms").
    #[serde(default)]
    pub warn_above: Option<Span>,
    /// The old name of `warn_above`, which took milliseconds: refused with a hint, since a
    /// bare number now means seconds.
    #[serde(default, skip_serializing)]
    pub warn_above_ms: Option<serde::de::IgnoredAny>,
    /// Consecutive failures before the release is rolled back.
    #[serde(default = "default_failures")]
    pub failures: u32,
}

fn default_path() -> String {
    "/health".into()
}

fn default_status() -> u16 {
    200
}

fn default_timeout() -> Span {
    Span::from_secs(2)
}

fn default_failures() -> u32 {
    3
}

impl HttpCheck {
    /// Problems, with keys below the check.
    pub fn problems(&self, listening: &[String]) -> Vec<Flaw> {
        let mut problems = Vec::new();
        let name = &self.name;
        if let Some(component) = &self.component
            && !listening.contains(component)
        {
            problems.push(Flaw::at(
                &["component"],
                format!(
                    "check {name}: unknown component {component:?}, or one that does not listen (listening: {})",
                    listening.join(", ")
                ),
            ));
        }
        if !self.path.starts_with('/') {
            problems.push(Flaw::at(
                &["path"],
                format!("check {name}: path must start with '/'"),
            ));
        }
        if self.failures == 0 {
            problems.push(Flaw::at(
                &["failures"],
                format!("check {name}: failures must be at least 1"),
            ));
        }
        if self.timeout.as_millis() == 0 {
            problems.push(Flaw::at(
                &["timeout"],
                format!("check {name}: timeout must be above 0s"),
            ));
        }
        if self.warn_above_ms.is_some() {
            problems.push(Flaw::at(
                &["warn_above_ms"],
                format!(
                    "check {name}: warn_above_ms is now warn_above, a duration (warn_above: 500ms; a bare number is seconds)"
                ),
            ));
        }
        problems
    }
}

impl Check for HttpCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn failures_to_rollback(&self) -> u32 {
        self.failures
    }

    async fn run(&self, endpoints: &BTreeMap<String, SocketAddr>) -> CheckResult {
        let target = match &self.component {
            Some(component) => endpoints.get(component),
            None => endpoints.values().next(),
        };
        let result = |health, detail: String| CheckResult {
            check: self.name.clone(),
            health,
            detail,
        };
        let Some(&address) = target else {
            return result(Health::Fail, "the component is not running".into());
        };
        let watch = Stopwatch::start();
        let timeout = self.timeout.std();
        match get(address, &self.path, timeout).await {
            Err(e) => result(Health::Fail, e),
            Ok((status, _)) if status != self.expect_status => result(
                Health::Fail,
                format!(
                    "{} answered {status}, expected {}",
                    self.path, self.expect_status
                ),
            ),
            Ok((_, body))
                if self
                    .body_contains
                    .as_ref()
                    .is_some_and(|text| !body.contains(text.as_str())) =>
            {
                result(
                    Health::Fail,
                    format!("{} body lacks the expected text", self.path),
                )
            }
            Ok(_) => {
                let ms = watch.elapsed().as_millis() as u64;
                match self.warn_above {
                    Some(limit) if ms > limit.as_millis() => {
                        result(Health::Warn, format!("slow: {ms} ms > {limit}"))
                    }
                    _ => result(Health::Pass, format!("{} ms", ms)),
                }
            }
        }
    }
}

/// GETs `path` from `address`; the status code and body (first 64 KiB), or why not.
pub async fn get(
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{address}{path}")
        .parse()
        .map_err(|e| format!("bad path {path:?}: {e}"))?;
    let exchange = async {
        let response = client
            .get(uri)
            .await
            .map_err(|e| format!("GET {path} failed: {}", error_chain(&e)))?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "GET {path}: no answer within {}s",
                timeout.as_secs()
            ))
        })
}

/// The status code of a GET, for readiness polls.
pub async fn get_status(address: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    get(address, path, timeout).await.map(|(status, _)| status)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
