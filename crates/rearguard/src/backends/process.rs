//! Process backend: each component of a version runs as a local process started from the
//! component's command template; a component whose command takes `{port}` listens on a free
//! port of 127.0.0.1. Processes get their own process group and a clean environment, are
//! stopped with SIGTERM then SIGKILL after a grace period, and are remembered in pid files,
//! so a guard restarted after a crash adopts what still runs instead of restarting it.

use crate::clock::Stopwatch;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use rearguard_judge::Span;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use super::{Backend, BackendError, Capture, Instances, Workdirs};
use crate::checks::http::get_status;
use crate::config::Flaw;
use crate::{identity, names, telemetry};

/// A worker (no port, no readiness probe) is ready once its process has stayed up this long.
const WORKER_SETTLE: Duration = Duration::from_secs(1);
/// Lines of each component's log kept in an incident.
const CAPTURED_LINES: usize = 100;

/// Settings of the process backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// The app's parts, by name; each runs at the same version.
    pub components: BTreeMap<String, ProcessComponent>,
    /// How long a new instance has to become ready.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: Span,
    /// After SIGTERM, how long an instance has to exit before SIGKILL.
    #[serde(default = "default_stop_grace")]
    pub stop_grace: Span,
    /// How long the replaced version keeps running after a deploy, for an instant
    /// switch-back.
    #[serde(default = "super::default_keep_warm")]
    pub keep_previous_warm: Span,
}

/// One component: how an instance of it runs and when it is ready.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessComponent {
    /// The command running one instance, as a list (no shell). Placeholders: `{port}` (a
    /// free port chosen for the instance: the component listens there), `{version}`,
    /// `{component}`, `{app}`.
    pub command: Vec<String>,
    /// The instance's environment, beside PATH, PORT and REARGUARD_APP/COMPONENT/VERSION
    /// (the guard's own environment is not passed on); values may use `${NAME}`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// HTTP path polled until it answers 2xx before an instance takes traffic.
    #[serde(default)]
    pub ready_path: Option<String>,
    /// Or a command (a list, same placeholders) run until it exits 0. Without either, a
    /// component that listens is ready when its port accepts connections, and one that
    /// does not (a worker) when its process has stayed up for a second.
    #[serde(default)]
    pub ready_command: Vec<String>,
}

impl ProcessComponent {
    /// Whether it listens on the `{port}` its command is given.
    fn listens(&self) -> bool {
        self.command.iter().any(|arg| arg.contains("{port}"))
    }
}

fn default_ready_timeout() -> Span {
    Span::from_secs(30)
}

fn default_stop_grace() -> Span {
    Span::from_secs(10)
}

impl ProcessConfig {
    /// Problems, with keys below the app.
    pub fn problems(&self) -> Vec<Flaw> {
        let mut problems = Vec::new();
        if self.components.is_empty() {
            problems.push(Flaw::at(
                &["backend", "components"],
                "the process backend needs at least one component",
            ));
        }
        for (name, component) in &self.components {
            let at = |key: &str, message: String| {
                Flaw::at(&["backend", "components", name, key], message)
            };
            if let Err(e) = names::check_name(name) {
                problems.push(Flaw::at(
                    &["backend", "components", name],
                    format!("component name {e}"),
                ));
            }
            if component.command.is_empty() {
                problems.push(at("command", format!("component {name} needs a `command`")));
            }
            for (key, args) in [
                ("command", &component.command),
                ("ready_command", &component.ready_command),
            ] {
                if let Some(unknown) = args.iter().find_map(|arg| unknown_placeholder(arg)) {
                    problems.push(at(
                        key,
                        format!(
                            "unknown placeholder {{{unknown}}} in {key}; use {{port}}, {{version}}, {{component}} or {{app}}"
                        ),
                    ));
                }
            }
            if component.ready_path.is_some() && !component.ready_command.is_empty() {
                problems.push(at(
                    "ready_command",
                    "give ready_path or ready_command, not both".into(),
                ));
            }
            if let Some(path) = &component.ready_path {
                if !path.starts_with('/') {
                    problems.push(at(
                        "ready_path",
                        format!("ready_path must start with '/', got {path:?}"),
                    ));
                } else if !component.listens() {
                    problems.push(at(
                        "ready_path",
                        "ready_path needs a component that listens: put {port} in its command"
                            .into(),
                    ));
                }
            }
        }
        problems.extend(Flaw::if_zero(
            &["backend", "ready_timeout"],
            self.ready_timeout,
        ));
        problems
    }

