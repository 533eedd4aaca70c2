//! Packaging: the container image runs rearguard (built on the local Docker Engine from
//! packaging/Containerfile, no registry), the systemd unit's commands exist, and the guard
//! speaks the service manager's notify protocol (READY=1, STOPPING=1).

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Env, stderr, stdout};

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging")
}

#[test]
fn the_guard_tells_the_service_manager_when_it_is_ready_and_when_it_stops() {
    let env = Env::new();
    let socket_path = env.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut guard = env.guard_with_env(&[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut buffer = [0u8; 512];
    let received = |socket: &UnixDatagram, buffer: &mut [u8]| {
        let n = socket.recv(buffer).expect("a notification within 20 s");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    let ready = received(&socket, &mut buffer);
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(ready.contains("STATUS=guarding shop"), "{ready}");
    assert!(guard.stop().success());
    let stopping = received(&socket, &mut buffer);
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
}

#[test]
fn the_systemd_units_commands_exist() {
    let unit = std::fs::read_to_string(packaging().join("rearguard.service")).unwrap();
    assert!(unit.contains("\nType=notify\n"), "{unit}");
    for key in ["ExecStartPre=", "ExecStart="] {
        let line = unit
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key}"));
        let mut words = line[key.len()..].split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/rearguard"));
        // The same arguments with --help: clap refuses an unknown flag or command.
        let mut command = Command::new(support::binary());
        command.args(words).arg("--help");
        let out = support::run_bounded(command, Duration::from_secs(30));
        assert!(out.status.success(), "{line}: {}", stderr(&out));
    }
}

/// Runs docker with `args` (bounded), panicking with its output when it fails.
fn docker(args: &[&str], limit: Duration) -> std::process::Output {
    let mut command = Command::new("docker");
    command.args(args);
    let out = support::run_bounded(command, limit);
    assert!(
        out.status.success(),
        "docker {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Removes the image when dropped.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "--force", &self.0])
            .output();
    }
}

#[test]
fn the_container_image_runs_the_demo() {
    let context = tempfile::tempdir().unwrap();
    let mut command = Command::new(packaging().join("rootfs.sh"));
    command.arg(support::binary()).arg(context.path());
    let out = support::run_bounded(command, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    let image = Image(format!("rearguard-test:{}", std::process::id()));
    let containerfile = packaging().join("Containerfile");
    docker(
        &[
            "build",
            "--quiet",
            "-f",
            containerfile.to_str().unwrap(),
            "-t",
            &image.0,
            context.path().to_str().unwrap(),
        ],
        Duration::from_secs(180),
    );
    let out = docker(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &image.0,
            "demo",
            "--json",
        ],
        Duration::from_secs(180),
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            summary["rolled_back"].as_str(),
            summary["restored"].as_str()
        ),
        (Some("v2"), Some("v1")),
        "{summary}"
    );
}
