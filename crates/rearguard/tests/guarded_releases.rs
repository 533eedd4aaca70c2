//! The whole loop against real processes and real HTTP: deploys, automatic and manual
//! rollbacks, and a guard killed in the middle of a rollback.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use support::{Env, deploy_watch, stderr, stdout, wait_until};

#[test]
fn a_good_deploy_becomes_stable_and_serves() {
    let env = Env::new();
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert_eq!(env.state_of("v1"), "stable");
    let (by_version, failed) = env.traffic(20);
    assert_eq!((by_version.get("v1"), failed), (Some(&20), 0));
    let versions = env.versions_json();
    assert_eq!(versions["releases"][0]["current"], true);
    assert_eq!(versions["releases"][0]["known_good"], true);
}

#[test]
fn a_bad_deploy_is_rolled_back_automatically_and_v1_serves_again() {
    let env = Env::new();
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    // Traffic while v2 is watched, so the judge has something to judge.
    let traffic = {
        let port = env.port;
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(40);
            while std::time::Instant::now() < deadline {
                let _ = support::get(port, "/");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // The guard learns v1's normal from its traffic before v2 replaces it.
    std::thread::sleep(Duration::from_secs(5));
    let out = env.run(&["deploy", "shop", "bad-v2", "--watch", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code 3 means rolled back; stdout {}",
        stdout(&out)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(summary["rolled_back_to"], "v1");
    assert_eq!(env.state_of("bad-v2"), "rolled_back");
    let (by_version, _) = env.traffic(20);
    assert_eq!(by_version.get("v1"), Some(&20), "{by_version:?}");
    let lines = env.rollback_log_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (
            lines[0]["from"].as_str(),
            lines[0]["to"].as_str(),
            lines[0]["trigger"].as_str()
        ),
        (Some("bad-v2"), Some("v1"), Some("auto"))
    );
    assert_eq!(lines[0]["status"], "success");
    traffic.join().unwrap();
    // The rollback opened an incident; people complete it and draft the post-mortem.
    let out = env.run(&["incidents", "--json"]);
    let incidents: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents}");
    assert_eq!(incidents[0]["status"], "mitigated");
    assert!(incidents[0]["severity"].as_str().unwrap().starts_with('P'));
    let id = incidents[0]["id"].to_string();
    for args in [
        vec!["incident", "ack", &id],
        vec!["incident", "note", &id, "the new cache client times out"],
        vec![
            "incident",
            "resolve",
            &id,
            "--root-cause",
            "cache client v3 defaults to 1 ms timeouts",
        ],
    ] {
        let out = env.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let draft = env.path().join("postmortem.md");
    let out = env.run(&["postmortem", &id, "--out", draft.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&draft).unwrap();
    for expected in [
        "bad-v2 rolled back to v1",
        "cache client v3 defaults to 1 ms timeouts",
        "the new cache client times out",
        "| time | event | by |",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    let out = env.run(&["report", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            report["incidents"].as_u64(),
            report["releases"].as_u64(),
            report["rolled_back"].as_u64()
        ),
        (Some(1), Some(2), Some(1)),
        "{report}"
    );
    assert!(report["availability"].as_f64().unwrap() < 1.0);
}

#[test]
fn a_release_that_never_becomes_ready_fails_and_the_current_one_keeps_serving() {
    let env = Env::new();
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert_eq!(deploy_watch(&env, "broken-v2"), 4);
    assert_eq!(env.state_of("broken-v2"), "failed");
    let (by_version, failed) = env.traffic(10);
    assert_eq!((by_version.get("v1"), failed), (Some(&10), 0));
}

#[test]
fn manual_rollback_to_known_good_and_to_a_named_version() {
    let env = Env::new();
    let _guard = env.guard();
    for version in ["v1", "v2", "v3"] {
        assert_eq!(deploy_watch(&env, version), 0);
    }
    // Without a terminal and without --yes: refused, nothing changes.
    let out = env.run(&["rollback", "shop"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    // Default target: the last known-good release other than the current one.
    let out = env.run(&["rollback", "shop", "--yes", "--reason", "checkout is slow"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.traffic(5).0.get("v2"), Some(&5));
    let out = env.run(&["rollback", "shop", "v1", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.traffic(5).0.get("v1"), Some(&5));
    let lines = env.rollback_log_lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["trigger"], "manual");
    assert_eq!(lines[0]["reason"], "checkout is slow");
    // Refusals name what is possible.
    let out = env.run(&["rollback", "shop", "v9", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("never recorded"), "{}", stderr(&out));
}

#[test]
fn a_stopped_guard_leaves_no_process_behind() {
    let env = Env::new();
    let mut guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert!(env.request().is_some());
    assert!(guard.stop().success());
    assert!(
        env.request().is_none(),
        "the router and the app stopped with the guard"
    );
    let pid_dir = env.path().join(".rearguard/instances");
    let left = std::fs::read_dir(pid_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "pid files of stopped instances are removed");
}

#[test]
fn a_release_failing_its_health_check_is_rolled_back() {
    let env = Env::new();
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    // Serves fine, but /health answers 503: three failed checks, 5 s apart.
    assert_eq!(deploy_watch(&env, "sick-v2"), 3);
    assert_eq!(env.traffic(5).0.get("v1"), Some(&5));
    let reason = env.versions_json()["rollbacks"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("check health failed 3 times"), "{reason}");
}

#[test]
fn a_canary_takes_its_share_then_all_traffic_once_baked() {
    let env = Env::builder().canary("50%").build();
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    let out = env.run(&["deploy", "shop", "v2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (split, _) = env.traffic(20);
    assert_eq!(
        (split.get("v1"), split.get("v2")),
        (Some(&10), Some(&10)),
        "an even 50 % split: {split:?}"
    );
    wait_until("v2 is stable", Duration::from_secs(30), || {
        env.state_of("v2") == "stable"
    });
    assert_eq!(
        env.traffic(10).0.get("v2"),
        Some(&10),
        "promoted: all traffic on v2"
    );
}

#[test]
fn deploy_watch_without_a_guard_works_from_the_config_directory() {
    // The everyday form: in the app's directory, default config name, no guard running.
    let env = Env::new();
    let mut command = std::process::Command::new(support::binary());
    command
        .args(["deploy", "shop", "v1", "--watch", "--json"])
        .current_dir(env.path());
    let out = support::run_bounded(command, Duration::from_secs(60));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(env.state_of("v1"), "stable");
    assert!(
        env.request().is_none(),
        "nothing keeps serving once --watch returns"
    );
}

#[test]
fn a_serving_instance_that_dies_is_restarted_and_recorded() {
    let env = Env::new();
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(env.instance_pid("v1")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("v1 serves again", Duration::from_secs(20), || {
        env.request() == Some((200, "v1".into()))
    });
    let restarts: Vec<_> = env
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "instance_restarted")
        .collect();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert!(
        restarts[0]["detail"]["exited"][0]
            .as_str()
            .unwrap()
            .contains("signal: 9"),
        "{restarts:?}"
    );
    let incidents = env.run(&["incidents", "--json"]);
    assert_eq!(
        support::stdout(&incidents).trim(),
        "[]",
        "a restart that helps opens no incident"
    );
}

#[test]
fn a_release_whose_process_keeps_dying_is_rolled_back_once_restarts_do_not_help() {
    // No check and no traffic: only the restart limit can tell (and a release whose
    // process died recently is not promoted).
    let env = Env::builder().without_checks().build();
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert_eq!(deploy_watch(&env, "crashy-v2"), 3);
    let rollback = &env.versions_json()["rollbacks"][0];
    let reason = rollback["reason"].as_str().unwrap();
    assert!(
        reason.contains("restarts in 5 minutes did not keep crashy-v2 running"),
        "{reason}"
    );
    let restarts = env
        .events()
        .iter()
        .filter(|e| e["kind"] == "instance_restarted")
        .count();
    assert_eq!(restarts, 3, "three restarts, then the rollback");
    assert_eq!(env.traffic(5).0.get("v1"), Some(&5));
}

#[test]
fn instances_get_a_clean_environment_not_the_guards_secrets() {
    let env = Env::builder()
        .component_env("SHOP_MODE", "live")
        .component_env("SHOP_TOKEN", "${SHOP_TOKEN}")
        .build();
    let _guard = env.guard_with_env(&[
        ("SLACK_WEBHOOK_URL", "https://hooks.example/s3cret"),
        ("SHOP_TOKEN", "t0ken"),
    ]);
    assert_eq!(deploy_watch(&env, "v1"), 0);
    let environ = std::fs::read(format!("/proc/{}/environ", env.instance_pid("v1"))).unwrap();
    let names: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect();
    assert!(
        !names.iter().any(|e| e.contains("s3cret")),
        "the guard's secret reached the app: {names:?}"
    );
    for expected in ["SHOP_MODE=live", "SHOP_TOKEN=t0ken", "REARGUARD_VERSION=v1"] {
        assert!(
            names.iter().any(|e| e == expected),
            "{expected} missing: {names:?}"
        );
    }
    assert!(names.iter().any(|e| e.starts_with("PATH=")), "{names:?}");
    assert!(names.iter().any(|e| e.starts_with("PORT=")), "{names:?}");
}

#[test]
fn components_without_a_port_deploy_ready_when_up_or_on_their_ready_command() {
    let env = Env::builder()
        .component(
            "        worker:
          command: [\"sleep\", \"600\"]
        mailer:
          command: [\"sh\", \"-c\", \"sleep 1; touch mailer-$REARGUARD_VERSION.ready; exec sleep 600\"]
          ready_command: [\"test\", \"-e\", \"mailer-{version}.ready\"]
",
        )
        .build();
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert_eq!(env.state_of("v1"), "stable");
    assert!(env.path().join("mailer-v1.ready").exists());
    for component in ["worker", "mailer", "web"] {
        let pid_file = env
            .path()
            .join(format!(".rearguard/instances/shop--{component}--v1.pid"));
        assert!(pid_file.exists(), "{component} runs");
    }
    assert_eq!(env.traffic(3).0.get("v1"), Some(&3));
}

#[test]
fn a_bad_first_release_with_nothing_to_roll_back_to_fails_and_says_so() {
    let env = Env::new();
    let _guard = env.guard();
    // Fails its health check; there is no known-good release to go back to.
    assert_eq!(deploy_watch(&env, "sick-v1"), 4);
    let versions = env.versions_json();
    let release = &versions["releases"][0];
    assert_eq!(release["state"], "failed", "{versions}");
    assert!(
        release["note"]
            .as_str()
            .unwrap()
            .contains("no known-good release to roll back to"),
        "{versions}"
    );
    let out = env.run(&["incidents", "--json"]);
    let incidents: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        incidents[0]["title"],
        "shop sick-v1 is bad and cannot be rolled back"
    );
}

#[test]
fn a_real_release_replayed_from_the_ledger_gets_the_guards_verdict_and_exports_as_a_scenario() {
    let env = Env::builder().without_checks().build();
    support::bad_release_is_rolled_back_on_error_rate(&env);
    let replay = |args: &[&str]| -> serde_json::Value {
        let out = env.run(args);
        serde_json::from_str(support::stdout(&out).trim().lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{e}: {}{}", support::stdout(&out), support::stderr(&out)))
    };
    let export = env.path().join("exported");
    let from_ledger = replay(&[
        "backtest",
        "--app",
        "shop",
        "--release",
        "bad-v2",
        "--json",
        "--export",
        export.to_str().unwrap(),
    ]);
    assert_eq!(from_ledger["verdict"], "rollback", "{from_ledger}");
    let versions = env.versions_json();
    assert_eq!(
        from_ledger["evidence"]["window_end"],
        versions["rollbacks"][0]["evidence"]["evidence"]["window_end"],
        "replay {from_ledger}, guard {versions}"
    );
    assert!(
        from_ledger["reason"]
            .as_str()
            .unwrap()
            .contains("error rate"),
        "{from_ledger}"
    );
    // The exported files are a scenario: the same decision, for the same reason.
    std::fs::write(
        env.path().join("policy.yaml"),
        "warmup: 2s\ntransient: 2s\n",
    )
    .unwrap();
    let from_file = replay(&[
        "backtest",
        export.join("shop-bad-v2.csv").to_str().unwrap(),
        "--meta",
        export.join("shop-bad-v2.json").to_str().unwrap(),
        "--policy",
        env.path().join("policy.yaml").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(from_file["reason"], from_ledger["reason"], "{from_file}");
    assert_eq!(from_file["rule"], from_ledger["rule"], "{from_file}");
    let out = env.run(&["backtest", "--app", "shop", "--release", "v9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(support::stderr(&out).contains("shop has no release v9"));
}

#[test]
fn a_release_above_its_cpu_limit_is_rolled_back_and_status_shows_each_versions_usage() {
    // Usage is sampled every 5 s; the limit needs 5 s of samples above it, the bake 20 s.
    let env = Env::builder()
        .bake("20s")
        .policy("max_cpu", "0.5")
        .policy("limits_for", "5s")
        .build();
    let _guard = env.guard();
    let traffic = env.steady_traffic();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    let status = env.run(&["status", "shop"]);
    let text = support::stdout(&status);
    assert!(text.contains("v1: CPU ") && text.contains(" MiB"), "{text}");
    assert_eq!(deploy_watch(&env, "busy-v2"), 3);
    drop(traffic);
    let versions = env.versions_json();
    let rollback = &versions["rollbacks"][0];
    let reason = rollback["reason"].as_str().unwrap();
    assert!(reason.starts_with("CPU at least "), "{reason}");
    assert!(reason.contains("above the limit of 0.5 cores"), "{reason}");
    assert_eq!(rollback["evidence"]["metric"], "cpu", "{rollback}");
}