    pub fn components(&self) -> Vec<String> {
        self.components.keys().cloned().collect()
    }

    pub fn listening_components(&self) -> Vec<String> {
        self.components
            .iter()
            .filter(|(_, c)| c.listens())
            .map(|(name, _)| name.clone())
            .collect()
    }
}

const PLACEHOLDERS: [&str; 4] = ["port", "version", "component", "app"];

fn unknown_placeholder(arg: &str) -> Option<String> {
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}')? + start;
        let name = &rest[start + 1..end];
        if !PLACEHOLDERS.contains(&name) {
            return Some(name.to_string());
        }
        rest = &rest[end + 1..];
    }
    None
}

/// The process of an instance: a child of this guard, or one a guard before it started.
enum Process {
    Child(Child),
    Adopted { pid: i32, started: u64 },
}

struct Instance {
    component: String,
    port: u16,
    process: Process,
    pid_file: PathBuf,
    /// Adopted instances are checked for readiness before they are relied on.
    verified: bool,
}

impl Instance {
    fn pid(&self) -> Option<i32> {
        match &self.process {
            Process::Child(child) => child.id().map(|pid| pid as i32),
            Process::Adopted { pid, .. } => Some(*pid),
        }
    }

    /// How it ended, if it has.
    fn exit(&mut self) -> Option<String> {
        match &mut self.process {
            Process::Child(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
            Process::Adopted { pid, started } => {
                // Reap it if it is our child after all (the guard re-executed itself).
                let _ = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
                (!identity::process_runs(*pid, *started))
                    .then(|| "status unknown: an earlier guard started it".into())
            }
        }
    }
}

pub struct ProcessBackend {
    app: String,
    config: ProcessConfig,
    dirs: Workdirs,
    running: Mutex<BTreeMap<String, Vec<Instance>>>,
    /// Each instance's CPU time when last asked (clock ticks), and since when: CPU use is
    /// the difference over the time between two asks.
    cpu_seen: Mutex<BTreeMap<i32, (u64, Stopwatch)>>,
}

/// An instance's CPU time so far (clock ticks) and resident memory (bytes), from procfs.
fn proc_usage(pid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) may hold spaces and parentheses: fields are counted after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    Some((ticks, pages * page_size))
}

impl ProcessBackend {
    pub fn new(app: &str, config: ProcessConfig, dirs: Workdirs) -> Self {
        Self {
            app: app.to_string(),
            config,
            dirs,
            running: Mutex::new(BTreeMap::new()),
            cpu_seen: Mutex::new(BTreeMap::new()),
        }
    }

    fn pid_dir(&self) -> PathBuf {
        self.dirs.state_dir.join("instances")
    }

    fn pid_file(&self, component: &str, version: &str) -> PathBuf {
        self.pid_dir()
            .join(format!("{}--{component}--{version}.pid", self.app))
    }

    /// Where an instance's stdout and stderr go.
    fn log_path(&self, version: &str, component: &str) -> PathBuf {
        self.dirs
            .state_dir
            .join("logs")
            .join(format!("{}--{component}--{version}.log", self.app))
    }

    fn render(&self, template: &str, version: &str, component: &str, port: u16) -> String {
        template
            .replace("{port}", &port.to_string())
            .replace("{version}", version)
            .replace("{component}", component)
            .replace("{app}", &self.app)
    }

