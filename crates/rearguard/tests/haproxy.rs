//! HAProxy as the traffic mover, against Debian's real `haproxy`: versions are switched
//! through its runtime API (each switch read back), and the judge counts requests from its
//! log lines. A switch under load loses no request; a bad release is rolled back on the
//! log's evidence; a person can roll back to a named version.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use support::{Env, EnvBuilder, Haproxy, deploy_watch, stderr, wait_until};

/// An env whose traffic goes through a HAProxy of its own; `configure` adds the rest.
fn env_with_haproxy_and(configure: impl FnOnce(EnvBuilder) -> EnvBuilder) -> (Env, Haproxy) {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let haproxy = Haproxy::start(dir.path(), port);
    let builder = Env::builder().in_dir(dir, port).traffic(&haproxy.traffic());
    (configure(builder).build(), haproxy)
}

fn env_with_haproxy() -> (Env, Haproxy) {
    env_with_haproxy_and(|builder| builder)
}

#[test]
fn a_switch_through_haproxy_under_load_loses_no_request_and_a_good_release_becomes_stable() {
    let (env, _haproxy) = env_with_haproxy();
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert_eq!(env.traffic(10).0.get("v1"), Some(&10));
    let traffic = env.steady_traffic();
    assert_eq!(deploy_watch(&env, "v2"), 0);
    traffic.stop_all_answered();
    assert_eq!(env.state_of("v2"), "stable");
    assert_eq!(env.traffic(10).0.get("v2"), Some(&10));
}

#[test]
fn a_bad_release_behind_haproxy_is_rolled_back_on_the_evidence_of_its_log() {
    // No health check: only the judge, fed by HAProxy's log, can tell.
    let (env, _haproxy) = env_with_haproxy_and(EnvBuilder::without_checks);
    support::bad_release_is_rolled_back_on_error_rate(&env);
}

#[test]
fn a_manual_rollback_through_haproxy_goes_to_the_named_version() {
    let (env, _haproxy) = env_with_haproxy();
    let _guard = env.guard();
    for version in ["v1", "v2", "v3"] {
        assert_eq!(deploy_watch(&env, version), 0);
    }
    let out = env.run(&["rollback", "shop", "v1", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("v1 serves", Duration::from_secs(10), || {
        env.traffic(5).0.get("v1") == Some(&5)
    });
}

#[test]
fn a_guard_killed_and_started_again_behind_haproxy_fails_no_request() {
    let (env, _haproxy) = env_with_haproxy();
    let guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    let _guard = support::restart_guard_under_load(&env, guard);
}
