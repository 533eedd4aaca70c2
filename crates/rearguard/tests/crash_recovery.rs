//! A guard killed (SIGKILL) while it watches a release, then restarted, reaches the outcome
//! an uninterrupted guard would have: a bad release is rolled back, never promoted; a good
//! one is promoted, never rolled back, and only once it was watched for its whole bake time.
//! Kill points: just after the release took traffic, inside the warm-up, after it; and in
//! the middle of a rollback (a failpoint, compiled only with the `failpoints` feature).

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use support::{Env, Guard, deploy_watch, stderr, wait_until};

const WARMUP_S: u64 = 6;

/// A config where the judge cannot decide before 6 s of warm-up plus three 4 s transient
/// windows, and promotion waits 20 s: room for a kill at every stage.
fn env() -> Env {
    Env::builder()
        .bake("20s")
        .policy("warmup", &format!("{WARMUP_S}s"))
        .policy("transient", "4s")
        // These tests are about what a restart does to a watch. The bad releases fail
        // requests; latency only measures how busy the test machine is (a full suite on two
        // cores doubles the demo app's p95 now and then, and blue-green compares with the
        // history from before), so it is given room here. The judge's latency rules have
        // their own tests.
        .policy("p95_ratio_tolerated", "2")
        .policy("p95_ratio", "3")
        .build()
}

