//! Docker Compose backend: a version is an image tag applied to every service of the app's
//! compose file, which names it `${REARGUARD_VERSION}` (`image: shop-web:${REARGUARD_VERSION}`).
//! Blue-green runs each version as its own compose project, its traffic ports published on
//! free loopback ports, and traffic moves at the router or HAProxy; in-place runs one
//! project and `up -d` with the new tag is the switch (a rollback is `up -d` with the
//! known-good tag: slower, the containers are recreated). rearguard labels every container
//! with its app and version (an override file it writes), and reads what runs from the
//! containers themselves (`docker inspect`), not from a file a person may have edited.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rearguard_judge::Span;
use serde::{Deserialize, Serialize};

use super::{Backend, BackendError, Capture, Instances, Workdirs};
use crate::checks::http::get_status;
use crate::config::Flaw;
use crate::{names, telemetry};

/// A `docker` or compose command gets this long at most (`up` waits for `ready_timeout`).
const COMMAND_WITHIN: Duration = Duration::from_secs(120);
/// Lines of each service's log kept in an incident.
const CAPTURED_LINES: usize = 100;

/// Settings of the Docker Compose backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeConfig {
    /// The app's compose file, relative to this config; its images name
    /// `${REARGUARD_VERSION}`.
    pub file: PathBuf,
    /// `bluegreen`: each version its own project, switched by the traffic mover;
    /// `inplace`: one project, `up -d` with the new tag (traffic: platform, or a router in
    /// front of its published port).
    #[serde(default)]
    pub strategy: Strategy,
    /// The compose project's name (default: the app's name); blue-green projects are
    /// `NAME-VERSION`.
    #[serde(default)]
    pub project: Option<String>,
    /// The services that take traffic: each one's container port and readiness.
    #[serde(default)]
    pub services: BTreeMap<String, ComposeService>,
    /// Variables the compose file may use beside REARGUARD_VERSION and REARGUARD_APP (the
    /// guard's own environment is not passed on); values may use `${NAME}`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long a version's containers have to become ready.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: Span,
    /// Blue-green: how long the replaced version's project keeps running.
    #[serde(default = "super::default_keep_warm")]
    pub keep_previous_warm: Span,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Bluegreen,
    Inplace,
}

/// A service that takes traffic.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeService {
    /// The container port it listens on.
    pub port: u16,
    /// Blue-green publishes it on a free loopback port; in-place, the compose file
    /// publishes it itself, at this host address.
    #[serde(default)]
    pub published: Option<SocketAddr>,
    /// HTTP path polled until it answers 2xx (else: its port accepts connections).
    #[serde(default)]
    pub ready_path: Option<String>,
}

fn default_ready_timeout() -> Span {
    Span::from_secs(60)
}

impl ComposeConfig {
    pub fn problems(&self) -> Vec<Flaw> {
        let mut problems = Vec::new();
        for (name, service) in &self.services {
            let at =
                |key: &str, message: String| Flaw::at(&["backend", "services", name, key], message);
            if let Err(e) = names::check_name(name) {
                problems.push(Flaw::at(
                    &["backend", "services", name],
                    format!("service name {e}"),
                ));
            }
            match (self.strategy, service.published) {
                (Strategy::Inplace, None) => problems.push(at(
                    "published",
                    "in-place: give the host address the compose file publishes it on (published: 127.0.0.1:8080)".into(),
                )),
                (Strategy::Bluegreen, Some(_)) => problems.push(at(
                    "published",
                    "blue-green publishes each version on a free port itself: remove `published` (and any host port for it in the compose file)".into(),
                )),
                _ => {}
            }
            if let Some(path) = service.ready_path.as_ref().filter(|p| !p.starts_with('/')) {
                problems.push(at(
                    "ready_path",
                    format!("ready_path must start with '/', got {path:?}"),
                ));
            }
        }
        if let Some(project) = &self.project
            && let Err(e) = names::check_name(project)
        {
            problems.push(Flaw::at(
                &["backend", "project"],
                format!("project name {e}"),
            ));
        }
        problems.extend(Flaw::if_zero(
            &["backend", "ready_timeout"],
            self.ready_timeout,
        ));
        problems
    }

