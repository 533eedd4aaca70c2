//! The built-in router as a traffic mover: it listens on each component's public address
//! and sends every request to the serving version (or splits by weight for a canary), and
//! it counts what it forwards, so it is a signal source too.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize};

use super::{Routes, Traffic, TrafficError};
use crate::clock::SharedClock;
use crate::config::Flaw;
use crate::router::Router;
use crate::signals::{Second, SignalError, SignalSource};

/// Settings of the built-in router.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Where each component is served: a port (on 127.0.0.1) or `ADDRESS:PORT`.
    pub listen: BTreeMap<String, ListenAddress>,
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
}

/// The router once it runs, shared with its signal source.
type Running = Arc<Mutex<Option<Arc<Router>>>>;

pub struct RouterTraffic {
    app: String,
    config: RouterConfig,
    clock: SharedClock,
    router: Running,
}

impl RouterTraffic {
    pub fn new(app: &str, config: RouterConfig, clock: SharedClock) -> Self {
        Self {
            app: app.to_string(),
            config,
            clock,
            router: Running::default(),
        }
    }

    fn router(&self) -> Option<Arc<Router>> {
        self.router.lock().expect("lock").clone()
    }
}

#[async_trait::async_trait]
impl Traffic for RouterTraffic {
    async fn start(&self) -> Result<(), TrafficError> {
        if self.router().is_some() {
            return Ok(());
        }
        let listen: BTreeMap<String, SocketAddr> = self
            .config
            .listen
            .iter()
            .map(|(component, address)| (component.clone(), address.0))
            .collect();
        let router = Router::start(&self.app, &listen).await?;
        *self.router.lock().expect("lock") = Some(router);
        Ok(())
    }

    async fn route(&self, routes: &Routes) -> Result<(), TrafficError> {
        let router = self.router().ok_or_else(|| TrafficError::Failed {
            what: "routing".into(),
            why: "the router is not running".into(),
        })?;
        router.set_routes(routes);
        Ok(())
    }

    fn routed(&self) -> Vec<String> {
        self.router()
            .map(|router| router.routed_versions())
            .unwrap_or_default()
    }

    fn signals(&self) -> Option<Arc<dyn SignalSource>> {
        Some(Arc::new(RouterSignals {
            router: self.router.clone(),
            clock: self.clock.clone(),
        }))
    }

    async fn stop(&self) {
        if let Some(router) = self.router.lock().expect("lock").take() {
            router.shutdown();
        }
    }
}

/// The router's counts, labelled with the second they were taken in.
struct RouterSignals {
    router: Running,
    clock: SharedClock,
}

#[async_trait::async_trait]
impl SignalSource for RouterSignals {
    async fn take(&self) -> Result<Vec<Second>, SignalError> {
        let Some(router) = self.router.lock().expect("lock").clone() else {
            return Ok(Vec::new());
        };
        Ok(vec![Second {
            t: self.clock.now_ms().div_euclid(1000),
            counts: router.take_counts(),
        }])
    }
}
