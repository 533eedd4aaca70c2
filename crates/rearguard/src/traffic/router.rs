//! The built-in router as a traffic mover. It runs as its own process (`rearguard router`),
//! which this file starts, or takes over when one already runs (a guard restarted): the
//! router keeps serving the last routes while no guard is there. It counts every request,
//! per second, so it is a signal source too.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::{Routes, Traffic, TrafficError};
use crate::backends::Workdirs;
use crate::config::Flaw;
use crate::router::control::{Client, PROTOCOL, Request};
use crate::signals::{Ask, Reading, SignalError, SignalSource};

/// A router must answer within this long after it is started.
const START_WITHIN: Duration = Duration::from_secs(10);

/// Settings of the built-in router.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Where each component is served: a port (on 127.0.0.1) or `ADDRESS:PORT`.
    pub listen: BTreeMap<String, ListenAddress>,
    /// Threads forwarding requests. One serves tens of thousands of requests a second
    /// (bench/router.sh) and leaves the other cores to the app; more spread a heavier load.
    #[serde(default = "one_thread")]
    pub threads: NonZeroUsize,
}

fn one_thread() -> NonZeroUsize {
    NonZeroUsize::MIN
}

/// A port on 127.0.0.1 (`8080`) or an address and port (`"0.0.0.0:8080"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ListenAddress(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum PortOrAddress {
            Port(u16),
            Text(String),
        }
        match PortOrAddress::deserialize(deserializer)? {
            PortOrAddress::Port(port) => Ok(Self(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))),
            PortOrAddress::Text(text) => match text.parse::<u16>() {
                Ok(port) => Ok(Self(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))),
                Err(_) => text.parse().map(Self).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "expected a port (8080) or ADDRESS:PORT (\"0.0.0.0:8080\"), got {text:?}"
                    ))
                }),
            },
        }
    }
}

impl RouterConfig {
    pub fn problems(&self, listening: &[String]) -> Vec<Flaw> {
        let mut problems = Vec::new();
        if self.listen.is_empty() {
            problems.push(Flaw::at(
                &["traffic", "listen"],
                "the router needs at least one component to serve (listen: {web: 8080})",
            ));
        }
        for component in self.listen.keys().filter(|c| !listening.contains(c)) {
            problems.push(Flaw::at(
                &["traffic", "listen", component],
                format!(
                    "component {component} does not listen (listening components: {})",
                    if listening.is_empty() {
                        "none".to_string()
                    } else {
                        listening.join(", ")
                    }
                ),
            ));
        }
        problems
    }

    fn addresses(&self) -> BTreeMap<String, SocketAddr> {
        self.listen
            .iter()
            .map(|(component, address)| (component.clone(), address.0))
            .collect()
    }
}

pub struct RouterTraffic {
    app: String,
    config: RouterConfig,
    dirs: Workdirs,
    client: Arc<Client>,
    /// The routes last set, given again to a router that restarted.
    routes: Mutex<Option<Routes>>,
}

impl RouterTraffic {
    pub fn new(app: &str, config: RouterConfig, dirs: Workdirs) -> Self {
        let socket = dirs.state_dir.join("routers").join(format!("{app}.sock"));
        Self {
            app: app.to_string(),
            config,
            dirs,
            client: Arc::new(Client::new(socket)),
            routes: Mutex::new(None),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dirs
            .state_dir
            .join("logs")
            .join(format!("router--{}.log", self.app))
    }

    /// Starts a router process and waits (bounded) until it answers.
    async fn spawn(&self) -> Result<(), TrafficError> {
        let failed = |why: String| TrafficError::Failed {
            what: format!("starting the router of {}", self.app),
            why,
        };
        let exe = crate::identity::this_program().map_err(|e| failed(e.to_string()))?;
        let log_path = self.log_path();
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| failed(format!("cannot open {}: {e}", log_path.display())))?;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("router")
            .arg("--app")
            .arg(&self.app)
            .arg("--control")
            .arg(self.client.path())
            .arg("--threads")
            .arg(self.config.threads.to_string());
        for (component, address) in self.config.addresses() {
            command
                .arg("--listen")
                .arg(format!("{component}={address}"));
        }
        // Its own process group and no secrets of the guard's: it outlives the guard.
        let mut child = command
            .env_clear()
            .envs(
                ["PATH", "RUST_LOG", "REARGUARD_LOG"]
                    .iter()
                    .filter_map(|name| std::env::var_os(name).map(|value| (*name, value))),
            )
            .current_dir(&self.dirs.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + START_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let why = log
                    .lines()
                    .rev()
                    .find(|line| line.starts_with("error:"))
                    .map(|line| line.trim_start_matches("error: ").to_string())
                    .unwrap_or_else(|| format!("it exited ({status}); see {}", log_path.display()));
                return Err(failed(why));
            }
            if self.client.hello().await.is_ok() {
                // Reaped while this guard lives; a guard started later finds it by its socket.
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                tracing::info!(app = %self.app, "router started");
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(failed(format!("it did not answer within {START_WITHIN:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send(&self, routes: &Routes) -> Result<(), TrafficError> {
        self.client
            .call(&Request::Route {
                routes: routes.clone(),
            })
            .await
            .map_err(|e| TrafficError::Failed {
                what: "routing".into(),
                why: e.to_string(),
            })?;
        Ok(())
    }

    /// Asks the router to stop and waits (bounded) until it is gone.
    async fn stop_router(&self) {
        let _ = self.client.call(&Request::Stop).await;
        let deadline = tokio::time::Instant::now() + START_WITHIN;
        while self.client.hello().await.is_ok() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait::async_trait]
impl Traffic for RouterTraffic {
    async fn start(&self) -> Result<(), TrafficError> {
        let cached = self.routes.lock().expect("lock").clone();
        match self.client.hello().await {
            Ok(hello)
                if hello.protocol == PROTOCOL
                    && hello.app == self.app
                    && hello.listen == self.config.addresses() =>
            {
                // A router started again (it died) has lost its routes: give them back.
                if let Some(routes) = cached.filter(|_| hello.routed.is_empty()) {
                    self.send(&routes).await?;
                }
                return Ok(());
            }
            Ok(hello) => {
                tracing::warn!(app = %self.app, listen = ?hello.listen, protocol = hello.protocol, "replacing a router that listens elsewhere or speaks another protocol");
                self.stop_router().await;
            }
            Err(_) => {}
        }
        self.spawn().await?;
        if let Some(routes) = cached {
            self.send(&routes).await?;
        }
        Ok(())
    }

    async fn route(&self, routes: &Routes) -> Result<(), TrafficError> {
        self.send(routes).await?;
        *self.routes.lock().expect("lock") = Some(routes.clone());
        Ok(())
    }

    fn routed(&self) -> Vec<String> {
        let routes = self.routes.lock().expect("lock");
        routes.as_ref().map_or_else(Vec::new, Routes::versions)
    }

    fn signals(&self) -> Option<Arc<dyn SignalSource>> {
        Some(Arc::new(RouterSignals {
            client: self.client.clone(),
        }))
    }

    async fn stop(&self) {
        self.stop_router().await;
        *self.routes.lock().expect("lock") = None;
    }
}

/// The router's per-second counts.
struct RouterSignals {
    client: Arc<Client>,
}

#[async_trait::async_trait]
impl SignalSource for RouterSignals {
    async fn take(&self, _ask: &Ask<'_>) -> Result<Vec<Reading>, SignalError> {
        self.client.take().await.map_err(|e| SignalError {
            source_name: "the router".into(),
            why: e.why,
        })
    }
}