    /// Instances a guard before this one started, found through their pid files: those
    /// still running the program that was started (same start time, so a reused pid is
    /// left alone) are adopted; the files of the others are removed.
    fn adopt_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(self.pid_dir()) else {
            return;
        };
        let prefix = format!("{}--", self.app);
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some((component, version)) = name
                .strip_prefix(&prefix)
                .and_then(|n| n.strip_suffix(".pid"))
                .and_then(|n| n.split_once("--"))
            else {
                continue;
            };
            let record = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| PidRecord::parse(&text))
                .filter(|r| identity::process_runs(r.pid, r.started));
            let known = self.config.components.contains_key(component)
                && !self.is_running(version, component);
            match record {
                Some(record) if known => {
                    tracing::info!(app = %self.app, component, version, pid = record.pid, "adopting an instance an earlier guard started");
                    self.running
                        .lock()
                        .expect("lock")
                        .entry(version.to_string())
                        .or_default()
                        .push(Instance {
                            component: component.to_string(),
                            port: record.port,
                            process: Process::Adopted {
                                pid: record.pid,
                                started: record.started,
                            },
                            pid_file: path.clone(),
                            verified: false,
                        });
                }
                Some(record) => {
                    tracing::warn!(app = %self.app, component, version, pid = record.pid, "stopping an instance of a component no longer configured");
                    let _ = killpg(Pid::from_raw(record.pid), Signal::SIGKILL);
                    let _ = std::fs::remove_file(&path);
                }
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    fn is_running(&self, version: &str, component: &str) -> bool {
        self.running
            .lock()
            .expect("lock")
            .get(version)
            .is_some_and(|instances| instances.iter().any(|i| i.component == component))
    }

    async fn start_component(&self, version: &str, name: &str) -> Result<Instance, BackendError> {
        let component = &self.config.components[name];
        let fail = |why: String| BackendError::StartFailed {
            component: name.to_string(),
            version: version.to_string(),
            why,
        };
        let port = free_port().map_err(|e| fail(format!("no free port: {e}")))?;
        let args: Vec<String> = component
            .command
            .iter()
            .map(|a| self.render(a, version, name, port))
            .collect();
        let log_path = self.log_path(version, name);
        let log = open_log(&log_path)
            .map_err(|e| fail(format!("cannot open {}: {e}", log_path.display())))?;
        let log_err = log.try_clone().map_err(|e| fail(e.to_string()))?;
        // A clean environment: the guard's own holds secrets (notification tokens, database
        // passwords) that are none of the app's business. PATH stays so programs are found;
        // anything else the app needs, the config names (`env:`, which may use ${NAME}).
        let child = Command::new(&args[0])
            .args(&args[1..])
            .env_clear()
            .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
            .envs(&component.env)
            .env("PORT", port.to_string())
            .env("REARGUARD_APP", &self.app)
            .env("REARGUARD_COMPONENT", name)
            .env("REARGUARD_VERSION", version)
            .current_dir(&self.dirs.config_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            // Instances outlive the guard: a guard that restarts adopts them.
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| fail(format!("cannot run {:?}: {e}", args[0])))?;
        let pid = child.id().unwrap_or_default() as i32;
        let record = PidRecord {
            pid,
            started: identity::start_time(pid).unwrap_or_default(),
            port,
        };
        let pid_file = self.pid_file(name, version);
        let _ = std::fs::create_dir_all(self.pid_dir());
        let _ = std::fs::write(&pid_file, record.to_string());
        tracing::info!(app = %self.app, component = name, version, pid, port, "instance started");
        Ok(Instance {
            component: name.to_string(),
            port,
            process: Process::Child(child),
            pid_file,
            verified: false,
        })
    }

    /// Waits until the instance is ready, by the first of: its `ready_path` answers 2xx;
    /// its `ready_command` exits 0; its port accepts connections (a component that
    /// listens); its process is still up after `WORKER_SETTLE` (a worker).
    async fn wait_ready(&self, version: &str, instance: &mut Instance) -> Result<(), BackendError> {
        let component = &self.config.components[&instance.component];
        let timeout = self.config.ready_timeout;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, instance.port));
        let name = instance.component.clone();
        let not_ready = |why: String| BackendError::NotReady {
            component: name.clone(),
            version: version.to_string(),
            within: timeout,
            why,
        };
        let started = tokio::time::Instant::now();
        let deadline = started + timeout.std();
        let settle = WORKER_SETTLE.min(timeout.std());
        let mut last = "no answer yet".to_string();
        loop {
            if let Some(status) = instance.exit() {
                return Err(not_ready(format!(
                    "it exited ({status}); see {}",
                    self.log_path(version, &instance.component).display()
                )));
            }
            let ready = if let Some(path) = &component.ready_path {
                match get_status(address, path, Duration::from_secs(1)).await {
                    Ok(status) if (200..300).contains(&status) => true,
                    Ok(status) => {
                        last = format!("{path} answered {status}");
                        false
                    }
                    Err(e) => {
                        last = e;
                        false
                    }
                }
            } else if !component.ready_command.is_empty() {
                let args: Vec<String> = component
                    .ready_command
                    .iter()
                    .map(|a| self.render(a, version, &instance.component, instance.port))
                    .collect();
                match self.run_ready_command(&args).await {
                    Ok(()) => true,
                    Err(why) => {
                        last = why;
                        false
                    }
                }
            } else if component.listens() {
                tokio::net::TcpStream::connect(address).await.is_ok()
            } else {
                last = "its process exited before it settled".into();
                // An adopted worker has been up for longer than that already.
                matches!(instance.process, Process::Adopted { .. }) || started.elapsed() >= settle
            };
            if ready {
                instance.verified = true;
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(not_ready(last));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a readiness command once (bounded), in the instance's clean environment.
    async fn run_ready_command(&self, args: &[String]) -> Result<(), String> {
        let run = Command::new(&args[0])
            .args(&args[1..])
            .env_clear()
            .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
            .current_dir(&self.dirs.config_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(Duration::from_secs(5), run).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("ready_command exited ({status})")),
            Ok(Err(e)) => Err(format!("cannot run ready_command {:?}: {e}", args[0])),
            Err(_) => Err("ready_command did not finish within 5s".into()),
        }
    }

    /// Takes the live instances of `version` out of the running set; the dead ones are
    /// forgotten (their pid files removed).
    fn take_alive(&self, version: &str) -> Vec<Instance> {
        let instances = self
            .running
            .lock()
            .expect("lock")
            .remove(version)
            .unwrap_or_default();
        let mut alive = Vec::new();
        for mut instance in instances {
            if instance.exit().is_none() {
                alive.push(instance);
            } else {
                let _ = std::fs::remove_file(&instance.pid_file);
            }
        }
        alive
    }

    async fn stop_instances(&self, instances: Vec<Instance>) {
        let grace = self.config.stop_grace.std();
        let stops = instances
            .into_iter()
            .map(|instance| stop_instance(instance, grace));
        futures_util::future::join_all(stops).await;
    }

    fn secrets(&self) -> Vec<&str> {
        self.config
            .components
            .values()
            .flat_map(|c| c.env.values())
            .map(String::as_str)
            .collect()
    }
}

