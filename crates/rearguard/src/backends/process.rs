//! Process backend: each component of a version runs as a local process started from the
//! component's command template, on a free port of 127.0.0.1. Processes get their own
//! process group, are stopped with SIGTERM then SIGKILL after a grace period, and are
//! remembered in pid files so a guard restarted after a crash stops what it left behind.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rearguard_judge::Span;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use super::{Backend, BackendError, Instances};

/// A worker (no port, no readiness probe) is ready once its process has stayed up this long.
const WORKER_SETTLE: Duration = Duration::from_secs(1);
use crate::checks::http::get_status;
use crate::config::{AppConfig, Flaw};
use crate::names;

/// Settings of the process backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// How long a new instance has to become ready.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: Span,
    /// After SIGTERM, how long an instance has to exit before SIGKILL.
    #[serde(default = "default_stop_grace")]
    pub stop_grace: Span,
    /// How long the replaced version keeps running after a deploy, for an instant
    /// switch-back.
    #[serde(default = "default_keep_warm")]
    pub keep_previous_warm: Span,
}

fn default_ready_timeout() -> Span {
    Span::from_secs(30)
}

fn default_stop_grace() -> Span {
    Span::from_secs(10)
}

fn default_keep_warm() -> Span {
    Span::from_secs(300)
}

