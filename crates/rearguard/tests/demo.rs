//! README's first command: the demo deploys a bad release, rolls it back on its own, and
//! leaves nothing running, also when interrupted.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn instance_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_dir(dir.join("instances"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|text| text.split_whitespace().next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn running(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

#[test]
fn the_demo_rolls_the_bad_release_back_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port().to_string();
    let mut command = Command::new(support::binary());
    command
        .args(["demo", "--json", "--port", &port, "--dir"])
        .arg(dir.path());
    let out = support::run_bounded(command, Duration::from_secs(150));
    assert!(out.status.success(), "{}", support::stderr(&out));
    let stdout = support::stdout(&out);
    for line in stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("--json prints only JSON lines on stdout: {line:?}: {e}"));
    }
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            summary["rolled_back"].as_str(),
            summary["restored"].as_str()
        ),
        (Some("v2"), Some("v1")),
        "{stdout}"
    );
    let detected = summary["detected_after_s"].as_f64().unwrap();
    let restored = summary["restored_after_s"].as_f64().unwrap();
    assert!(
        detected > 0.0 && detected <= restored && restored < 60.0,
        "{summary}"
    );
    let story = support::stderr(&out);
    assert!(
        story.contains("rolled_back") && story.contains("known-good"),
        "the history is shown (on stderr): {story}"
    );
    assert!(
        story.contains("rollback #1: v2 -> v1 (auto)"),
        "no debug text: {story}"
    );
    let postmortem = std::fs::read_to_string(summary["postmortem"].as_str().unwrap()).unwrap();
    assert!(
        postmortem.contains("# Post-mortem: demo v2 rolled back to v1"),
        "{postmortem}"
    );
    assert_eq!(summary["incident"], 1);
    let log = std::fs::read_to_string(dir.path().join("rollback-metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 1);
    assert!(instance_pids(dir.path()).is_empty(), "no instance left");
    assert!(
        support::get(port.parse().unwrap(), "/").is_none(),
        "the router is gone"
    );
}

#[test]
fn ctrl_c_stops_the_demo_and_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port().to_string();
    let stderr_path = dir.path().join("demo.stderr");
    let mut demo = Command::new(support::binary())
        .args(["demo", "--port", &port, "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pids = loop {
        let pids = instance_pids(dir.path());
        if !pids.is_empty() {
            break pids;
        }
        if let Some(status) = demo.try_wait().unwrap() {
            panic!(
                "the demo ended ({status}) before it started its service: {}",
                said()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not start its service: {}",
            said()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(pids.iter().all(|&pid| running(pid)));
    kill(Pid::from_raw(demo.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while demo.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        pids.iter().all(|&pid| !running(pid)),
        "instances left running: {pids:?}"
    );
    assert!(
        support::get(port.parse().unwrap(), "/").is_none(),
        "the router is gone"
    );
}