/// SIGTERM to the instance's process group, SIGKILL after `grace`; then its pid file goes.
async fn stop_instance(mut instance: Instance, grace: Duration) {
    if let Some(pid) = instance.pid().filter(|_| instance.exit().is_none()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        let exited = loop {
            if let Process::Child(child) = &mut instance.process {
                break tokio::time::timeout_at(deadline, child.wait())
                    .await
                    .is_ok();
            }
            if instance.exit().is_some() {
                break true;
            }
            if tokio::time::Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !exited {
            tracing::warn!(pid, "instance ignored SIGTERM; sending SIGKILL");
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            if let Process::Child(child) = &mut instance.process {
                let _ = child.wait().await;
            }
        }
    }
    let _ = std::fs::remove_file(&instance.pid_file);
}

#[async_trait::async_trait]
impl Backend for ProcessBackend {
    async fn recover(&self) {
        self.adopt_leftovers();
    }

    async fn check_available(&self, version: &str) -> Result<(), BackendError> {
        let unavailable = |missing: Vec<String>| BackendError::Unavailable {
            version: version.into(),
            missing,
        };
        names::check_version(version).map_err(|why| unavailable(vec![why]))?;
        let missing: Vec<String> = self
            .config
            .components
            .iter()
            .filter_map(|(name, component)| {
                let program = self.render(&component.command[0], version, name, 0);
                (!program_exists(&program, &self.dirs.config_dir))
                    .then(|| format!("{name}: {program} not found"))
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(unavailable(missing))
        }
    }

    async fn deploy(&self, version: &str) -> Result<Instances, BackendError> {
        self.check_available(version).await?;
        // Keep the instances still alive (checking adopted ones once); start the components
        // that have none: all of them for a version not running, the dead ones of a
        // version whose process died.
        let mut alive = Vec::new();
        for mut instance in self.take_alive(version) {
            if instance.verified || self.wait_ready(version, &mut instance).await.is_ok() {
                alive.push(instance);
            } else {
                stop_instance(instance, self.config.stop_grace.std()).await;
            }
        }
        let missing: Vec<String> = self
            .config
            .components
            .keys()
            .filter(|name| !alive.iter().any(|i| &i.component == *name))
            .cloned()
            .collect();
        let mut started: Vec<Instance> = Vec::new();
        for name in &missing {
            let result = match self.start_component(version, name).await {
                Ok(mut instance) => {
                    let ready = self.wait_ready(version, &mut instance).await;
                    started.push(instance);
                    ready
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                self.stop_instances(started).await;
                self.running
                    .lock()
                    .expect("lock")
                    .insert(version.to_string(), alive);
                return Err(e);
            }
        }
        alive.extend(started);
        let instances = Instances {
            version: version.to_string(),
            endpoints: self.endpoints(&alive),
        };
        self.running
            .lock()
            .expect("lock")
            .insert(version.to_string(), alive);
        Ok(instances)
    }

    async fn usage(&self, version: &str) -> Option<rearguard_judge::Usage> {
        let pids: Vec<i32> = self
            .running
            .lock()
            .expect("lock")
            .get(version)?
            .iter()
            .filter_map(Instance::pid)
            .collect();
        let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let mut usage = rearguard_judge::Usage::default();
        let mut seen = self.cpu_seen.lock().expect("lock");
        for pid in pids {
            let Some((ticks, memory)) = proc_usage(pid) else {
                continue;
            };
            usage.memory_bytes += memory;
            if let Some((before, since)) = seen.get(&pid) {
                let seconds = since.elapsed().as_secs_f64();
                if seconds > 0.0 {
                    usage.cpu_cores +=
                        ticks.saturating_sub(*before) as f64 / ticks_per_second / seconds;
                }
            }
            seen.insert(pid, (ticks, Stopwatch::start()));
        }
        seen.retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
        Some(usage)
    }

    async fn running(&self, version: &str) -> Option<Instances> {
        let mut running = self.running.lock().expect("lock");
        let instances = running.get_mut(version)?;
        let all_alive = instances.len() == self.config.components.len()
            && instances.iter_mut().all(|i| i.exit().is_none());
        all_alive.then(|| Instances {
            version: version.to_string(),
            endpoints: self.endpoints(instances),
        })
    }

    async fn exited(&self, version: &str) -> Vec<String> {
        let mut running = self.running.lock().expect("lock");
        let Some(instances) = running.get_mut(version) else {
            return Vec::new();
        };
        instances
            .iter_mut()
            .filter_map(|i| {
                let status = i.exit()?;
                Some(format!(
                    "{} exited ({status}); see {}",
                    i.component,
                    self.log_path(version, &i.component).display()
                ))
            })
            .collect()
    }

    async fn stop(&self, version: &str) {
        let instances = self.running.lock().expect("lock").remove(version);
        if let Some(instances) = instances {
            tracing::info!(app = %self.app, version, "stopping version");
            self.stop_instances(instances).await;
        }
    }

    async fn stop_all(&self) {
        let all: Vec<Instance> = std::mem::take(&mut *self.running.lock().expect("lock"))
            .into_values()
            .flatten()
            .collect();
        self.stop_instances(all).await;
    }

    async fn capture(&self, version: &str) -> Capture {
        let state = {
            let mut running = self.running.lock().expect("lock");
            let versions: BTreeMap<&String, Vec<serde_json::Value>> = running
                .iter_mut()
                .map(|(version, instances)| {
                    let list = instances
                        .iter_mut()
                        .map(|i| {
                            let exit = i.exit();
                            serde_json::json!({
                                "component": i.component,
                                "port": i.port,
                                "pid": i.pid(),
                                "running": exit.is_none(),
                                "exit": exit,
                            })
                        })
                        .collect();
                    (version, list)
                })
                .collect();
            serde_json::json!({"backend": "process", "app": self.app, "running": versions})
        };
        let secrets = self.secrets();
        let logs = self
            .config
            .components
            .keys()
            .map(|component| {
                let text = last_lines(&self.log_path(version, component), CAPTURED_LINES);
                (
                    component.clone(),
                    telemetry::redact_secrets(&text, &secrets),
                )
            })
            .collect();
        Capture { state, logs }
    }

    fn keep_previous_warm(&self) -> Span {
        self.config.keep_previous_warm
    }
}

impl ProcessBackend {
    /// The endpoints of the instances that listen.
    fn endpoints(&self, instances: &[Instance]) -> BTreeMap<String, SocketAddr> {
        instances
            .iter()
            .filter(|i| self.config.components[&i.component].listens())
            .map(|i| {
                (
                    i.component.clone(),
                    SocketAddr::from((Ipv4Addr::LOCALHOST, i.port)),
                )
            })
            .collect()
    }
}

/// What a pid file holds: "PID START_TIME PORT".
struct PidRecord {
    pid: i32,
    started: u64,
    port: u16,
}

impl PidRecord {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split_whitespace();
        Some(Self {
            pid: parts.next()?.parse().ok().filter(|&pid| pid > 0)?,
            started: parts.next()?.parse().ok()?,
            port: parts.next()?.parse().ok()?,
        })
    }
}

impl std::fmt::Display for PidRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.pid, self.started, self.port)
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The last `count` lines of a file (empty when it cannot be read).
fn last_lines(path: &Path, count: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

fn program_exists(program: &str, work_dir: &Path) -> bool {
    if program.contains('/') {
        let path = Path::new(program);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            work_dir.join(path)
        };
        return path.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
