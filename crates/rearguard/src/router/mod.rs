//! The built-in router: a reverse proxy on each component's public address that sends
//! traffic to the serving version (blue-green) or splits it by weight (canary), and counts,
//! per version and per second, requests, errors (5xx and failed exchanges) and latency. A
//! route switch is one pointer swap: it applies from the next request. It runs as its own
//! process (`rearguard router`, driven over `control`), so it keeps serving while the guard
//! restarts, and keeps the last hour of counts for the guard to take when it is back.

pub mod control;
mod proxy;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use rearguard_judge::{BUCKETS, Counts, LatencyHistogram};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backends::Instances;
use crate::clock::SharedClock;
use crate::signals::Reading;
use crate::traffic::{Routes, TrafficError};

/// Seconds of counts kept for a guard to take (an hour without a guard loses the oldest).
const KEPT_SECONDS: usize = 3600;

/// Response header naming the version that answered.
pub const VERSION_HEADER: &str = "x-rearguard-version";

/// Outcome counters of one version, lock-free on the request path. The request count is
/// the sum of the buckets.
#[derive(Default)]
struct VersionCounters {
    errors: AtomicU64,
    /// Requests per latency bucket (not cumulative).
    buckets: [AtomicU64; BUCKETS],
}

impl VersionCounters {
    fn record(&self, failed: bool, latency_ms: f64) {
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = rearguard_judge::BUCKET_BOUNDS_MS
            .iter()
            .position(|&b| latency_ms <= b)
            .unwrap_or(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Reads and resets the counters.
    fn take(&self) -> Counts {
        let mut cumulative = [0u64; BUCKETS];
        let mut running = 0;
        for (slot, bucket) in cumulative.iter_mut().zip(&self.buckets) {
            running += bucket.swap(0, Ordering::Relaxed);
            *slot = running;
        }
        Counts {
            requests: running,
            errors: self.errors.swap(0, Ordering::Relaxed).min(running),
            latency: LatencyHistogram { cumulative },
        }
    }
}

struct Target {
    version: String,
    /// `version` as the response header value, made once per switch, not per request.
    version_header: hyper::header::HeaderValue,
    address: SocketAddr,
    counters: Arc<VersionCounters>,
}

/// The routing table of one component; replaced whole on a switch.
struct Table {
    primary: Arc<Target>,
    canary: Option<(Arc<Target>, f64)>,
    /// Requests routed so far, for an even weighted split.
    sequence: AtomicU64,
}

impl Table {
    fn pick(&self) -> &Arc<Target> {
        match &self.canary {
            // Request n goes to the canary when floor(n * w) steps up: exactly a share w,
            // evenly spread, no randomness needed.
            Some((canary, weight)) => {
                let n = self.sequence.fetch_add(1, Ordering::Relaxed) as f64;
                if ((n + 1.0) * weight).floor() > (n * weight).floor() {
                    canary
                } else {
                    &self.primary
                }
            }
            None => &self.primary,
        }
    }
}

type Shared<T> = Arc<RwLock<Option<Arc<T>>>>;

struct ComponentRoute {
    table: Shared<Table>,
}

/// The router of one app.
pub struct Router {
    app: String,
    addresses: BTreeMap<String, SocketAddr>,
    components: BTreeMap<String, ComponentRoute>,
    counters: RwLock<BTreeMap<String, Arc<VersionCounters>>>,
    /// Completed seconds not taken yet, oldest first.
    seconds: Mutex<VecDeque<Reading>>,
    stop: CancellationToken,
}

impl Router {
    /// Listens on each component's public address (until a route is set, requests get
    /// 503) and counts per second of `clock`.
    pub async fn start(
        app: &str,
        addresses: &BTreeMap<String, SocketAddr>,
        clock: SharedClock,
    ) -> Result<Arc<Self>, TrafficError> {
        let stop = CancellationToken::new();
        let mut components = BTreeMap::new();
        for (component, &address) in addresses {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|e| TrafficError::Listen {
                    component: format!("{app}/{component}"),
                    address,
                    why: e.to_string(),
                })?;
            let table: Shared<Table> = Arc::new(RwLock::new(None));
            tokio::spawn(proxy::serve(listener, table.clone(), stop.clone()));
            components.insert(component.clone(), ComponentRoute { table });
        }
        let router = Arc::new(Self {
            app: app.to_string(),
            addresses: addresses.clone(),
            components,
            counters: RwLock::new(BTreeMap::new()),
            seconds: Mutex::new(VecDeque::new()),
            stop,
        });
        tokio::spawn(sample_every_second(Arc::downgrade(&router), clock));
        Ok(router)
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    pub fn addresses(&self) -> &BTreeMap<String, SocketAddr> {
        &self.addresses
    }

    /// The completed seconds since the last call, oldest first.
    pub fn take_seconds(&self) -> Vec<Reading> {
        self.seconds.lock().expect("lock").drain(..).collect()
    }

    /// Closes the second ending at `t`: what each version served in it (versions taking
    /// traffic are in it even without a request).
    fn close_second(&self, t: i64) {
        let routed = self.routed_versions();
        let counts: BTreeMap<String, Counts> = self
            .counters
            .read()
            .expect("lock")
            .iter()
            .map(|(version, c)| (version.clone(), c.take()))
            .filter(|(version, c)| c.requests > 0 || routed.contains(version))
            .collect();
        let mut seconds = self.seconds.lock().expect("lock");
        seconds.push_back(Reading { t, counts });
        while seconds.len() > KEPT_SECONDS {
            seconds.pop_front();
        }
    }

    fn counters_for(&self, version: &str) -> Arc<VersionCounters> {
        if let Some(counters) = self.counters.read().expect("lock").get(version) {
            return counters.clone();
        }
        self.counters
            .write()
            .expect("lock")
            .entry(version.to_string())
            .or_default()
            .clone()
    }

    /// Switches every component to `routes`, atomically per component.
    pub fn set_routes(&self, routes: &Routes) {
        for (component, route) in &self.components {
            let target = |instances: &Instances| {
                let address = *instances.endpoints.get(component)?;
                // Versions are validated names, always a valid header value.
                let version_header = instances.version.parse().ok()?;
                Some(Arc::new(Target {
                    version: instances.version.clone(),
                    version_header,
                    address,
                    counters: self.counters_for(&instances.version),
                }))
            };
            let Some(primary) = target(&routes.primary) else {
                continue;
            };
            let canary = routes
                .canary
                .as_ref()
                .and_then(|(instances, weight)| target(instances).map(|t| (t, *weight)));
            let table = Table {
                primary,
                canary,
                sequence: AtomicU64::new(0),
            };
            *route.table.write().expect("lock") = Some(Arc::new(table));
        }
        tracing::info!(
            app = %self.app,
            primary = %routes.primary.version,
            canary = routes.canary.as_ref().map(|(i, w)| format!("{}@{:.0}%", i.version, w * 100.0)),
            "traffic switched"
        );
    }

    /// The versions traffic is routed to now (the primary and any canary).
    pub fn routed_versions(&self) -> Vec<String> {
        let mut versions = Vec::new();
        for route in self.components.values() {
            if let Some(table) = route.table.read().expect("lock").as_ref() {
                let canary = table.canary.as_ref().map(|(target, _)| target);
                for target in std::iter::once(&table.primary).chain(canary) {
                    if !versions.contains(&target.version) {
                        versions.push(target.version.clone());
                    }
                }
            }
        }
        versions
    }

    /// The version now taking the main share of traffic, if any.
    pub fn primary_version(&self) -> Option<String> {
        self.components.values().find_map(|route| {
            route
                .table
                .read()
                .expect("lock")
                .as_ref()
                .map(|t| t.primary.version.clone())
        })
    }

    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// Closes a second at every second boundary of `clock`, while the router lives.
async fn sample_every_second(router: Weak<Router>, clock: SharedClock) {
    loop {
        let now = clock.now_ms();
        let next = (now.div_euclid(1000) + 1) * 1000;
        tokio::time::sleep(Duration::from_millis((next - now) as u64)).await;
        let Some(router) = router.upgrade() else {
            return;
        };
        if router.stop.is_cancelled() {
            return;
        }
        router.close_second(next / 1000);
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
