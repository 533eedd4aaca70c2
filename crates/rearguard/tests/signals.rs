//! Signal sources other than the traffic mover's counts: Debian's real `prometheus`
//! scraping the demo app's versions, and the versions' own `/metrics` pages read by the
//! guard. The router still moves the traffic; its counts are not used.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use support::{Alertmanager, Env, EnvBuilder, Prometheus, deploy_watch};

/// An env whose only signals come from a Prometheus of its own (kept alive with it, and
/// asking for basic auth), without health checks: only the judge, fed by Prometheus, can
/// tell. A new version's
/// series reach Prometheus a scrape or two after it takes traffic: until then the judge
/// sees none, so the bake must outlast that.
fn prometheus_env(configure: impl FnOnce(EnvBuilder) -> EnvBuilder) -> (Env, Prometheus) {
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start_with_basic_auth(dir.path(), "rearguard", "prom pass 'x");
    let builder = Env::builder()
        .in_dir(dir, support::free_port())
        .without_checks()
        .bake("20s")
        .signals(&prometheus.signals("2s"));
    (configure(builder).build(), prometheus)
}

#[test]
fn a_bad_release_is_rolled_back_with_prometheus_as_the_only_signal_source() {
    let (env, _prometheus) = prometheus_env(|builder| builder);
    support::bad_release_is_rolled_back_on_error_rate(&env);
}

#[test]
fn a_guard_killed_while_prometheus_shows_a_bad_release_resumes_and_decides_on_the_same_step() {
    let (env, _prometheus) =
        prometheus_env(|builder| builder.policy("warmup", "6s").policy("transient", "4s"));
    let mut guard = env.guard();
    let traffic = env.steady_traffic();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert!(env.run(&["deploy", "shop", "bad-v2"]).status.success());
    support::wait_until("bad-v2 is watched", Duration::from_secs(30), || {
        env.state_of("bad-v2") == "watching"
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        env.state_of("bad-v2"),
        "watching",
        "the kill must land mid-watch"
    );
    guard.kill_hard();
    let _restarted = env.guard();
    support::wait_until("bad-v2 is rolled back", Duration::from_secs(60), || {
        env.state_of("bad-v2") == "rolled_back"
    });
    drop(traffic);
    support::assert_rolled_back_on_the_replayed_step(&env, "bad-v2");
}

#[test]
fn a_bad_release_is_rolled_back_on_the_versions_own_metrics_pages() {
    let env = Env::builder()
        .without_checks()
        .signals("    signals:\n      kind: scrape\n")
        .build();
    // No health check: only the judge, fed by these signals, can tell.
    support::bad_release_is_rolled_back_on_error_rate(&env);
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

#[test]
fn an_alert_from_alertmanager_rolls_the_watched_release_back_and_is_the_incidents_evidence() {
    // The release is good by every count the judge sees; only the alert rule knows better.
    let dir = tempfile::tempdir().unwrap();
    let receiver = support::free_port();
    let token = "alertmanager-token-0123456789";
    let alertmanager = Alertmanager::start(
        dir.path(),
        &format!("http://127.0.0.1:{receiver}/alertmanager"),
        token,
    );
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: shop\n    rules:\n      - alert: AlarmingVersionServes\n\
         \x20       expr: sum by (app, version) (http_requests_total{version=~\"alarm.*\"}) > 0\n\
         \x20       annotations:\n          summary: \"{{ $labels.version }} is serving\"\n",
    )
    .unwrap();
    let _prometheus = Prometheus::start_with(
        dir.path(),
        &format!(
            "rule_files: [{}]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{}\"]\n",
            rules.display(),
            alertmanager.port
        ),
    );
    let env = Env::builder()
        .in_dir(dir, support::free_port())
        .bake("15s")
        .top_level(&format!(
            "alertmanager:\n  listen: 127.0.0.1:{receiver}\n  token: ${{SHOP_ALERT_TOKEN}}\n"
        ))
        .build();

    // Without the token, or with another, the receiver takes nothing.
    let _guard = env.guard_with_env(&[("SHOP_ALERT_TOKEN", token)]);
    for authorization in ["", "Authorization: Bearer wrong-token-0123456789\r\n"] {
        assert_eq!(
            post_status(receiver, authorization),
            401,
            "{authorization:?}"
        );
    }

    let traffic = env.steady_traffic();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert_eq!(deploy_watch(&env, "alarm-v2"), 3);
    drop(traffic);
    let versions = env.versions_json();
    let reason = versions["rollbacks"][0]["reason"].as_str().unwrap();
    assert_eq!(
        reason,
        "alert AlarmingVersionServes fired: alarm-v2 is serving"
    );
    let incidents = env.run(&["incidents", "--json"]);
    let text = support::stdout(&incidents);
    assert!(text.contains("AlarmingVersionServes"), "{text}");
    assert!(!text.contains(token), "the token leaked: {text}");
    assert_eq!(env.traffic(10).0.get("v1"), Some(&10));
}

/// The status of an (empty) notification posted to the receiver with `authorization`.
fn post_status(port: u16, authorization: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let body = r#"{"version":"4","alerts":[]}"#;
    write!(
        stream,
        "POST /alertmanager HTTP/1.1\r\nHost: x\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer[9..12].parse().unwrap()
}
