//! `rearguard serve`: the API's tokens and roles, a release recorded and rolled back over
//! the API with a real guard doing the work, the audit log, metrics and health, and tokens
//! kept out of logs.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Env, stderr, stdout, wait_until};

/// Every route that writes, with a body it would accept.
fn write_routes() -> Vec<(&'static str, &'static str, Option<serde_json::Value>)> {
    vec![
        (
            "POST",
            "/api/v1/apps/shop/releases",
            Some(json!({"version": "v9"})),
        ),
        ("POST", "/api/v1/apps/shop/rollbacks", Some(json!({}))),
        (
            "POST",
            "/api/v1/incidents/1/actions",
            Some(json!({"action": "ack"})),
        ),
        ("DELETE", "/api/v1/tokens/someone", None),
    ]
}

#[test]
fn every_write_route_refuses_no_token_a_wrong_one_and_a_viewers() {
    let env = Env::new();
    let viewer = env.token("dash", "viewer");
    let operator = env.token("ci", "operator");
    let revoked = env.token("old", "admin");
    assert!(env.run(&["token", "revoke", "old"]).status.success());
    let server = env.serve(&[]);
    let forged = format!("rgt_{}", "0".repeat(64));
    for (method, path, body) in write_routes() {
        for token in [None, Some(forged.as_str()), Some(revoked.as_str())] {
            let (status, problem) = server.call(method, path, token, body.as_ref());
            assert_eq!(status, 401, "{method} {path} with {token:?}: {problem}");
        }
        let (status, problem) = server.call(method, path, Some(&viewer), body.as_ref());
        assert_eq!(status, 403, "{method} {path} as a viewer: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("role"),
            "{problem}"
        );
    }
    // Tokens need the admin role; the audit log too.
    for path in ["/api/v1/audit", "/api/v1/tokens"] {
        assert_eq!(
            server.call("GET", path, Some(&operator), None).0,
            403,
            "{path}"
        );
    }
    // Reads need a token too, any role's.
    assert_eq!(server.call("GET", "/api/v1/apps", None, None).0, 401);
    let (status, apps) = server.call("GET", "/api/v1/apps", Some(&viewer), None);
    assert_eq!(status, 200);
    assert_eq!(apps[0]["app"], "shop");
    // Nothing refused changed anything: no release was recorded.
    let (_, releases) = server.call("GET", "/api/v1/apps/shop/releases", Some(&viewer), None);
    assert_eq!(releases, json!([]));
    // The operator's refused write (no guard runs) is in the audit log with its source.
    let (status, _) = server.call(
        "POST",
        "/api/v1/apps/shop/releases",
        Some(&operator),
        Some(&json!({"version": "v1"})),
    );
    assert_eq!(status, 409);
    let audit: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["audit", "--json"]))).unwrap();
    let last = audit.as_array().unwrap().last().unwrap();
    assert_eq!(last["actor"], "token:ci");
    assert_eq!(last["source"], "127.0.0.1");
    assert_eq!(last["action"], "record_release");
    assert_eq!(last["outcome"], "refused");
}

