//! HAProxy as the traffic mover: a running HAProxy, driven through its runtime API on a unix
//! socket. Each routed component is an HAProxy backend with server slots declared in its
//! config (for example `server s1 127.0.0.1:1 disabled`); rearguard points slots at the
//! versions' instances (`set server ... addr ... port`), sets their weights (all on the
//! serving version, or a canary's share) and states, and reads each switch back with
//! `show servers state`. With `log` set, HAProxy's per-request log lines (`option httplog`,
//! sent to that UDP address) are the judge's signals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearguard_judge::Counts;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Routes, Traffic, TrafficError};
use crate::clock::SharedClock;
use crate::config::Flaw;
use crate::signals::{Ask, Reading, SignalError, SignalSource};

/// The runtime API answers within this long.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Weights are shares of this (HAProxy takes 0 to 256).
const FULL_WEIGHT: f64 = 100.0;

/// Settings of the HAProxy traffic mover.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// HAProxy's runtime API socket (`stats socket PATH level admin`).
    pub socket: PathBuf,
    /// Each routed component: its HAProxy backend and the server slots rearguard fills.
    pub backends: BTreeMap<String, HaproxyBackend>,
    /// Where HAProxy sends its log lines (`log ADDRESS:PORT local0` with `option httplog`):
    /// rearguard listens there and counts every request per version. Without it, HAProxy
    /// gives the judge no signals.
    #[serde(default)]
    pub log: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyBackend {
    /// The HAProxy backend's name.
    pub backend: String,
    /// Its server slots (at least two: the serving version and the next one).
    pub servers: Vec<String>,
}

impl HaproxyConfig {
    pub fn problems(&self, listening: &[String]) -> Vec<Flaw> {
        let mut problems = Vec::new();
        if self.backends.is_empty() {
            problems.push(Flaw::at(
                &["traffic", "backends"],
                "name at least one component's HAProxy backend",
            ));
        }
        for (component, backend) in &self.backends {
            let at = |key: &str, message: String| {
                Flaw::at(&["traffic", "backends", component, key], message)
            };
            if !listening.contains(component) {
                problems.push(Flaw::at(
                    &["traffic", "backends", component],
                    format!("component {component} does not listen"),
                ));
            }
            if backend.servers.len() < 2 {
                problems.push(at(
                    "servers",
                    "give at least two server slots: the serving version's and the next one's"
                        .into(),
                ));
            }
            // Names reach the runtime API: a closed alphabet, no command can be smuggled in.
            for name in std::iter::once(&backend.backend).chain(&backend.servers) {
                if let Err(e) = crate::names::check_name(name) {
                    problems.push(at("backend", format!("HAProxy name {e}")));
                }
            }
        }
        problems
    }
}

/// One slot as `show servers state` reports it.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    server: String,
    address: Option<SocketAddr>,
    weight: u32,
    serving: bool,
}

/// Which version each (backend, server) slot carries, shared with the log's signal source.
type Slots = Arc<Mutex<BTreeMap<(String, String), String>>>;

pub struct HaproxyTraffic {
    config: HaproxyConfig,
    clock: SharedClock,
    slots: Slots,
    routes: Mutex<Option<Routes>>,
    /// The log's counts once `start` listens (the signal source looks them up then).
    log: Arc<Mutex<Option<Arc<LogCounts>>>>,
}

impl HaproxyTraffic {
    pub fn new(config: HaproxyConfig, clock: SharedClock) -> Self {
        Self {
            config,
            clock,
            slots: Slots::default(),
            routes: Mutex::new(None),
            log: Arc::default(),
        }
    }