    pub fn listening_components(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }
}

/// One container as `docker inspect` tells it.
#[derive(Debug, Clone)]
struct Container {
    name: String,
    service: String,
    version: String,
    project: String,
    running: bool,
    exit_code: i64,
    status: String,
    ports: BTreeMap<u16, SocketAddr>,
}

pub struct ComposeBackend {
    app: String,
    config: ComposeConfig,
    dirs: Workdirs,
}

impl ComposeBackend {
    pub fn new(app: &str, config: ComposeConfig, dirs: Workdirs) -> Self {
        Self {
            app: app.to_string(),
            config,
            dirs,
        }
    }

    /// The name every container of the app is labelled with (`rearguard.app`).
    fn project_base(&self) -> String {
        self.config
            .project
            .clone()
            .unwrap_or_else(|| self.app.clone())
    }

    /// The compose project of `version`.
    fn project(&self, version: &str) -> String {
        match self.config.strategy {
            Strategy::Inplace => self.project_base(),
            // Compose project names hold lowercase letters, digits, '-' and '_'.
            Strategy::Bluegreen => format!("{}-{version}", self.project_base())
                .to_lowercase()
                .replace('.', "-"),
        }
    }

    fn override_file(&self, version: &str) -> PathBuf {
        self.dirs
            .state_dir
            .join("compose")
            .join(format!("{}.override.yml", self.project(version)))
    }

