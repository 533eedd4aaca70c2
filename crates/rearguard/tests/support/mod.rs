//! Test fixtures: a config around the bundled demo service, a guard process that is killed
//! when dropped, plain HTTP requests, and bounded waits.

#![allow(dead_code)]
// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

pub mod browser;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rearguard"))
}

/// A port free now, picked below the kernel's ephemeral range: a port-0 bind and every
/// outgoing connection (thousands, with tests in parallel) draw from that range, and one
/// took a port handed out by a port-0 bind before the demo could listen on it.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_from > LOWEST + 1_000 {
        for attempt in 0..200u32 {
            let random = RandomState::new().hash_one((std::process::id(), attempt));
            let port = LOWEST + (random % u64::from(ephemeral_from - LOWEST)) as u16;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory with a config for app `shop`: the demo service, failing 30 % of requests
/// when its version starts with `bad`, failing its health check when it starts with `sick`,
/// exiting 3 s after each start when it starts with `crashy`, and refusing to start when it
/// starts with `broken`.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

/// Builds an [`Env`]: the defaults suit fast tests (bake 6s, warm-up and transient 2s).
pub struct EnvBuilder {
    bake: String,
    mode: Option<(String, String)>,
    policy: Vec<(String, String)>,
    top_level: String,
    checks: Option<String>,
    component_env: Vec<(String, String)>,
    extra_components: String,
    traffic: Option<String>,
    signals: String,
    backend: Option<String>,
    place: Option<(tempfile::TempDir, u16)>,
}

impl EnvBuilder {
    pub fn bake(mut self, bake: &str) -> Self {
        self.bake = bake.into();
        self
    }

    /// Canary mode with this share of traffic for the new release.
    pub fn canary(mut self, weight: &str) -> Self {
        self.mode = Some(("canary".into(), weight.into()));
        self
    }

    /// Sets a policy key (replacing the default of warmup and transient).
    pub fn policy(mut self, key: &str, value: &str) -> Self {
        self.policy.retain(|(k, _)| k != key);
        self.policy.push((key.into(), value.into()));
        self
    }

    /// An `env:` entry of the component.
    pub fn component_env(mut self, key: &str, value: &str) -> Self {
        self.component_env.push((key.into(), value.into()));
        self
    }

    /// Another component, as YAML lines under the backend's `components:` (indented by 8).
    pub fn component(mut self, yaml: &str) -> Self {
        self.extra_components.push_str(yaml);
        self
    }

    /// The `traffic:` block's lines (indented by 6) in place of the built-in router's.
    pub fn traffic(mut self, yaml: &str) -> Self {
        self.traffic = Some(yaml.to_string());
        self
    }

    /// The `signals:` block (its lines indented by 4, the key included).
    pub fn signals(mut self, yaml: &str) -> Self {
        self.signals = yaml.to_string();
        self
    }

    /// The `backend:` block's lines (indented by 6) in place of the process backend's.
    pub fn backend(mut self, yaml: &str) -> Self {
        self.backend = Some(yaml.to_string());
        self
    }

    /// No health check (only the judge and restarts can roll back).
    pub fn without_checks(mut self) -> Self {
        self.checks = Some(String::new());
        self
    }

    /// The `checks:` block's list items (indented by 6) in place of the HTTP health check.
    pub fn checks(mut self, yaml: &str) -> Self {
        self.checks = Some(format!("    checks:\n{yaml}"));
        self
    }

    /// More top-level config (e.g. `notifications:`).
    pub fn top_level(mut self, text: &str) -> Self {
        self.top_level.push_str(text);
        self
    }

    /// Builds in `dir` (where other servers of the test already live), serving on `port`.
    pub fn in_dir(mut self, dir: tempfile::TempDir, port: u16) -> Self {
        self.place = Some((dir, port));
        self
    }

    pub fn build(self) -> Env {
        let (dir, port) = self
            .place
            .unwrap_or_else(|| (tempfile::tempdir().unwrap(), free_port()));
        let script = dir.path().join("run-shop.sh");
        // The service for a version: `broken*` exits at once, `bad*` fails 30 % of requests.
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n  broken*) echo 'cannot start' >&2; exit 1;;\n  bad*) exec {exe} demo-app --version \"$1\" --port \"$2\" --error-rate 0.3;;\n  crashy*) exec timeout 3 {exe} demo-app --version \"$1\" --port \"$2\";;\n  sick*) exec {exe} demo-app --version \"$1\" --port \"$2\" --health-status 503;;\n  busy*) exec {exe} demo-app --version \"$1\" --port \"$2\" --busy;;\n  *) exec {exe} demo-app --version \"$1\" --port \"$2\";;\nesac\n",
                exe = binary().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mode = self
            .mode
            .map(|(mode, weight)| format!("    mode: {mode}\n    canary_weight: {weight}\n"))
            .unwrap_or_default();
        let checks = self.checks.unwrap_or_else(|| {
            "    checks:\n      - kind: http\n        name: health\n        path: /health\n".into()
        });
        let env: String = if self.component_env.is_empty() {
            String::new()
        } else {
            std::iter::once("          env:\n".to_string())
                .chain(
                    self.component_env
                        .iter()
                        .map(|(key, value)| format!("            {key}: \"{value}\"\n")),
                )
                .collect()
        };
        let policy: String = self
            .policy
            .iter()
            .map(|(key, value)| format!("      {key}: {value}\n"))
            .collect();
        let config = format!(
            "apps:
  shop:
    bake: {bake}
{mode}    backend:
{backend}    traffic:
{traffic}{signals}{checks}    policy:
{policy}{top_level}",
            bake = self.bake,
            top_level = self.top_level,
            signals = self.signals,
            backend = self.backend.unwrap_or_else(|| format!(
                "      kind: process
      components:
        web:
          command: [\"./run-shop.sh\", \"{{version}}\", \"{{port}}\"]
          ready_path: /version
{env}{extra_components}      ready_timeout: 5s
      stop_grace: 2s
",
                extra_components = self.extra_components
            )),
            traffic = self.traffic.unwrap_or_else(|| format!(
                "      kind: router\n      listen:\n        web: {port}\n"
            )),
        );
        std::fs::write(dir.path().join("rearguard.yaml"), config).unwrap();
        Env { dir, port }
    }
}