    /// Runs one runtime API command (a connection each) and returns its answer.
    async fn command(&self, command: &str) -> Result<String, TrafficError> {
        let failed = |why: String| TrafficError::Failed {
            what: format!("HAProxy's {command:?}"),
            why,
        };
        let exchange = async {
            let mut stream = tokio::net::UnixStream::connect(&self.config.socket).await?;
            stream.write_all(format!("{command}\n").as_bytes()).await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(ANSWER_WITHIN, exchange)
            .await
            .map_err(|_| failed(format!("no answer within {ANSWER_WITHIN:?}")))?
            .map_err(|e| failed(format!("{e} ({})", self.config.socket.display())))?;
        let trimmed = answer.trim();
        let refused = [
            "Unknown",
            "No such",
            "Require",
            "Permission denied",
            "invalid",
        ];
        if refused.iter().any(|word| trimmed.contains(word)) {
            return Err(failed(trimmed.to_string()));
        }
        Ok(answer)
    }

    /// The slots of `backend` as HAProxy has them now.
    async fn read_slots(&self, backend: &str) -> Result<Vec<Slot>, TrafficError> {
        let answer = self
            .command(&format!("show servers state {backend}"))
            .await?;
        Ok(parse_servers_state(&answer))
    }

    /// Points the slots of one component's backend at `targets` (version, address,
    /// weight), keeping a version in the slot it has; the other slots get no traffic.
    async fn route_backend(
        &self,
        backend: &HaproxyBackend,
        targets: &[(String, SocketAddr, u32)],
    ) -> Result<(), TrafficError> {
        let current = self.read_slots(&backend.backend).await?;
        let mut plan: BTreeMap<String, &(String, SocketAddr, u32)> = BTreeMap::new();
        for target in targets {
            let kept = current
                .iter()
                .find(|s| s.address == Some(target.1) && backend.servers.contains(&s.server))
                .map(|s| s.server.clone());
            let slot = kept.or_else(|| {
                backend
                    .servers
                    .iter()
                    .find(|server| {
                        !plan.contains_key(*server)
                            && !targets.iter().any(|t| {
                                current
                                    .iter()
                                    .any(|s| &s.server == *server && s.address == Some(t.1))
                            })
                    })
                    .cloned()
            });
            let Some(slot) = slot else {
                return Err(TrafficError::Failed {
                    what: format!("routing {}", backend.backend),
                    why: "no free server slot: add one to `servers`".into(),
                });
            };
            plan.insert(slot, target);
        }
        let name = |server: &str| format!("{}/{server}", backend.backend);
        // The new slots take traffic first, then the others stop: no moment without one.
        for (server, (_, address, weight)) in &plan {
            let slot = name(server);
            self.command(&format!(
                "set server {slot} addr {} port {}",
                address.ip(),
                address.port()
            ))
            .await?;
            self.command(&format!("set server {slot} weight {weight}"))
                .await?;
            self.command(&format!("set server {slot} state ready"))
                .await?;
        }
        for server in backend.servers.iter().filter(|s| !plan.contains_key(*s)) {
            let slot = name(server);
            self.command(&format!("set server {slot} weight 0")).await?;
            self.command(&format!("set server {slot} state maint"))
                .await?;
        }
        // Read back: each switch is verified, not assumed.
        let now = self.read_slots(&backend.backend).await?;
        for (server, (version, address, weight)) in &plan {
            let ok = now.iter().any(|s| {
                &s.server == server
                    && s.address == Some(*address)
                    && s.weight == *weight
                    && (s.serving || *weight == 0)
            });
            if !ok {
                return Err(TrafficError::Failed {
                    what: format!("routing {} to {version}", backend.backend),
                    why: format!("HAProxy reports {now:?} after the switch"),
                });
            }
        }
        let mut slots = self.slots.lock().expect("lock");
        slots.retain(|(b, _), _| b != &backend.backend);
        for (server, (version, _, _)) in plan {
            slots.insert((backend.backend.clone(), server), version.clone());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Traffic for HaproxyTraffic {
    async fn start(&self) -> Result<(), TrafficError> {
        for backend in self.config.backends.values() {
            self.read_slots(&backend.backend).await?;
        }
        let mut log = self.log.lock().expect("lock");
        if let (Some(address), None) = (self.config.log, log.as_ref()) {
            let socket = std::net::UdpSocket::bind(address).map_err(|e| TrafficError::Listen {
                component: "HAProxy's log".into(),
                address,
                why: e.to_string(),
            })?;
            *log = Some(LogCounts::start(
                socket,
                self.slots.clone(),
                self.clock.clone(),
            )?);
        }
        Ok(())
    }

    async fn route(&self, routes: &Routes) -> Result<(), TrafficError> {
        for (component, backend) in &self.config.backends {
            let mut targets = Vec::new();
            let primary_weight = match &routes.canary {
                Some((_, share)) => ((1.0 - share) * FULL_WEIGHT).round() as u32,
                None => FULL_WEIGHT as u32,
            };
            if let Some(address) = routes.primary.endpoints.get(component) {
                targets.push((routes.primary.version.clone(), *address, primary_weight));
            }
            if let Some((canary, share)) = &routes.canary
                && let Some(address) = canary.endpoints.get(component)
            {
                targets.push((
                    canary.version.clone(),
                    *address,
                    ((share * FULL_WEIGHT).round() as u32).max(1),
                ));
            }
            self.route_backend(backend, &targets).await?;
        }
        *self.routes.lock().expect("lock") = Some(routes.clone());
        Ok(())
    }

    fn routed(&self) -> Vec<String> {
        let routes = self.routes.lock().expect("lock");
        routes.as_ref().map_or_else(Vec::new, Routes::versions)
    }

    fn signals(&self) -> Option<Arc<dyn SignalSource>> {
        self.config.log.map(|_| {
            Arc::new(LogSignals {
                counts: self.log.clone(),
                clock: self.clock.clone(),
            }) as Arc<dyn SignalSource>
        })
    }

    /// HAProxy keeps running: it is the user's, not rearguard's.
    async fn stop(&self) {}
}

/// Parses `show servers state` (the format version line, a `#` header, then one line per
/// server: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight
/// ... srv_port at field 18).
fn parse_servers_state(answer: &str) -> Vec<Slot> {
    answer
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 19 {
                return None;
            }
            let op_state: u32 = fields[5].parse().ok()?;
            let admin_state: u32 = fields[6].parse().ok()?;
            let address = format!("{}:{}", fields[4], fields[18]).parse().ok();
            // Forced, inherited, resolver or health-check maintenance, or draining: no new
            // traffic. (Maintenance set by `disabled` in the config is lifted by `ready`.)
            const NO_TRAFFIC: u32 = 0x01 | 0x02 | 0x08 | 0x10 | 0x20 | 0x40;
            Some(Slot {
                server: fields[3].to_string(),
                address,
                weight: fields[7].parse().ok()?,
                serving: op_state == 2 && admin_state & NO_TRAFFIC == 0,
            })
        })
        .collect()
}

/// Requests counted from HAProxy's log lines, per second (of arrival) and version.
struct LogCounts {
    seconds: Mutex<BTreeMap<i64, BTreeMap<String, Counts>>>,
    /// The last second handed out.
    closed: Mutex<Option<i64>>,
}

impl LogCounts {
    fn start(
        socket: std::net::UdpSocket,
        slots: Slots,
        clock: SharedClock,
    ) -> Result<Arc<Self>, TrafficError> {
        let failed = |e: std::io::Error| TrafficError::Failed {
            what: "listening for HAProxy's log".into(),
            why: e.to_string(),
        };
        socket.set_nonblocking(true).map_err(failed)?;
        let socket = tokio::net::UdpSocket::from_std(socket).map_err(failed)?;
        let counts = Arc::new(Self {
            seconds: Mutex::default(),
            closed: Mutex::default(),
        });
        let weak = Arc::downgrade(&counts);
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok(length) = socket.recv(&mut buffer).await else {
                    continue;
                };
                let Some(counts) = weak.upgrade() else {
                    return;
                };
                let line = String::from_utf8_lossy(&buffer[..length]);
                let Some(request) = parse_log_line(&line) else {
                    continue;
                };
                let version = slots
                    .lock()
                    .expect("lock")
                    .get(&(request.backend, request.server))
                    .cloned();
                if let Some(version) = version {
                    let t = clock.now_ms().div_euclid(1000) + 1;
                    let mut seconds = counts.seconds.lock().expect("lock");
                    let count = seconds.entry(t).or_default().entry(version).or_default();
                    count.requests += 1;
                    count.errors += u64::from(request.failed);
                    count.latency.record(request.latency_ms);
                }
            }
        });
        Ok(counts)
    }

    /// Every second completed by `now` (epoch seconds) since the last call, empty ones too.
    fn take(&self, now: i64) -> Vec<Reading> {
        let mut seconds = self.seconds.lock().expect("lock");
        let mut closed = self.closed.lock().expect("lock");
        let first = closed.map_or_else(
            || seconds.keys().next().copied().unwrap_or(now).min(now),
            |c| c + 1,
        );
        let taken: Vec<Reading> = (first..=now)
            .map(|t| Reading {
                t,
                counts: seconds.remove(&t).unwrap_or_default(),
            })
            .collect();
        if let Some(last) = taken.last() {
            *closed = Some(last.t);
        }
        taken
    }
}

