//! The data plane outlives the control plane: the router runs as its own process and the
//! app's instances are adopted, so a guard killed and started again, or reloaded with
//! SIGHUP, drops no request; SIGHUP with a broken config keeps the running one.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Env, deploy_watch, wait_until};

/// The guard's live view says it runs with `bake_seconds`.
fn bake_seconds(env: &Env) -> Option<f64> {
    let out = env.run(&["status", "shop", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    status[0]["live"]["bake_seconds"].as_f64()
}

#[test]
fn a_guard_killed_and_started_again_under_load_fails_no_request() {
    let env = Env::new();
    let guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    let (router, instance) = (env.router_pid(), env.instance_pid("v1"));
    let _guard = support::restart_guard_under_load(&env, guard);
    assert_eq!(env.router_pid(), router, "the same router serves on");
    assert_eq!(
        env.instance_pid("v1"),
        instance,
        "the instance was adopted, not restarted"
    );
    assert_eq!(env.state_of("v1"), "stable");
}

#[test]
fn sighup_reloads_the_config_in_place_and_fails_no_request() {
    let env = Env::new();
    let guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    let traffic = env.steady_traffic();
    wait_until("the live view", Duration::from_secs(10), || {
        bake_seconds(&env) == Some(6.0)
    });
    let config = std::fs::read_to_string(env.config()).unwrap();
    // A config with a problem is refused: the guard keeps running the old one.
    std::fs::write(
        env.config(),
        config.replace("bake: 6s", "bake: 6s\n    colour: blue"),
    )
    .unwrap();
    let pid = Pid::from_raw(guard.0.id() as i32);
    kill(pid, Signal::SIGHUP).unwrap();
    wait_until(
        "the guard refuses the broken config",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(env.path().join("guard.log"))
                .is_ok_and(|log| log.contains("keeping the one running"))
        },
    );
    assert!(kill(pid, None).is_ok(), "still guarding");
    // A good one is taken by the same process, executed again.
    std::fs::write(env.config(), config.replace("bake: 6s", "bake: 7s")).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    wait_until("the new config is in use", Duration::from_secs(20), || {
        bake_seconds(&env) == Some(7.0)
    });
    std::thread::sleep(Duration::from_secs(2));
    traffic.stop_all_answered();
    assert!(kill(pid, None).is_ok(), "the same process guards on");
    drop(guard);
}