impl Env {
    pub fn new() -> Self {
        Self::builder().build()
    }

    pub fn builder() -> EnvBuilder {
        EnvBuilder {
            bake: "6s".into(),
            mode: None,
            policy: vec![
                ("warmup".into(), "2s".into()),
                ("transient".into(), "2s".into()),
            ],
            top_level: String::new(),
            checks: None,
            component_env: Vec::new(),
            extra_components: String::new(),
            traffic: None,
            signals: String::new(),
            backend: None,
            place: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("rearguard.yaml")
    }

    /// Runs `rearguard ARGS --config <this config>` to completion (bounded).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    /// [`Env::run`] with more environment variables.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(binary());
        command
            .args(args)
            .envs(env.iter().copied())
            .arg("--config")
            .arg(self.config())
            .stdin(Stdio::null());
        run_bounded(command, Duration::from_secs(120))
    }

    pub fn guard(&self) -> Guard {
        self.guard_with_env(&[])
    }

    pub fn guard_with_env(&self, env: &[(&str, &str)]) -> Guard {
        let mut command = Command::new(binary());
        command
            .args(["guard", "--config"])
            .arg(self.config())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.path().join("guard.log")).unwrap(),
            ));
        let mut guard = Guard(command.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.run(&["status", "shop", "--json"]);
            if String::from_utf8_lossy(&out.stdout).contains("\"guarded\":true") {
                return guard;
            }
            let exited = guard.0.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.path().join("guard.log")).unwrap_or_default();
                panic!("the guard did not take the app (exit: {exited:?}); its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// GET / through the router: (status, version that answered).
    pub fn request(&self) -> Option<(u16, String)> {
        get(self.port, "/")
    }

    /// Requests through the router in the background (about 80 a second) until dropped.
    pub fn steady_traffic(&self) -> Traffic {
        let port = self.port;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tally: std::sync::Arc<std::sync::Mutex<(u64, u64)>> = Default::default();
        let (flag, counts) = (stop.clone(), tally.clone());
        let thread = std::thread::spawn(move || {
            // Bounded even if the handle is leaked: at most 10 minutes.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let ok =
                    matches!(get(port, "/"), Some((status, _)) if (200..300).contains(&status));
                let mut counts = counts.lock().unwrap();
                if ok {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
                drop(counts);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Traffic {
            tally,
            stop,
            thread: Some(thread),
        }
    }

    /// Sends `count` requests; returns how many each version answered and how many failed.
    pub fn traffic(&self, count: usize) -> (std::collections::BTreeMap<String, usize>, usize) {
        let mut by_version = std::collections::BTreeMap::new();
        let mut failed = 0;
        for _ in 0..count {
            match self.request() {
                Some((status, version)) => {
                    *by_version.entry(version).or_insert(0) += 1;
                    if status >= 500 {
                        failed += 1;
                    }
                }
                None => failed += 1,
            }
        }
        (by_version, failed)
    }

    pub fn versions_json(&self) -> serde_json::Value {
        let out = self.run(&["versions", "shop", "--json"]);
        assert!(
            out.status.success(),
            "versions failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn state_of(&self, version: &str) -> String {
        let versions = self.versions_json();
        versions["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == version)
            .map(|r| r["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    /// The app's event trail (`rearguard events shop --json`).
    pub fn events(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["events", "shop", "--json"]);
        assert!(out.status.success(), "events failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn rollback_log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path().join(".rearguard/rollback-metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Env {
    /// The pid of the app's router process, if one runs.
    pub fn router_pid(&self) -> Option<i32> {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
                let is_router = cmdline.split(|&b| b == 0).any(|arg| arg == b"router")
                    && cwd.starts_with(self.path());
                is_router.then_some(pid)
            })
    }

    /// The pid of the running instance of `version` (from its pid file).
    pub fn instance_pid(&self, version: &str) -> i32 {
        let pid_file = self
            .path()
            .join(format!(".rearguard/instances/shop--web--{version}.pid"));
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Env {
    /// Services a guard started live on when it is killed (by design: a restarted guard
    /// adopts them), and a test may end mid-deploy: every process still working in this
    /// directory is killed with it, so no test run leaves one behind.
    fn drop(&mut self) {
        let dir = self.dir.path();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cwd = std::fs::read_link(entry.path().join("cwd"));
            if cwd.is_ok_and(|cwd| cwd.starts_with(dir)) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Background traffic; stops when dropped. `tally` says how many requests got a 2xx and
/// how many did not (a refused connection counts as a failure).
pub struct Traffic {
    tally: std::sync::Arc<std::sync::Mutex<(u64, u64)>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// (answered 2xx, failed) so far.
    pub fn tally(&self) -> (u64, u64) {
        *self.tally.lock().unwrap()
    }

    /// Stops the traffic and asserts that no request failed (and that there were plenty).
    pub fn stop_all_answered(self) {
        let (answered, failed) = self.tally();
        drop(self);
        assert_eq!(failed, 0, "{answered} requests answered");
        assert!(answered > 50, "{answered}");
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `rearguard guard` process, killed (SIGKILL) and reaped when dropped.
pub struct Guard(pub Child);

impl Guard {
    pub fn kill_hard(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, as a service manager would, and wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the guard did not stop within 20s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// Runs `command` to completion, its output read as it comes (a pipe holds only 64 KiB: a
/// command that prints more would never finish otherwise); killed after `limit`.
pub fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output().unwrap());
    });
    match finished.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let out = finished.recv().unwrap();
            panic!(
                "command timed out after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Polls `condition` every 200 ms until it holds; fails the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1: (status, the version that answered).
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    // The router names the version in a header; behind another proxy, the demo app's body
    // ("hello from v1", "v1 failed") does.
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    let version = response
        .lines()
        .find_map(|l| l.strip_prefix("x-rearguard-version: "))
        .or_else(|| {
            body.trim()
                .strip_prefix("hello from ")
                .or_else(|| body.trim().strip_suffix(" failed"))
        })
        .unwrap_or("none")
        .trim()
        .to_string();
    Some((status, version))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Deploys `version` with --watch through the running guard and returns the exit code.
/// Kills `guard` with SIGKILL under steady traffic and starts another: no request may fail
/// meanwhile. Returns the new guard.
pub fn restart_guard_under_load(env: &Env, mut guard: Guard) -> Guard {
    let traffic = env.steady_traffic();
    std::thread::sleep(Duration::from_secs(1));
    guard.kill_hard();
    std::thread::sleep(Duration::from_millis(1500));
    let guard = env.guard();
    std::thread::sleep(Duration::from_secs(2));
    traffic.stop_all_answered();
    guard
}

pub fn deploy_watch(env: &Env, version: &str) -> i32 {
    let out = env.run(&["deploy", "shop", version, "--watch", "--json"]);
    assert!(
        stderr(&out).is_empty() || out.status.code().is_some(),
        "{}",
        stderr(&out)
    );
    out.status.code().unwrap()
}

/// A real HAProxy (Debian's) in front of the app: its frontend on the env's public port,
/// backend `shop_web` with empty slots `s1`..`s3`, its runtime API on a socket in the env's
/// directory and its per-request log sent to a UDP port. Killed when dropped.
pub struct Haproxy {
    child: Child,
    pub socket: PathBuf,
    pub log_port: u16,
}

impl Haproxy {
    pub fn start(dir: &Path, port: u16) -> Self {
        let socket = dir.join("haproxy.sock");
        let log_port = free_udp_port();
        let config = format!(
            "global
  stats socket {socket} mode 600 level admin
  log 127.0.0.1:{log_port} local0
defaults
  mode http
  log global
  option httplog
  option redispatch
  retries 3
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend shop
  bind 127.0.0.1:{port}
  default_backend shop_web
backend shop_web
  server s1 127.0.0.1:1 disabled
  server s2 127.0.0.1:1 disabled
  server s3 127.0.0.1:1 disabled
",
            socket = socket.display()
        );
        let config_path = dir.join("haproxy.cfg");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("haproxy.log")).unwrap(),
            ))
            .spawn()
            .expect("haproxy is installed (the test script installs it)");
        wait_until("HAProxy's runtime API", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        Self {
            child,
            socket,
            log_port,
        }
    }

    /// The `traffic:` block driving it.
    pub fn traffic(&self) -> String {
        format!(
            "      kind: haproxy
      socket: {}
      log: 127.0.0.1:{}
      backends:
        web:
          backend: shop_web
          servers: [s1, s2, s3]
",
            self.socket.display(),
            self.log_port
        )
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The demo app as compose images `rgtest-PID-N:v1`, `:v2` (fails 30 % of requests, as
/// examples/compose/docker-compose.yml says), `:v3`, built from this test build's binary
/// (no registry), with a compose project of its own. Every container, network and image it
/// made is removed when dropped.
pub struct ComposeApp {
    pub image: String,
    pub project: String,
}

impl ComposeApp {
    pub fn build() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("rgtest-{}-{n}", std::process::id());
        let context = tempfile::tempdir().unwrap();
        let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut rootfs = Command::new(repository.join("packaging/rootfs.sh"));
        rootfs.arg(binary()).arg(context.path());
        let out = run_bounded(rootfs, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let app = Self {
            image: name.clone(),
            project: name.replace('-', ""),
        };
        let mut build = Command::new("docker");
        build
            .args(["build", "-q", "-t", &format!("{name}:v1"), "-f"])
            .arg(repository.join("packaging/Containerfile"))
            .arg(context.path());
        let out = run_bounded(build, Duration::from_secs(180));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for tag in ["v2", "v3"] {
            let out = Command::new("docker")
                .args(["tag", &format!("{name}:v1"), &format!("{name}:{tag}")])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        app
    }

    /// Writes the example compose file into `dir` (in place: with its host port published
    /// at `published`).
    pub fn write_compose_file(&self, dir: &Path, published: Option<u16>) {
        let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut text =
            std::fs::read_to_string(repository.join("examples/compose/docker-compose.yml"))
                .unwrap();
        if let Some(port) = published {
            text.push_str(&format!("    ports: [\"127.0.0.1:{port}:8080\"]\n"));
        }
        std::fs::write(dir.join("docker-compose.yml"), text).unwrap();
    }

    /// The `backend:` block (blue-green, or in place behind `published`).
    pub fn backend(&self, published: Option<u16>) -> String {
        let (strategy, published) = match published {
            Some(port) => (
                "inplace",
                format!("          published: 127.0.0.1:{port}\n"),
            ),
            None => ("bluegreen", String::new()),
        };
        format!(
            "      kind: compose
      file: docker-compose.yml
      strategy: {strategy}
      project: {project}
      services:
        web:
          port: 8080
          ready_path: /health
{published}      env:
        DEMO_IMAGE: {image}
      keep_previous_warm: 10s
",
            project = self.project,
            image = self.image
        )
    }

    /// Names of the app's running containers.
    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "--format", "{{.Names}}", "--filter"])
            .arg(format!("label=rearguard.app={}", self.project))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for ComposeApp {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            Command::new("docker")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let label = format!("label=rearguard.app={}", self.project);
        for id in docker(&["ps", "-aq", "--filter", &label]).split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        for network in docker(&["network", "ls", "--format", "{{.Name}}"]).lines() {
            if network.starts_with(&self.project) {
                docker(&["network", "rm", network]);
            }
        }
        for tag in ["v1", "v2", "v3"] {
            docker(&["rmi", "-f", &format!("{}:{tag}", self.image)]);
        }
    }
}

/// Debian's `prometheus`, scraping every second the instances the process backend runs
/// for the env (found from their pid files, as service discovery would: the test writes
/// its `file_sd` targets, labelled `app: shop`). Killed when dropped.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    /// The user and password its web config asks for, if any.
    basic_auth: Option<(String, String)>,
    discovering: std::sync::Arc<std::sync::atomic::AtomicBool>,
    discovery: Option<std::thread::JoinHandle<()>>,
}

impl Prometheus {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// Asking every request for `user` and `password` (its web config holds their bcrypt
    /// hash, made by python3's crypt).
    pub fn start_with_basic_auth(dir: &Path, user: &str, password: &str) -> Self {
        let hash = Command::new("python3")
            .args(["-W", "ignore", "-c"])
            .arg("import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))")
            .arg(password)
            .output()
            .unwrap();
        let hash = String::from_utf8(hash.stdout).unwrap();
        assert!(hash.starts_with("$2"), "no bcrypt hash: {hash:?}");
        let web = dir.join("prometheus-web.yml");
        std::fs::write(
            &web,
            format!("basic_auth_users:\n  {user}: '{}'\n", hash.trim()),
        )
        .unwrap();
        let mut prometheus =
            Self::launch(dir, "", &[format!("--web.config.file={}", web.display())]);
        prometheus.basic_auth = Some((user.into(), password.into()));
        prometheus
    }

    /// With more top-level config (`rule_files:`, `alerting:`); rules are evaluated every
    /// second.
    pub fn start_with(dir: &Path, more: &str) -> Self {
        Self::launch(dir, more, &[])
    }

    fn launch(dir: &Path, more: &str, flags: &[String]) -> Self {
        let port = free_port();
        let targets = dir.join("targets.json");
        std::fs::write(&targets, "[]").unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n{more}\
             scrape_configs:\n  - job_name: shop\n    file_sd_configs:\n      - files: [{}]\n        refresh_interval: 1s\n",
            targets.display()
        );
        let child = start_server(
            dir,
            "prometheus",
            &config,
            &[
                format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
            .into_iter()
            .chain(flags.iter().cloned())
            .collect::<Vec<_>>(),
            port,
        );
        let discovering = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let discovery = {
            let discovering = discovering.clone();
            let instances = dir.join(".rearguard/instances");
            std::thread::spawn(move || {
                let mut written = String::new();
                while discovering.load(std::sync::atomic::Ordering::Relaxed) {
                    let json = Self::targets(&instances);
                    if json != written {
                        let temporary = targets.with_extension("tmp");
                        std::fs::write(&temporary, &json).unwrap();
                        std::fs::rename(&temporary, &targets).unwrap();
                        written = json;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        Self {
            child,
            port,
            basic_auth: None,
            discovering,
            discovery: Some(discovery),
        }
    }

    /// The `file_sd` targets: each instance's port, from its pid file (`pid started port`).
    fn targets(instances: &Path) -> String {
        let mut addresses: Vec<String> = std::fs::read_dir(instances)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let record = std::fs::read_to_string(entry.path()).ok()?;
                let port = record.split_whitespace().nth(2)?;
                Some(format!("\"127.0.0.1:{port}\""))
            })
            .collect();
        addresses.sort();
        format!(
            "[{{\"targets\": [{}], \"labels\": {{\"app\": \"shop\"}}}}]",
            addresses.join(", ")
        )
    }

    /// The `signals:` block reading from it, with `step`.
    pub fn signals(&self, step: &str) -> String {
        let auth = self
            .basic_auth
            .as_ref()
            .map_or(String::new(), |(user, password)| {
                format!(
                    "      auth:\n        basic: {{username: {user}, password: \"{password}\"}}\n"
                )
            });
        format!(
            "    signals:\n      kind: prometheus\n      url: http://127.0.0.1:{}\n      step: {step}\n{auth}",
            self.port
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.discovering
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(discovery) = self.discovery.take() {
            let _ = discovery.join();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Alertmanager, sending every alert at once (grouped for 1 s) to `webhook` with
/// `token` as its bearer token. Killed when dropped.
pub struct Alertmanager {
    child: Child,
    pub port: u16,
}

impl Alertmanager {
    pub fn start(dir: &Path, webhook: &str, token: &str) -> Self {
        let port = free_port();
        let config = format!(
            "route:\n  receiver: rearguard\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: rearguard\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: false\n\
             \x20       http_config:\n          authorization:\n            credentials: {token}\n"
        );
        let child = start_server(
            dir,
            "prometheus-alertmanager",
            &config,
            &[
                format!("--storage.path={}", dir.join("alertmanager").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".into(),
            ],
            port,
        );
        Self { child, port }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Debian's `program` with `config` (its file and log in `dir`) and waits until
/// `/-/ready` on `port` answers 200, as Prometheus and Alertmanager do once they serve.
fn start_server(dir: &Path, program: &str, config: &str, args: &[String], port: u16) -> Child {
    let config_path = dir.join(format!("{program}.yml"));
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(program)
        .arg(format!("--config.file={}", config_path.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join(format!("{program}.log"))).unwrap(),
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is installed (the test script installs it): {e}"));
    // 401: it serves, and asks for credentials.
    wait_until(&format!("{program} ready"), Duration::from_secs(30), || {
        get(port, "/-/ready").is_some_and(|(status, _)| status == 200 || status == 401)
    });
    child
}

/// A bad release (30 % errors) after a good one, with steady traffic: rolled back on the
/// judge's error-rate evidence alone, and the good one serves again.
pub fn bad_release_is_rolled_back_on_error_rate(env: &Env) {
    let _guard = env.guard();
    let traffic = env.steady_traffic();
    assert_eq!(deploy_watch(env, "v1"), 0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(deploy_watch(env, "bad-v2"), 3);
    drop(traffic);
    let versions = env.versions_json();
    let reason = versions["rollbacks"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("error rate"), "{reason}");
    assert_eq!(env.traffic(10).0.get("v1"), Some(&10));
}

/// Debian's PostgreSQL (the newest under /usr/lib/postgresql), a cluster of its own in
/// `dir` run as the `postgres` user on 127.0.0.1, with user `shop` and `password`
/// (scram-sha-256). Killed when dropped.
pub struct Postgres {
    child: Child,
    pub port: u16,
}

impl Postgres {
    pub fn start(dir: &Path, password: &str) -> Self {
        use std::os::unix::process::CommandExt;
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (the test script installs it)")
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql");
        let user = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("a postgres user");
        let as_postgres = |program: &str| {
            let mut command = Command::new(bin.join(program));
            command
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.join(format!("{program}.log"))).unwrap(),
                ));
            command
        };
        // The test's directory is root's; the cluster's is postgres'.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let data = dir.join("pg");
        let password_file = dir.join("pg-password");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(&password_file, password).unwrap();
        for path in [&data, &password_file] {
            nix::unistd::chown(path.as_path(), Some(user.uid), Some(user.gid)).unwrap();
        }
        let mut initdb = as_postgres("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "shop", "--auth=scram-sha-256"])
            .arg(format!("--pwfile={}", password_file.display()));
        let out = run_bounded(initdb, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default()
        );
        let port = free_port();
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&data)
            .spawn()
            .unwrap();
        wait_until(
            "PostgreSQL accepting connections",
            Duration::from_secs(30),
            || {
                Command::new(bin.join("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            },
        );
        Self { child, port }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's `redis-server` on 127.0.0.1 with `password`, keeping nothing on disk. Killed
/// when dropped (or by [`Redis::stop`]).
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start(dir: &Path, password: &str) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--requirepass",
                password,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(dir.join("redis.log")).unwrap(),
            ))
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (the test script installs it)");
        wait_until("Redis listening", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { child, port }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `rearguard backtest --app shop --release VERSION --json`: the judge, uninterrupted, over
/// what the ledger recorded of the release.
pub fn replay(env: &Env, version: &str) -> serde_json::Value {
    let out = env.run(&["backtest", "--app", "shop", "--release", version, "--json"]);
    serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)))
}

/// The guard's rollback decided on the step an uninterrupted judge over the recorded steps
/// decides on.
pub fn assert_rolled_back_on_the_replayed_step(env: &Env, version: &str) {
    let replay = replay(env, version);
    assert_eq!(replay["verdict"], "rollback", "{replay}");
    let versions = env.versions_json();
    assert_eq!(
        replay["evidence"]["window_end"],
        versions["rollbacks"][0]["evidence"]["evidence"]["window_end"],
        "replay {replay}, guard {versions}"
    );
}

/// `rearguard serve` on a free port, its stderr in `serve.log` in the env. Killed when
/// dropped.
pub struct Server {
    pub guard: Guard,
    pub port: u16,
    log: PathBuf,
}

impl Server {
    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `METHOD PATH` with an optional bearer token and JSON body: (status, JSON body, or
    /// the body as a JSON string when it is not JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let (status, text) = http(self.port, method, path, token, body.map(|b| b.to_string()));
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }
}

impl Env {
    pub fn serve(&self, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let log = self.path().join("serve.log");
        let mut command = Command::new(binary());
        command
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(self.config())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        let server = Server {
            guard: Guard(command.spawn().unwrap()),
            port,
            log,
        };
        wait_until("the server answers", Duration::from_secs(20), || {
            http(port, "GET", "/health/ready", None, None).0 == 200
        });
        server
    }

    /// A new API token with `role`, named `name`.
    pub fn token(&self, name: &str, role: &str) -> String {
        let out = self.run(&["token", "create", "--name", name, "--role", role]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    }
}

/// A plain HTTP/1.1 request on 127.0.0.1: (status, body); (0, "") when nothing answers.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    // Read to the end, or to Content-Length when the server keeps the connection open.
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if length.is_some_and(|length| body.len() >= length) {
                break;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(_) => return (0, String::new()),
        }
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}
