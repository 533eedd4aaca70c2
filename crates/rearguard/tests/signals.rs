//! Signal sources other than the traffic mover's counts: Debian's real `prometheus`
//! scraping the demo app's versions, and the versions' own `/metrics` pages read by the
//! guard. The router still moves the traffic; its counts are not used.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use support::{Env, EnvBuilder, Prometheus, deploy_watch};

/// A bad release is rolled back on the evidence of `signals` alone (no health check), and a
/// good one before it became stable on the same evidence.
fn bad_release_rolled_back_on(env: &Env) {
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

#[test]
fn a_bad_release_is_rolled_back_with_prometheus_as_the_only_signal_source() {
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path());
    let env = Env::builder()
        .in_dir(dir, support::free_port())
        .without_checks()
        .signals(&prometheus.signals("2s"))
        .build();
    bad_release_rolled_back_on(&env);
}

#[test]
fn a_bad_release_is_rolled_back_on_the_versions_own_metrics_pages() {
    let env = Env::builder()
        .without_checks()
        .signals("    signals:\n      kind: scrape\n")
        .build();
    bad_release_rolled_back_on(&env);
}

#[test]
fn signal_sources_with_problems_are_refused_where_they_are_written() {
    let env = EnvBuilder::signals(
        Env::builder(),
        "    signals:\n      kind: prometheus\n      url: nowhere\n      queries:\n        errors: 'sum by (version (x'\n",
    )
    .build();
    let out = env.run(&["validate"]);
    let text = support::stderr(&out);
    assert!(!out.status.success());
    assert!(text.contains("\"nowhere\" is no http(s) URL"), "{text}");
    assert!(
        text.contains("not PromQL: unclosed left parenthesis"),
        "{text}"
    );
}
