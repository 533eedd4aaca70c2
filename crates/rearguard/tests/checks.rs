//! Every kind of check against real things: the demo app (HTTP with a JSON condition, TCP),
//! a command, Debian's PostgreSQL and Redis, run by `rearguard check` against the release a
//! guard serves, at the same time, each bounded by its timeout.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use support::{Env, Postgres, Redis, deploy_watch, stdout};

const PG_PASSWORD: &str = "pg-secret-password-1";
const REDIS_PASSWORD: &str = "redis secret \"pass\"";
const TOKEN: &str = "check-token-0123456789";

fn check_json(env: &Env, secrets: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let out = env.run_with_env(&["check", "shop", "--json"], secrets);
    let text = stdout(&out);
    for (_, secret) in secrets {
        assert!(!text.contains(secret), "a secret leaked: {text}");
    }
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}{}", support::stderr(&out)));
    (out.status.code().unwrap(), json)
}

#[test]
fn every_kind_of_check_reads_the_real_thing_and_a_dead_dependency_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = Postgres::start(dir.path(), PG_PASSWORD);
    let mut redis = Redis::start(dir.path(), REDIS_PASSWORD);
    std::fs::write(
        dir.path().join("check.sh"),
        "#!/bin/sh\necho \"checked $1 at $2 with $CHECK_TOKEN\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path().join("check.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The guard runs these too; `failures` keeps a dependency stopped below from rolling
    // anything back while `rearguard check` is what is looked at.
    let checks = format!(
        "      - kind: http
        name: status
        path: /status
        json: {{pointer: /version, equals: v1}}
      - kind: tcp
        name: port
      - kind: command
        name: script
        command: [\"./check.sh\", \"{{version}}\", \"{{address}}\"]
        env: {{CHECK_TOKEN: \"${{SHOP_CHECK_TOKEN}}\"}}
      - kind: postgres
        name: db
        dsn: \"${{SHOP_PG_DSN}}\"
        query: SELECT 1
      - kind: redis
        name: cache
        address: 127.0.0.1:{}
        password: \"${{SHOP_REDIS_PASSWORD}}\"
        failures: 1000
",
        redis.port
    );
    let env = Env::builder()
        .in_dir(dir, support::free_port())
        .checks(&checks)
        .build();
    let dsn = format!(
        "postgres://shop:{PG_PASSWORD}@127.0.0.1:{}/postgres",
        postgres.port
    );
    let secrets = [
        ("SHOP_CHECK_TOKEN", TOKEN),
        ("SHOP_PG_DSN", dsn.as_str()),
        ("SHOP_REDIS_PASSWORD", REDIS_PASSWORD),
    ];
    let _guard = env.guard_with_env(&secrets);
    assert_eq!(deploy_watch(&env, "v1"), 0);

    let (code, health) = check_json(&env, &secrets);
    assert_eq!(code, 0, "{health:#}");
    assert_eq!(health["status"], "pass", "{health:#}");
    assert_eq!(health["version"], "v1");
    let checks = health["checks"].as_object().unwrap();
    assert_eq!(checks.len(), 5, "{health:#}");
    for (name, results) in checks {
        assert_eq!(results[0]["status"], "pass", "{name}: {health:#}");
    }
    let script = checks["script:command"][0]["output"].as_str().unwrap();
    assert!(script.contains("checked v1 at 127.0.0.1:"), "{script}");
    assert!(script.contains("with ***"), "{script}");

    redis.stop();
    let (code, health) = check_json(&env, &secrets);
    assert_eq!(code, 4, "{health:#}");
    assert_eq!(health["status"], "fail");
    assert_eq!(health["checks"]["cache:redis"][0]["status"], "fail");
    assert_eq!(health["checks"]["db:postgres"][0]["status"], "pass");
}

#[test]
fn checks_run_at_the_same_time_and_one_that_hangs_fails_at_its_timeout() {
    // Each of the two waits (up to 5 s) for the other's mark, made in the same run (the
    // marks carry the parent's pid): one after the other, the first would fail.
    let meet = |mine: &str, theirs: &str| {
        format!(
            "[\"sh\", \"-c\", \"touch {mine}.$PPID; i=0; while [ $i -lt 50 ]; do [ -f {theirs}.$PPID ] && exit 0; sleep 0.1; i=$((i+1)); done; exit 2\"]"
        )
    };
    let checks = format!(
        "      - kind: command
        name: left
        command: {}
        timeout: 10s
        failures: 1000
      - kind: command
        name: right
        command: {}
        timeout: 10s
        failures: 1000
      - kind: command
        name: hangs
        command: [sleep, \"30\"]
        timeout: 1s
        failures: 1000
",
        meet("left", "right"),
        meet("right", "left")
    );
    let env = Env::builder().checks(&checks).build();
    let _guard = env.guard();
    serve_unwatched(&env);
    let (code, health) = check_json(&env, &[]);
    assert_eq!(code, 4, "{health:#}");
    assert_eq!(
        health["checks"]["left:command"][0]["status"], "pass",
        "{health:#}"
    );
    assert_eq!(
        health["checks"]["right:command"][0]["status"], "pass",
        "{health:#}"
    );
    let hangs = &health["checks"]["hangs:command"][0];
    assert_eq!(hangs["status"], "fail");
    assert!(
        hangs["output"].as_str().unwrap().contains("within 1s"),
        "{hangs}"
    );
}

#[test]
fn check_without_a_guard_says_what_to_do() {
    let env = Env::new();
    let out = env.run(&["check", "shop"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        support::stderr(&out).contains("no guard is running shop"),
        "{}",
        support::stderr(&out)
    );
}

/// Deploys v1 without waiting for it to become stable (a failing check holds the
/// promotion), until the guard says it serves.
fn serve_unwatched(env: &Env) {
    assert!(env.run(&["deploy", "shop", "v1"]).status.success());
    support::wait_until(
        "the guard says v1 serves",
        std::time::Duration::from_secs(30),
        || !support::stderr(&env.run(&["check", "shop"])).contains("serves nothing yet"),
    );
}

#[test]
fn a_certificate_near_its_expiry_warns_then_fails() {
    // A component served over TLS by openssl's own test server, its certificate valid for
    // 5 days.
    let dir = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "5",
        ])
        .args([
            "-subj", "/CN=shop", "-keyout", "key.pem", "-out", "cert.pem",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let checks = "      - kind: http
        name: soon
        component: tls
        path: /
        tls: true
        certificate: {warn_days: 14, fail_days: 3}
        failures: 1000
      - kind: http
        name: too-soon
        component: tls
        path: /
        tls: true
        certificate: {warn_days: 30, fail_days: 10}
        failures: 1000
";
    let env = Env::builder()
        .in_dir(dir, support::free_port())
        .component(
            "        tls:
          command: [openssl, s_server, -accept, \"127.0.0.1:{port}\", -cert, cert.pem, -key, key.pem, -www, -quiet]
",
        )
        .checks(checks)
        .build();
    let _guard = env.guard();
    serve_unwatched(&env);
    let (code, health) = check_json(&env, &[]);
    assert_eq!(code, 4, "{health:#}");
    let soon = &health["checks"]["soon:http"][0];
    assert_eq!(soon["status"], "warn", "{health:#}");
    assert_eq!(
        soon["output"], "the certificate expires in 4 days",
        "{health:#}"
    );
    let too_soon = &health["checks"]["too-soon:http"][0];
    assert_eq!(too_soon["status"], "fail", "{health:#}");
}