#[test]
fn a_pipeline_deploys_and_an_operator_rolls_back_over_the_api() {
    let env = Env::builder().bake("3s").build();
    let operator = env.token("ci", "operator");
    let admin = env.token("root", "admin");
    let _guard = env.guard();
    let server = env.serve(&[]);
    let release = |version: &str| {
        server.call(
            "POST",
            "/api/v1/apps/shop/releases",
            Some(&operator),
            Some(&json!({"version": version})),
        )
    };
    let state_of = |version: &str| {
        let (_, releases) = server.call("GET", "/api/v1/apps/shop/releases", Some(&admin), None);
        releases
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == version)
            .map(|r| r["state"].as_str().unwrap().to_string())
    };
    let (status, recorded) = release("v1");
    assert_eq!(status, 202, "{recorded}");
    assert_eq!(recorded["created_by"], "token:ci");
    wait_until("v1 is stable", Duration::from_secs(40), || {
        state_of("v1").as_deref() == Some("stable")
    });
    // A version the backend cannot run is refused before anything is recorded.
    let (status, problem) = release("no;such");
    assert_eq!(status, 422, "{problem}");
    assert_eq!(release("v2").0, 202);
    wait_until("v2 serves", Duration::from_secs(30), || {
        env.traffic(3).0.get("v2") == Some(&3)
    });
    let (status, answer) = server.call(
        "POST",
        "/api/v1/apps/shop/rollbacks",
        Some(&operator),
        Some(&json!({"reason": "checkout is slow"})),
    );
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["outcome"], "requested");
    assert_eq!(answer["target"], "v1");
    wait_until("v1 serves again", Duration::from_secs(30), || {
        env.traffic(3).0.get("v1") == Some(&3)
    });
    let (_, rollbacks) = server.call("GET", "/api/v1/apps/shop/rollbacks", Some(&admin), None);
    let rollback = &rollbacks[0];
    assert_eq!(rollback["requested_by"], "token:ci");
    assert_eq!(rollback["reason"], "checkout is slow");
    wait_until("the rollback is done", Duration::from_secs(20), || {
        let (_, rollbacks) = server.call("GET", "/api/v1/apps/shop/rollbacks", Some(&admin), None);
        rollbacks[0]["status"] == "done"
    });
    // Asking again for the known-good release that serves is no rollback.
    let (status, answer) = server.call(
        "POST",
        "/api/v1/apps/shop/rollbacks",
        Some(&operator),
        Some(&json!({"version": "v1"})),
    );
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("already_serving"))
    );

    // The incident opened with the rollback is worked over the API.
    let (_, incidents) = server.call("GET", "/api/v1/incidents?since=1h", Some(&admin), None);
    let id = incidents[0]["id"].as_i64().expect("an incident");
    let act = |action: serde_json::Value| {
        server.call(
            "POST",
            &format!("/api/v1/incidents/{id}/actions"),
            Some(&operator),
            Some(&action),
        )
    };
    let (status, incident) = act(json!({"action": "ack"}));
    assert_eq!(status, 200, "{incident}");
    assert_eq!(incident["acknowledged_by"], "token:ci");
    assert_eq!(act(json!({"action": "severity", "severity": "P9"})).0, 422);
    assert_eq!(
        act(json!({"action": "severity", "severity": "P2"})).1["severity"],
        "P2"
    );
    assert_eq!(act(json!({"action": "launch"})).0, 400);
    let (_, record) = server.call(
        "GET",
        &format!("/api/v1/incidents/{id}"),
        Some(&admin),
        None,
    );
    let kinds: Vec<&str> = record["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"acknowledged") && kinds.contains(&"severity"),
        "{kinds:?}"
    );

    // Every write is audited with who, from where, and how it ended.
    let (_, audit) = server.call("GET", "/api/v1/audit", Some(&admin), None);
    let entries: Vec<(String, String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "127.0.0.1")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has =
        |action: &str, outcome: &str| entries.iter().any(|(a, _, o)| a == action && o == outcome);
    assert!(
        has("record_release", "ok") && has("record_release", "refused"),
        "{entries:?}"
    );
    assert!(
        has("request_rollback", "ok") && has("incident_ack", "ok"),
        "{entries:?}"
    );
    assert!(has("incident_severity", "refused"), "{entries:?}");

    // rearguard's own metrics see the rollback and the requests.
    let (status, metrics) = support::http(server.port, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    assert!(
        metrics
            .contains(r#"rearguard_rollbacks_total{app="shop",trigger="manual",status="done"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rearguard_guarded{app="shop"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/api/v1/apps/{app}/rollbacks",status="202"} 1"#),
        "{metrics}"
    );
    let (status, health) = support::http(server.port, "GET", "/health/live", None, None);
    assert_eq!((status, health.as_str()), (200, r#"{"status":"pass"}"#));
}

#[test]
fn tokens_never_reach_the_logs_or_the_audit_log() {
    let env = Env::new();
    let out = env.run(&[
        "token", "create", "--name", "ci", "--role", "operator", "--json",
    ]);
    let created: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rgt_") && token.len() == 68, "{token}");
    assert!(!stderr(&out).contains(&token));
    let server = env.serve(&[("RUST_LOG", "trace")]);
    server.call("GET", "/api/v1/apps", Some(&token), None);
    server.call(
        "POST",
        "/api/v1/apps/shop/releases",
        Some(&token),
        Some(&json!({"version": "x"})),
    );
    // A mistyped token, one character short, is as secret as the real one.
    server.call("GET", "/api/v1/apps", Some(&token[..67]), None);
    server.call("GET", &format!("/api/v1/apps?token={token}"), None, None);
    assert!(server.log().contains("rearguard: serving"));
    for (what, text) in [
        ("the server's log", server.log()),
        ("the audit log", stdout(&env.run(&["audit", "--json"]))),
        (
            "the token list",
            stdout(&env.run(&["token", "list", "--json"])),
        ),
    ] {
        assert!(!text.contains(&token[4..20]), "a token in {what}: {text}");
    }
    // Only the hash is stored.
    let db = std::fs::read(env.path().join(".rearguard/rearguard.db")).unwrap();
    let needle = &token.as_bytes()[4..];
    assert!(
        !db.windows(needle.len()).any(|w| w == needle),
        "the token is in the database"
    );
}

/// Schemathesis (PyPI; the test script installs it) generates requests from the OpenAPI
/// document, valid and invalid, and checks every answer: no server error, every response
/// in its documented schema, invalid input refused, valid input accepted. The ledger holds
/// a stable release, a rolled-back one and its incident first, so the records' schemas are
/// exercised on real data.
#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_schema() {
    let env = Env::builder().bake("3s").build();
    {
        let _guard = env.guard();
        support::bad_release_is_rolled_back_on_error_rate(&env);
    }
    let admin = env.token("fuzz", "admin");
    let server = env.serve(&[]);
    let schema = format!("http://127.0.0.1:{}/api/v1/openapi.json", server.port);
    let header = format!("Authorization: Bearer {admin}");
    // Revoking is fuzzed apart, with a token of its own: it could revoke the one in use.
    let second_admin = env.token("fuzz-revoke", "admin");
    let second_header = format!("Authorization: Bearer {second_admin}");
    for (header, methods) in [
        (header.as_str(), ["--exclude-method", "DELETE"]),
        (second_header.as_str(), ["--include-method", "DELETE"]),
    ] {
        let mut command = std::process::Command::new("schemathesis");
        command
            .args(["run", &schema, "-H", header, "--checks", "all"])
            .args(["--max-examples", "40", "--seed", "1", "--no-color"])
            .args(methods)
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(env.path());
        let out = support::run_bounded(command, Duration::from_secs(300));
        assert!(
            out.status.success(),
            "schemathesis (installed by scripts/test.sh) found problems:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn with_json_logs_every_line_on_stderr_is_json() {
    let env = Env::new();
    let token = env.token("ci", "operator");
    let json = [("REARGUARD_LOG_FORMAT", "json"), ("RUST_LOG", "debug")];
    let mut server = env.serve(&json);
    server.call("GET", "/api/v1/apps", Some(&token), None);
    server.call(
        "POST",
        "/api/v1/apps/shop/rollbacks",
        Some(&token),
        Some(&json!({})),
    );
    server.guard.stop();
    let failed = env.run_with_env(&["rollback", "nope", "--yes"], &json);
    assert_eq!(failed.status.code(), Some(2));
    let log = server.log();
    let refusal = stderr(&failed);
    let lines: Vec<&str> = log.lines().chain(refusal.lines()).collect();
    assert!(lines.len() >= 3, "{lines:?}");
    for line in lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
    assert!(log.contains("serving http://"), "{log}");
}

/// The CLI on another host: `--server URL` with the token in REARGUARD_TOKEN, and no
/// config or ledger of its own.
#[test]
fn the_cli_reads_and_acts_through_a_remote_server() {
    let env = Env::builder().bake("3s").build();
    let operator = env.token("laptop", "operator");
    let _guard = env.guard();
    assert_eq!(support::deploy_watch(&env, "v1"), 0);
    assert_eq!(support::deploy_watch(&env, "v2"), 0);
    let server = env.serve(&[]);
    let elsewhere = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", server.port);
    let remote = |args: &[&str], token: &str| {
        let mut command = std::process::Command::new(support::binary());
        command
            .args(args)
            .env("REARGUARD_SERVER", &url)
            .env("REARGUARD_TOKEN", token)
            .current_dir(elsewhere.path())
            .stdin(std::process::Stdio::null());
        support::run_bounded(command, Duration::from_secs(60))
    };
    let out = remote(&["status", "shop", "--json"], &operator);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status[0]["current"]["version"], "v2");

    let refused = remote(&["rollback", "shop", "--yes"], "rgt_00");
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));

    let out = remote(
        &[
            "rollback",
            "shop",
            "--yes",
            "--json",
            "--reason",
            "from afar",
        ],
        &operator,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rollback: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(
        (rollback["to_version"].as_str(), rollback["status"].as_str()),
        (Some("v1"), Some("done"))
    );
    assert_eq!(rollback["requested_by"], "token:laptop");
    assert_eq!(env.traffic(3).0.get("v1"), Some(&3));

    let out = remote(&["incidents", "--json"], &operator);
    let incidents: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let id = incidents[0]["id"].as_i64().unwrap().to_string();
    let out = remote(&["incident", "ack", &id], &operator);
    assert!(
        stdout(&out).contains("acknowledged by token:laptop"),
        "{}",
        stderr(&out)
    );
    let out = remote(&["incident", "show", &id], &operator);
    assert!(stdout(&out).contains("acknowledged"), "{}", stdout(&out));
    // A pipeline on another host deploys and waits for the verdict.
    let out = remote(&["deploy", "shop", "v3", "--watch", "--json"], &operator);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = remote(&["versions", "shop", "--json"], &operator);
    let versions: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let newest = &versions["releases"][0];
    assert_eq!(
        (
            newest["version"].as_str(),
            newest["current"].as_bool(),
            newest["known_good"].as_bool()
        ),
        (Some("v3"), Some(true), Some(true)),
        "{versions}"
    );
    assert_eq!(newest["created_by"], "token:laptop");
    assert_eq!(versions["rollbacks"][0]["reason"], "from afar");
    // Nothing was written where the remote CLI ran.
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

/// `guard --listen`: one process guards and serves; its `/metrics` has the guard's own
/// tick durations and the judge's decisions beside the ledger's figures.
#[test]
fn a_guard_that_serves_exposes_its_ticks_and_decisions() {
    let env = Env::builder().bake("3s").build();
    let port = support::free_port();
    let mut command = std::process::Command::new(support::binary());
    command
        .args([
            "guard",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(env.config())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _guard = support::Guard(command.spawn().unwrap());
    wait_until("the guard serves", Duration::from_secs(20), || {
        support::http(port, "GET", "/health/ready", None, None).0 == 200
    });
    let traffic = env.steady_traffic();
    assert_eq!(support::deploy_watch(&env, "v1"), 0);
    drop(traffic);
    let (status, metrics) = support::http(port, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    for expected in [
        r#"rearguard_guard_tick_seconds_count{app="shop"}"#,
        r#"rearguard_judge_decisions_total{app="shop",decision="keep"}"#,
        "rearguard_ledger_errors_total 0",
        r#"rearguard_releases{app="shop",state="stable"} 1"#,
    ] {
        assert!(metrics.contains(expected), "{expected} in:\n{metrics}");
    }
    // Parsed by rearguard's own exposition parser, as Prometheus would.
    rearguard_exposition::parse(&metrics).expect("valid exposition text");
}