/// v1 stable with traffic flowing, then `version` deployed; the guard (and with
/// `router_too` its router, so nothing counts meanwhile) is killed `kill_after` into the
/// watch of `version` and started again. Returns the final state and how long no guard ran.
fn deploy_and_kill(
    version: &str,
    kill_after: Duration,
    router_too: bool,
) -> (Env, Guard, String, Duration) {
    let env = env();
    let mut guard = env.guard();
    let traffic = env.steady_traffic();
    let out = env.run(&["deploy", "shop", "v1", "--watch"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["deploy", "shop", version]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the release is watched", Duration::from_secs(20), || {
        env.state_of(version) == "watching"
    });
    std::thread::sleep(kill_after);
    assert_eq!(
        env.state_of(version),
        "watching",
        "the kill must land while the release is watched"
    );
    guard.kill_hard();
    if router_too {
        let router = env.router_pid().expect("a router runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(router),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let killed = std::time::Instant::now();
    let restarted = env.guard();
    let down = killed.elapsed();
    wait_until("the release settles", Duration::from_secs(90), || {
        let state = env.state_of(version);
        state == "stable" || state == "rolled_back"
    });
    drop(traffic);
    let state = env.state_of(version);
    (env, restarted, state, down)
}

fn bad_release_is_rolled_back_after_a_kill_at(kill_after: Duration, router_too: bool) {
    let (env, _guard, state, _) = deploy_and_kill("bad-v2", kill_after, router_too);
    assert_eq!(state, "rolled_back", "killed after {kill_after:?}");
    let versions = env.versions_json();
    assert_eq!(versions["rollbacks"][0]["trigger"], "auto", "{versions}");
    assert_eq!(env.traffic(5).0.get("v1"), Some(&5));
    // An uninterrupted judge over the same recorded steps decides on the same step: the
    // restart cost the decision nothing.
    support::assert_rolled_back_on_the_replayed_step(&env, "bad-v2");
}

#[test]
fn a_bad_release_killed_as_it_takes_traffic_is_rolled_back() {
    bad_release_is_rolled_back_after_a_kill_at(Duration::from_millis(500), false);
}

#[test]
fn a_bad_release_killed_in_its_warmup_with_its_router_is_rolled_back() {
    bad_release_is_rolled_back_after_a_kill_at(Duration::from_secs(WARMUP_S / 2), true);
}

#[test]
fn a_bad_release_killed_after_its_warmup_is_rolled_back() {
    bad_release_is_rolled_back_after_a_kill_at(Duration::from_secs(WARMUP_S + 2), false);
}

/// The release `version`, and how long after it took traffic it became stable.
fn baked(env: &Env, version: &str) -> f64 {
    let versions = env.versions_json();
    assert!(
        versions["rollbacks"].as_array().unwrap().is_empty(),
        "{versions}"
    );
    let release = versions["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == version)
        .unwrap()
        .clone();
    seconds_between(&release["watch_started_at"], &release["stable_at"])
}

#[test]
fn a_good_release_whose_guard_restarts_is_promoted_once_baked_the_router_counted_meanwhile() {
    let (env, _guard, state, _) = deploy_and_kill("v2", Duration::from_secs(WARMUP_S + 2), false);
    assert_eq!(state, "stable", "{}", env.versions_json());
    assert_eq!(support::replay(&env, "v2")["verdict"], "keep");
    let baked = baked(&env, "v2");
    // The router kept counting while no guard ran: those seconds were watched.
    assert!(
        (20.0..24.0).contains(&baked),
        "promoted {baked}s after taking traffic"
    );
}

#[test]
fn a_good_release_nobody_watched_for_a_while_is_promoted_only_after_a_full_bake() {
    let (env, _guard, state, down) = deploy_and_kill("v2", Duration::from_secs(WARMUP_S + 2), true);
    assert_eq!(state, "stable");
    // The seconds nobody watched do not count towards the bake (a second of slack: the
    // test measures the downtime from outside).
    let baked = baked(&env, "v2");
    assert!(
        baked >= 20.0 + down.as_secs_f64() - 1.0,
        "promoted {baked}s after taking traffic, {down:?} of it unwatched"
    );
}

/// Seconds between two timestamps of the JSON output.
fn seconds_between(from: &serde_json::Value, to: &serde_json::Value) -> f64 {
    let at = |value: &serde_json::Value| -> f64 {
        match value {
            serde_json::Value::Number(ms) => ms.as_f64().unwrap() / 1000.0,
            serde_json::Value::String(text) => {
                let t: jiff::Timestamp = text.parse().unwrap();
                t.as_millisecond() as f64 / 1000.0
            }
            other => panic!("not a timestamp: {other}"),
        }
    };
    at(to) - at(from)
}

#[test]
fn a_guard_killed_mid_rollback_finishes_it_once_after_restart() {
    killed_mid_rollback(Env::new());
}

#[test]
fn a_guard_killed_mid_rollback_behind_haproxy_finishes_it_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let haproxy = support::Haproxy::start(dir.path(), port);
    killed_mid_rollback(
        Env::builder()
            .in_dir(dir, port)
            .traffic(&haproxy.traffic())
            .build(),
    );
}

#[test]
fn a_guard_killed_mid_rollback_over_compose_finishes_it_once_after_restart() {
    let app = support::ComposeApp::build();
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    app.write_compose_file(dir.path(), None);
    killed_mid_rollback(
        Env::builder()
            .in_dir(dir, port)
            .backend(&app.backend(None))
            .build(),
    );
}

#[test]
fn a_guard_killed_between_judging_a_rollback_and_acting_acts_on_it_after_restart() {
    let env = env();
    let mut guard = env.guard_with_env(&[("REARGUARD_FAILPOINT", "after-rollback-judged")]);
    let traffic = env.steady_traffic();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    let out = env.run(&["deploy", "shop", "bad-v2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The step that decided is recorded; the guard stops before it records the rollback.
    wait_until(
        "the guard pauses at its failpoint",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(env.path().join("guard.log"))
                .is_ok_and(|log| log.contains("paused at failpoint"))
        },
    );
    assert_eq!(env.state_of("bad-v2"), "watching");
    guard.kill_hard();
    let _restarted = env.guard();
    wait_until("the rollback is done", Duration::from_secs(30), || {
        env.versions_json()["rollbacks"][0]["status"] == "done"
    });
    drop(traffic);
    // On the very step the killed guard had judged, not a later one.
    support::assert_rolled_back_on_the_replayed_step(&env, "bad-v2");
}

fn killed_mid_rollback(env: Env) {
    let mut guard = env.guard_with_env(&[("REARGUARD_FAILPOINT", "after-rollback-recorded")]);
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert_eq!(deploy_watch(&env, "v2"), 0);
    // A manual rollback is recorded, then the guard stops at the failpoint, mid-way; the
    // person who asked stops waiting after 4 s (exit code 5: not finished, it goes on).
    let waiting = {
        let config = env.config();
        std::thread::spawn(move || {
            let mut command = std::process::Command::new(support::binary());
            command
                .args(["rollback", "shop", "--yes", "--timeout", "4s", "--config"])
                .arg(config);
            support::run_bounded(command, Duration::from_secs(60))
        })
    };
    wait_until("the rollback is started", Duration::from_secs(20), || {
        env.versions_json()["rollbacks"]
            .as_array()
            .is_some_and(|r| r.first().is_some_and(|r| r["status"] == "started"))
    });
    let out = waiting.join().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", support::stdout(&out));
    assert!(
        support::stdout(&out).contains("has not finished rollback 1 within 4s; it goes on"),
        "{}",
        support::stdout(&out)
    );
    guard.kill_hard();
    let _restarted = env.guard();
    wait_until("the rollback is done", Duration::from_secs(30), || {
        env.versions_json()["rollbacks"][0]["status"] == "done"
    });
    assert_eq!(env.traffic(5).0.get("v1"), Some(&5));
    assert_eq!(env.state_of("v2"), "rolled_back");
    wait_until(
        "the rollback's line is logged",
        Duration::from_secs(10),
        || !env.rollback_log_lines().is_empty(),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(env.rollback_log_lines().len(), 1, "one rollback, one line");
}
