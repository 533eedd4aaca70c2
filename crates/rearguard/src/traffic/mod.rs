//! How requests move between running versions: one trait, one file per kind with its config
//! beside it, and the tagged enum below as the only list of kinds. The built-in router (its
//! own process, so traffic outlives a guard restart), HAProxy (its runtime API), or the
//! platform itself (a backend whose deploy is the switch).

pub mod haproxy;
pub mod platform;
pub mod router;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backends::{Instances, Workdirs};
use crate::clock::SharedClock;
use crate::config::Flaw;
use crate::signals::SignalSource;

/// Where traffic goes: the serving version, and optionally a canary with its share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routes {
    pub primary: Instances,
    pub canary: Option<(Instances, f64)>,
}

impl Routes {
    /// The versions taking traffic: the primary, then any canary.
    pub fn versions(&self) -> Vec<String> {
        std::iter::once(self.primary.version.clone())
            .chain(self.canary.iter().map(|(c, _)| c.version.clone()))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error(
        "cannot listen on {address} for {component}: {why} (is another process using the port?)"
    )]
    Listen {
        component: String,
        address: SocketAddr,
        why: String,
    },
    #[error("{what} failed: {why}")]
    Failed { what: String, why: String },
}

/// What every kind of traffic mover does.
#[async_trait::async_trait]
pub trait Traffic: Send + Sync {
    /// Starts moving traffic (the router listens) or takes over what already does. Called
    /// once the app's lease is ours.
    async fn start(&self) -> Result<(), TrafficError>;
    /// Sends traffic to `routes`, at once (a switch applies from the next request).
    async fn route(&self, routes: &Routes) -> Result<(), TrafficError>;
    /// The versions taking traffic now.
    fn routed(&self) -> Vec<String>;
    /// Its own per-version counts, when it sees every request.
    fn signals(&self) -> Option<Arc<dyn SignalSource>>;
    /// Stops moving traffic (the guard stops for good).
    async fn stop(&self);
}

/// The traffic kinds, chosen in the config by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrafficConfig {
    /// rearguard's own reverse proxy, on each component's public address.
    Router(router::RouterConfig),
    /// A running HAProxy, driven through its runtime API.
    Haproxy(haproxy::HaproxyConfig),
    /// The platform moves traffic itself: deploying a version is the switch.
    Platform,
}

impl TrafficConfig {
    pub fn build(&self, app: &str, dirs: Workdirs, clock: SharedClock) -> Box<dyn Traffic> {
        match self {
            TrafficConfig::Router(config) => {
                Box::new(router::RouterTraffic::new(app, config.clone(), dirs))
            }
            TrafficConfig::Haproxy(config) => {
                Box::new(haproxy::HaproxyTraffic::new(config.clone(), clock))
            }
            TrafficConfig::Platform => Box::new(platform::PlatformTraffic::default()),
        }
    }

    /// Problems, with keys below the app; `listening` are the backend's components that
    /// can take traffic.
    pub fn problems(&self, listening: &[String]) -> Vec<Flaw> {
        match self {
            TrafficConfig::Router(config) => config.problems(listening),
            TrafficConfig::Haproxy(config) => config.problems(listening),
            TrafficConfig::Platform => Vec::new(),
        }
    }

    /// The components traffic is moved for, in order.
    pub fn components(&self) -> Vec<String> {
        match self {
            TrafficConfig::Router(config) => config.listen.keys().cloned().collect(),
            TrafficConfig::Haproxy(config) => config.backends.keys().cloned().collect(),
            TrafficConfig::Platform => Vec::new(),
        }
    }

    /// The addresses it listens on, for a check that no two apps share one.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        match self {
            TrafficConfig::Router(config) => config
                .listen
                .iter()
                .map(|(component, address)| (component.clone(), address.0))
                .collect(),
            TrafficConfig::Haproxy(config) => config
                .log
                .map(|address| ("HAProxy's log".to_string(), address))
                .into_iter()
                .collect(),
            TrafficConfig::Platform => Vec::new(),
        }
    }
}