impl ProcessConfig {
    /// Problems, with keys below the app.
    pub fn problems(&self, app: &AppConfig) -> Vec<Flaw> {
        let mut problems = Vec::new();
        for (name, component) in &app.components {
            if component.command.is_empty() {
                problems.push(Flaw::at(
                    &["components", name],
                    format!("component {name} needs a `command` for the process backend"),
                ));
            }
            for (key, args) in [
                ("command", &component.command),
                ("ready_command", &component.ready_command),
            ] {
                if let Some(unknown) = args.iter().find_map(|arg| unknown_placeholder(arg)) {
                    problems.push(Flaw::at(
                        &["components", name, key],
                        format!(
                            "unknown placeholder {{{unknown}}} in {key}; use {{port}}, {{version}}, {{component}} or {{app}}"
                        ),
                    ));
                }
            }
        }
        if self.ready_timeout.as_millis() == 0 {
            problems.push(Flaw::at(
                &["backend", "ready_timeout"],
                "ready_timeout must be above 0s",
            ));
        }
        problems
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

/// Where instances run and where the backend keeps their pid files and logs.
#[derive(Clone, Debug)]
pub struct InstanceDirs {
    /// Working directory of the commands (the config file's directory).
    pub work_dir: PathBuf,
    /// Pid files and instance logs go under here.
    pub state_dir: PathBuf,
}

impl InstanceDirs {
    /// Commands run beside the config file; pid files and logs go in its data directory.
    pub fn of(config: &crate::config::Config, config_path: &Path) -> Self {
        Self {
            work_dir: config.resolve(config_path, Path::new(".")),
            state_dir: config.data_dir(config_path),
        }
    }
}

struct Instance {
    component: String,
    port: u16,
    child: Child,
    pid_file: PathBuf,
}

pub struct ProcessBackend {
    app: String,
    components: BTreeMap<String, crate::config::ComponentConfig>,
    config: ProcessConfig,
    dirs: InstanceDirs,
    running: Mutex<BTreeMap<String, Vec<Instance>>>,
}

impl ProcessBackend {
    pub fn new(
        app: &str,
        app_config: &AppConfig,
        config: ProcessConfig,
        dirs: InstanceDirs,
    ) -> Self {
        Self {
            app: app.to_string(),
            components: app_config.components.clone(),
            config,
            dirs,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn keep_previous_warm(&self) -> Duration {
        self.config.keep_previous_warm.std()
    }

    fn pid_dir(&self) -> PathBuf {
        self.dirs.state_dir.join("instances")
    }

    /// Stops instances a previous guard of this app left running (it was killed), found
    /// through their pid files; a pid is only signalled while it still runs the same
    /// program that was started (same start time), so a reused pid is left alone.
    fn stop_leftovers_of_dead_guards(&self) {
        let Ok(entries) = std::fs::read_dir(self.pid_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{}--", self.app)) && n.ends_with(".pid"));
            if !is_ours {
                continue;
            }
            if let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| live_pid(&text))
            {
                tracing::warn!(app = %self.app, pid, "stopping an instance left by a previous guard");
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = std::fs::remove_file(&path);
        }
    }

    fn render(&self, template: &str, version: &str, component: &str, port: u16) -> String {
        template
            .replace("{port}", &port.to_string())
            .replace("{version}", version)
            .replace("{component}", component)
            .replace("{app}", &self.app)
    }

    async fn start_component(&self, version: &str, name: &str) -> Result<Instance, BackendError> {
        let component = &self.components[name];
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
            .current_dir(&self.dirs.work_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run {:?}: {e}", args[0])))?;
        let pid = child.id().unwrap_or_default();
        let pid_file = self
            .pid_dir()
            .join(format!("{}--{name}--{version}.pid", self.app));
        let _ = std::fs::create_dir_all(self.pid_dir());
        let _ = std::fs::write(
            &pid_file,
            format!(
                "{pid} {}",
                crate::identity::start_time(pid as i32).unwrap_or_default()
            ),
        );
        tracing::info!(app = %self.app, component = name, version, pid, port, "instance started");
        Ok(Instance {
            component: name.to_string(),
            port,
            child,
            pid_file,
        })
    }

    /// Waits until the instance is ready, by the first of: its `ready_path` answers 2xx;
    /// its `ready_command` exits 0; its port accepts connections (a component taking
    /// traffic); its process is still up after `WORKER_SETTLE` (a worker, with no port).
    async fn wait_ready(&self, version: &str, instance: &mut Instance) -> Result<(), BackendError> {
        let component = &self.components[&instance.component];
        let timeout = self.config.ready_timeout;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, instance.port));
        let not_ready = |why: String| BackendError::NotReady {
            component: instance.component.clone(),
            version: version.to_string(),
            within: timeout,
            why,
        };
        let started = tokio::time::Instant::now();
        let deadline = started + timeout.std();
        let settle = WORKER_SETTLE.min(timeout.std());
        let mut last = "no answer yet".to_string();
        loop {
            if let Ok(Some(status)) = instance.child.try_wait() {
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
            } else if component.public_port.is_some() {
                tokio::net::TcpStream::connect(address).await.is_ok()
            } else {
                last = "its process exited before it settled".into();
                started.elapsed() >= settle
            };
            if ready {
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
            .current_dir(&self.dirs.work_dir)
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

    /// Where an instance's stdout and stderr go.
    fn log_path(&self, version: &str, component: &str) -> PathBuf {
        self.dirs
            .state_dir
            .join("logs")
            .join(format!("{}--{component}--{version}.log", self.app))
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
            if matches!(instance.child.try_wait(), Ok(None)) {
                alive.push(instance);
            } else {
                let _ = std::fs::remove_file(&instance.pid_file);
            }
        }
        alive
    }

    async fn stop_instances(&self, instances: Vec<Instance>) {
        let grace = self.config.stop_grace.std();
        let stops = instances.into_iter().map(|mut instance| async move {
            if let Some(pid) = instance.child.id() {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
                if tokio::time::timeout(grace, instance.child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(pid, "instance ignored SIGTERM; sending SIGKILL");
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    let _ = instance.child.wait().await;
                }
            }
            let _ = std::fs::remove_file(&instance.pid_file);
        });
        futures_util::future::join_all(stops).await;
    }
}

impl Backend for ProcessBackend {
    fn recover(&self) {
        self.stop_leftovers_of_dead_guards();
    }

    fn check_available(&self, version: &str) -> Result<(), BackendError> {
        names::check_version(version).map_err(|why| BackendError::Unavailable {
            component: "*".into(),
            version: version.into(),
            why,
        })?;
        for (name, component) in &self.components {
            let program = self.render(&component.command[0], version, name, 0);
            if !program_exists(&program, &self.dirs.work_dir) {
                return Err(BackendError::Unavailable {
                    component: name.clone(),
                    version: version.into(),
                    why: format!("{program} not found"),
                });
            }
        }
        Ok(())
    }

    async fn start(&self, version: &str) -> Result<Instances, BackendError> {
        self.check_available(version)?;
        if let Some(instances) = self.running(version) {
            return Ok(instances);
        }
        // Keep the instances still alive; start the components that have none (all of them
        // for a version not running, the dead ones of a version whose process died).
        let mut alive = self.take_alive(version);
        let missing: Vec<String> = self
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
            endpoints: endpoints(&alive),
        };
        self.running
            .lock()
            .expect("lock")
            .insert(version.to_string(), alive);
        Ok(instances)
    }

    async fn stop(&self, version: &str) {
        let instances = self.running.lock().expect("lock").remove(version);
        if let Some(instances) = instances {
            tracing::info!(app = %self.app, version, "stopping version");
            self.stop_instances(instances).await;
        }
    }

    fn running(&self, version: &str) -> Option<Instances> {
        let mut running = self.running.lock().expect("lock");
        let instances = running.get_mut(version)?;
        let all_alive = instances.len() == self.components.len()
            && instances
                .iter_mut()
                .all(|i| matches!(i.child.try_wait(), Ok(None)));
        all_alive.then(|| Instances {
            version: version.to_string(),
            endpoints: endpoints(instances),
        })
    }

    fn exited(&self, version: &str) -> Vec<String> {
        let mut running = self.running.lock().expect("lock");
        let Some(instances) = running.get_mut(version) else {
            return Vec::new();
        };
        instances
            .iter_mut()
            .filter_map(|i| match i.child.try_wait() {
                Ok(Some(status)) => Some(format!(
                    "{} exited ({status}); see {}",
                    i.component,
                    self.log_path(version, &i.component).display()
                )),
                _ => None,
            })
            .collect()
    }

    fn capture_state(&self) -> serde_json::Value {
        let running = self.running.lock().expect("lock");
        let versions: BTreeMap<&String, Vec<serde_json::Value>> = running
            .iter()
            .map(|(version, instances)| {
                let list = instances
                    .iter()
                    .map(|i| serde_json::json!({"component": i.component, "port": i.port, "pid": i.child.id()}))
                    .collect();
                (version, list)
            })
            .collect();
        serde_json::json!({"backend": "process", "app": self.app, "running": versions})
    }

    async fn stop_all(&self) {
        let all: Vec<Instance> = std::mem::take(&mut *self.running.lock().expect("lock"))
            .into_values()
            .flatten()
            .collect();
        self.stop_instances(all).await;
    }
}

fn endpoints(instances: &[Instance]) -> BTreeMap<String, SocketAddr> {
    instances
        .iter()
        .map(|i| {
            (
                i.component.clone(),
                SocketAddr::from((Ipv4Addr::LOCALHOST, i.port)),
            )
        })
        .collect()
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

/// The pid in a pid file ("PID START_TIME"), if that process still runs with the same start
/// time.
fn live_pid(text: &str) -> Option<i32> {
    let mut parts = text.split_whitespace();
    let pid: i32 = parts.next()?.parse().ok()?;
    let started: u64 = parts.next()?.parse().ok()?;
    (pid > 0 && crate::identity::start_time(pid) == Some(started)).then_some(pid)
}