/// The counts of HAProxy's log, as a signal source.
struct LogSignals {
    counts: Arc<Mutex<Option<Arc<LogCounts>>>>,
    clock: SharedClock,
}

#[async_trait::async_trait]
impl SignalSource for LogSignals {
    async fn take(&self, _ask: &Ask<'_>) -> Result<Vec<Reading>, SignalError> {
        let counts = self.counts.lock().expect("lock").clone();
        // A second is complete once the clock has passed it (its label is its end).
        let now = self.clock.now_ms().div_euclid(1000);
        Ok(counts.map(|c| c.take(now)).unwrap_or_default())
    }
}

/// One request as an `option httplog` line tells it.
#[derive(Debug, PartialEq)]
struct LoggedRequest {
    backend: String,
    server: String,
    failed: bool,
    latency_ms: f64,
}

/// Reads a log line in HAProxy's HTTP format (syslog-wrapped or not): the
/// `backend/server` field, the timers `TR/Tw/Tc/Tr/Ta` after it, and the status code. A
/// request that never reached a server (`<NOSRV>`, or no connection: Tc = -1) is not the
/// release's doing and is not counted, as with the built-in router.
fn parse_log_line(line: &str) -> Option<LoggedRequest> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let timers = |token: &str| -> Option<Vec<i64>> {
        let parts: Vec<i64> = token
            .split('/')
            .map(|t| t.trim_start_matches('+').parse().ok())
            .collect::<Option<_>>()?;
        (parts.len() == 5).then_some(parts)
    };
    let at = (0..tokens.len().saturating_sub(2))
        .find(|&i| tokens[i].contains('/') && timers(tokens[i + 1]).is_some())?;
    let (backend, server) = tokens[at].split_once('/')?;
    let [_, wait, connect, response, total] = timers(tokens[at + 1])?[..] else {
        return None;
    };
    if server.starts_with('<') || connect < 0 {
        return None;
    }
    let status: i64 = tokens[at + 2].parse().ok()?;
    // As the router measures: from sending the request to the response's headers.
    let latency_ms = if wait >= 0 && response >= 0 {
        (wait + connect + response) as f64
    } else {
        total.max(0) as f64
    };
    Some(LoggedRequest {
        backend: backend.to_string(),
        server: server.to_string(),
        failed: status >= 500 || response < 0,
        latency_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn httplog_lines_are_read_and_requests_that_reached_no_server_are_not() {
        let line = r#"<134>Dec  2 03:02:11 haproxy[20767]: 127.0.0.1:56428 [02/Dec/2026:03:02:08.126] shop shop_web/s1 0/0/1/17/18 500 217 - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1""#;
        assert_eq!(
            parse_log_line(line),
            Some(LoggedRequest {
                backend: "shop_web".into(),
                server: "s1".into(),
                failed: true,
                latency_ms: 18.0,
            })
        );
        let ok = line.replace(" 500 ", " 200 ");
        assert!(!parse_log_line(&ok).unwrap().failed);
        let refused = line.replace("0/0/1/17/18", "0/0/-1/-1/3004");
        assert_eq!(parse_log_line(&refused), None, "never reached the server");
        let no_server = line.replace("shop_web/s1", "shop_web/<NOSRV>");
        assert_eq!(parse_log_line(&no_server), None);
        assert_eq!(parse_log_line("haproxy started"), None);
    }

    #[test]
    fn servers_state_is_read() {
        let answer = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord\n3 shop_web 1 s1 127.0.0.1 2 4 90 1 0 1 0 0 8 0 0 0 - 8099 - 0 0 - - 0\n3 shop_web 2 s2 127.0.0.1 0 5 1 1 1 1 0 0 8 0 0 0 - 1 - 0 0 - - 0\n";
        let slots = parse_servers_state(answer);
        assert_eq!(
            slots[0],
            Slot {
                server: "s1".into(),
                address: Some("127.0.0.1:8099".parse().unwrap()),
                weight: 90,
                serving: true,
            }
        );
        assert!(!slots[1].serving, "in maintenance");
    }

    #[test]
    fn every_completed_second_is_handed_out_once_empty_ones_too() {
        let counts = LogCounts {
            seconds: Mutex::default(),
            closed: Mutex::default(),
        };
        counts
            .seconds
            .lock()
            .unwrap()
            .entry(10)
            .or_default()
            .insert("v1".into(), Counts::default());
        let taken: Vec<i64> = counts.take(12).iter().map(|s| s.t).collect();
        assert_eq!(taken, [10, 11, 12]);
        assert_eq!(counts.take(12), Vec::new());
        assert_eq!(counts.take(13).len(), 1);
    }
}