    /// Runs `program args` (bounded) with a clean environment: PATH, DOCKER_HOST, the
    /// config's `env` and the version's variables. Its output, or why it failed.
    async fn run(
        &self,
        program: &[String],
        args: &[&str],
        version: Option<&str>,
        within: Duration,
    ) -> Result<String, BackendError> {
        let what = format!("{} {}", program.join(" "), args.join(" "));
        let failed = |why: String| BackendError::Platform {
            what: what.clone(),
            why,
        };
        let mut command = tokio::process::Command::new(&program[0]);
        command
            .args(&program[1..])
            .args(args)
            .env_clear()
            .envs(
                ["PATH", "DOCKER_HOST", "DOCKER_CONFIG", "HOME"]
                    .iter()
                    .filter_map(|name| std::env::var_os(name).map(|v| (*name, v))),
            )
            .envs(&self.config.env)
            .env("REARGUARD_APP", &self.app)
            .current_dir(&self.dirs.config_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(version) = version {
            command.env("REARGUARD_VERSION", version);
        }
        let output = tokio::time::timeout(within, command.output())
            .await
            .map_err(|_| failed(format!("no answer within {within:?}")))?
            .map_err(|e| failed(format!("cannot run {:?}: {e}", program[0])))?;
        let secrets: Vec<&str> = self.config.env.values().map(String::as_str).collect();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.trim().lines().last().unwrap_or("").to_string();
            return Err(failed(telemetry::redact_secrets(
                &format!("{} ({last})", output.status),
                &secrets,
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn docker(&self, args: &[&str]) -> Result<String, BackendError> {
        self.run(&["docker".to_string()], args, None, COMMAND_WITHIN)
            .await
    }

    /// `docker compose` where the plugin is installed, else `docker-compose`.
    async fn compose_program(&self) -> Vec<String> {
        let plugin = tokio::process::Command::new("docker")
            .args(["compose", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if plugin {
            vec!["docker".into(), "compose".into()]
        } else {
            vec!["docker-compose".into()]
        }
    }

    /// Runs compose on `version`'s project, with rearguard's override file.
    async fn compose(&self, version: &str, args: &[&str]) -> Result<String, BackendError> {
        let program = self.compose_program().await;
        let file = self.config.file.display().to_string();
        let overrides = self.override_file(version).display().to_string();
        let project = self.project(version);
        let mut all = vec!["-p", project.as_str(), "-f", file.as_str()];
        if std::path::Path::new(&overrides).exists() {
            all.extend(["-f", overrides.as_str()]);
        }
        all.extend(args);
        self.run(&program, &all, Some(version), COMMAND_WITHIN)
            .await
    }

    /// The compose file as compose reads it for `version`: its services and their images.
    async fn images(
        &self,
        version: &str,
    ) -> Result<BTreeMap<String, Option<String>>, BackendError> {
        let program = self.compose_program().await;
        let file = self.config.file.display().to_string();
        let text = self
            .run(
                &program,
                &["-f", file.as_str(), "config"],
                Some(version),
                COMMAND_WITHIN,
            )
            .await?;
        let document: serde_json::Value =
            serde_saphyr::from_str(&text).map_err(|e| BackendError::Platform {
                what: format!("reading {}", file),
                why: e.to_string(),
            })?;
        Ok(document["services"]
            .as_object()
            .map(|services| {
                services
                    .iter()
                    .map(|(name, service)| {
                        (name.clone(), service["image"].as_str().map(str::to_string))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Writes the override that labels `version`'s containers and, blue-green, publishes
    /// its traffic ports on free loopback ports.
    async fn write_override(&self, version: &str, services: &[String]) -> Result<(), BackendError> {
        let mut document = serde_json::Map::new();
        for service in services {
            let mut entry = serde_json::json!({
                "labels": {
                    "rearguard.app": self.project_base(),
                    "rearguard.version": version,
                }
            });
            if self.config.strategy == Strategy::Bluegreen
                && let Some(traffic) = self.config.services.get(service)
            {
                entry["ports"] = serde_json::json!([format!("127.0.0.1::{}", traffic.port)]);
            }
            document.insert(service.clone(), entry);
        }
        let mut text = serde_saphyr::to_string(&serde_json::json!({ "services": document }))
            .map_err(|e| BackendError::Platform {
                what: "writing the compose override".into(),
                why: e.to_string(),
            })?;
        // Compose 1 merges files of one format version only.
        if let Some(format) = self.file_format_version() {
            text = format!("version: {format:?}\n{text}");
        }
        let path = self.override_file(version);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("a directory"))?;
            std::fs::write(&path, text)
        };
        write().map_err(|e| BackendError::Platform {
            what: format!("writing {}", path.display()),
            why: e.to_string(),
        })
    }

    /// The compose file's own `version:` key, if it has one.
    fn file_format_version(&self) -> Option<String> {
        let path = self.dirs.config_dir.join(&self.config.file);
        let text = std::fs::read_to_string(path).ok()?;
        let document: serde_json::Value = serde_saphyr::from_str(&text).ok()?;
        match &document["version"] {
            serde_json::Value::String(v) => Some(v.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Every container of the app, as docker has them.
    async fn containers(&self) -> Result<Vec<Container>, BackendError> {
        let label = format!("label=rearguard.app={}", self.project_base());
        let ids = self.docker(&["ps", "-aq", "--filter", &label]).await?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["inspect"];
        args.extend(&ids);
        let text = self.docker(&args).await?;
        let inspected: Vec<serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| BackendError::Platform {
                what: "docker inspect".into(),
                why: e.to_string(),
            })?;
        Ok(inspected.iter().filter_map(container).collect())
    }

    async fn wait_ready(&self, version: &str) -> Result<Instances, BackendError> {
        let within = self.config.ready_timeout;
        let deadline = tokio::time::Instant::now() + within.std();
        let mut last;
        loop {
            match self.instances(version).await {
                Ok(instances) => {
                    let mut waiting = None;
                    for (service, traffic) in &self.config.services {
                        let address = instances.endpoints[service];
                        let ready = match &traffic.ready_path {
                            Some(path) => get_status(address, path, Duration::from_secs(1))
                                .await
                                .is_ok_and(|status| (200..300).contains(&status)),
                            None => tokio::net::TcpStream::connect(address).await.is_ok(),
                        };
                        if !ready {
                            waiting = Some(format!("{service} does not answer on {address}"));
                            break;
                        }
                    }
                    match waiting {
                        None => return Ok(instances),
                        Some(why) => last = why,
                    }
                }
                Err(why) => last = why,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::NotReady {
                    component: "*".into(),
                    version: version.into(),
                    within,
                    why: last,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Where `version`'s traffic services answer, if every container of it runs.
    async fn instances(&self, version: &str) -> Result<Instances, String> {
        let containers = self.containers().await.map_err(|e| e.to_string())?;
        let mine: Vec<&Container> = containers
            .iter()
            .filter(|c| c.version == version && c.project == self.project(version))
            .collect();
        if mine.is_empty() {
            return Err(format!("no container of {version}"));
        }
        if let Some(stopped) = mine.iter().find(|c| !c.running) {
            return Err(format!("{} is {}", stopped.name, stopped.status));
        }
        let mut endpoints = BTreeMap::new();
        for (service, traffic) in &self.config.services {
            let container = mine
                .iter()
                .find(|c| &c.service == service)
                .ok_or_else(|| format!("no container of service {service}"))?;
            let address = match (self.config.strategy, traffic.published) {
                (Strategy::Inplace, Some(published)) => published,
                _ => *container.ports.get(&traffic.port).ok_or_else(|| {
                    format!("{} publishes no port {}", container.name, traffic.port)
                })?,
            };
            endpoints.insert(service.clone(), address);
        }
        Ok(Instances {
            version: version.to_string(),
            endpoints,
        })
    }

    fn secrets(&self) -> Vec<&str> {
        self.config.env.values().map(String::as_str).collect()
    }
}

/// A container from `docker inspect`'s JSON, if it is labelled by rearguard.
fn container(value: &serde_json::Value) -> Option<Container> {
    let labels = &value["Config"]["Labels"];
    let state = &value["State"];
    let ports = value["NetworkSettings"]["Ports"]
        .as_object()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|(key, bindings)| {
                    let port: u16 = key.split('/').next()?.parse().ok()?;
                    let binding = bindings.as_array()?.first()?;
                    let ip = binding["HostIp"].as_str().filter(|ip| !ip.is_empty());
                    let address = format!(
                        "{}:{}",
                        match ip {
                            Some("0.0.0.0") | None => "127.0.0.1",
                            Some(ip) => ip,
                        },
                        binding["HostPort"].as_str()?
                    );
                    Some((port, address.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Container {
        name: value["Name"].as_str()?.trim_start_matches('/').to_string(),
        service: labels["com.docker.compose.service"].as_str()?.to_string(),
        project: labels["com.docker.compose.project"].as_str()?.to_string(),
        version: labels["rearguard.version"].as_str()?.to_string(),
        running: state["Running"].as_bool().unwrap_or(false),
        exit_code: state["ExitCode"].as_i64().unwrap_or(0),
        status: state["Status"].as_str().unwrap_or("unknown").to_string(),
        ports,
    })
}

#[async_trait::async_trait]
impl Backend for ComposeBackend {
    /// Docker keeps the state: what runs is read from it every time.
    async fn recover(&self) {}

    async fn check_available(&self, version: &str) -> Result<(), BackendError> {
        let unavailable = |missing: Vec<String>| BackendError::Unavailable {
            version: version.into(),
            missing,
        };
        names::check_version(version).map_err(|why| unavailable(vec![why]))?;
        let mut missing = Vec::new();
        for (service, image) in self.images(version).await? {
            match image {
                None => missing.push(format!(
                    "service {service} has no image (rearguard deploys images; it does not build them)"
                )),
                Some(image) => {
                    if self.docker(&["image", "inspect", &image]).await.is_err() {
                        missing.push(format!("image {image} of service {service}"));
                    }
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(unavailable(missing))
        }
    }

    async fn deploy(&self, version: &str) -> Result<Instances, BackendError> {
        if let Ok(instances) = self.instances(version).await {
            return self.wait_ready(&instances.version).await;
        }
        self.check_available(version).await?;
        let services: Vec<String> = self.images(version).await?.into_keys().collect();
        self.write_override(version, &services).await?;
        self.compose(version, &["up", "-d", "--no-build", "--remove-orphans"])
            .await?;
        self.wait_ready(version).await
    }

    async fn running(&self, version: &str) -> Option<Instances> {
        self.instances(version).await.ok()
    }

    /// From the engine's own figures (`docker stats`), for the version's running containers.
    async fn usage(&self, version: &str) -> Option<rearguard_judge::Usage> {
        let names: Vec<String> = self
            .containers()
            .await
            .ok()?
            .into_iter()
            .filter(|c| c.version == version && c.project == self.project(version) && c.running)
            .map(|c| c.name)
            .collect();
        if names.is_empty() {
            return None;
        }
        let mut args = vec![
            "stats",
            "--no-stream",
            "--format",
            "{{.CPUPerc}} {{.MemUsage}}",
        ];
        args.extend(names.iter().map(String::as_str));
        let text = self.docker(&args).await.ok()?;
        let mut usage = rearguard_judge::Usage::default();
        for line in text.lines() {
            // "12.34% 10.5MiB / 1.9GiB"
            let mut parts = line.split_whitespace();
            let cpu = parts.next()?.trim_end_matches('%').parse::<f64>().ok()?;
            let memory = rearguard_judge::Bytes::parse(parts.next()?).ok()?;
            usage.cpu_cores += cpu / 100.0;
            usage.memory_bytes += memory.0;
        }
        Some(usage)
    }

    async fn exited(&self, version: &str) -> Vec<String> {
        self.containers()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|c| c.version == version && c.project == self.project(version) && !c.running)
            .map(|c| format!("{} {} (exit code {})", c.name, c.status, c.exit_code))
            .collect()
    }

    async fn stop(&self, version: &str) {
        // In place, the project carries whichever version was deployed last: only take it
        // down when it is this one.
        let carries = self.containers().await.is_ok_and(|containers| {
            containers
                .iter()
                .any(|c| c.version == version && c.project == self.project(version))
        });
        if !carries {
            return;
        }
        tracing::info!(app = %self.app, version, "taking the version's containers down");
        if let Err(e) = self.compose(version, &["down", "--remove-orphans"]).await {
            tracing::warn!(app = %self.app, version, error = %e, "compose down failed");
        }
    }

    async fn stop_all(&self) {
        let mut versions: Vec<String> = self
            .containers()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.version)
            .collect();
        versions.dedup();
        for version in versions {
            self.stop(&version).await;
        }
    }

    async fn capture(&self, version: &str) -> Capture {
        let containers = self.containers().await.unwrap_or_default();
        let state = serde_json::json!({
            "backend": "compose",
            "containers": containers.iter().map(|c| serde_json::json!({
                "name": c.name,
                "service": c.service,
                "version": c.version,
                "state": c.status,
                "exit_code": c.exit_code,
            })).collect::<Vec<_>>(),
        });
        let secrets = self.secrets();
        let mut logs = BTreeMap::new();
        for container in containers.iter().filter(|c| c.version == version) {
            let tail = CAPTURED_LINES.to_string();
            // docker logs writes the container's stderr to its own.
            let text = tokio::process::Command::new("docker")
                .args(["logs", "--tail", &tail, &container.name])
                .stdin(Stdio::null())
                .output()
                .await
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
            logs.insert(
                container.service.clone(),
                telemetry::redact_secrets(&text, &secrets),
            );
        }
        Capture { state, logs }
    }

    fn keep_previous_warm(&self) -> Span {
        self.config.keep_previous_warm
    }
}
