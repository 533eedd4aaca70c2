//! Bad input gets a one-line clear error and a non-zero exit, and changes nothing.

mod support;

use support::{Env, stderr, stdout};

fn one_line(text: &str) -> &str {
    let trimmed = text.trim_end();
    assert!(!trimmed.is_empty(), "expected an error message");
    assert_eq!(
        trimmed.lines().count(),
        1,
        "error should be one line: {trimmed:?}"
    );
    trimmed
}

#[test]
fn a_malformed_config_names_file_line_and_column() {
    let env = Env::new();
    let text = std::fs::read_to_string(env.config())
        .unwrap()
        .replace("    bake: 6s", "    bake: 6s\n    colour: blue");
    std::fs::write(env.config(), text).unwrap();
    let out = env.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    let message = one_line(&stderr(&out)).to_string();
    assert!(message.contains("rearguard.yaml:4:5"), "{message}");
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn validate_reports_every_semantic_problem_at_once() {
    let env = Env::new();
    let text = std::fs::read_to_string(env.config())
        .unwrap()
        .replace("warmup: 2s", "warmup: 2s\n      p95_ratio: 0.5")
        .replace("name: health", "name: health\n        component: nope");
    std::fs::write(env.config(), text).unwrap();
    let out = env.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert_eq!(message.trim_end().lines().count(), 2, "{message}");
    assert!(message.contains("unknown component"), "{message}");
    assert!(message.contains("p95_ratio"), "{message}");
}

#[test]
fn a_good_config_validates() {
    let env = Env::new();
    let out = env.run(&["validate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok (1 app(s), 1 component(s))"));
}

#[test]
fn unknown_app_and_unsafe_versions_are_refused_before_anything_is_recorded() {
    let env = Env::new();
    let out = env.run(&["deploy", "nope", "v1", "--watch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line(&stderr(&out)).contains("unknown app \"nope\""));
    for version in ["v1;rm -rf /", "$(id)", "../v1", ".v1", "a b", "v1\nv2"] {
        let out = env.run(&["deploy", "shop", version, "--watch"]);
        assert_eq!(out.status.code(), Some(2), "{version}");
        assert!(
            one_line(&stderr(&out)).contains("invalid version"),
            "{version}: {}",
            stderr(&out)
        );
    }
    let versions = env.versions_json();
    assert_eq!(
        versions["releases"].as_array().unwrap().len(),
        0,
        "nothing recorded"
    );
}

#[test]
fn deploy_without_a_guard_and_without_watch_says_what_to_do() {
    let env = Env::new();
    let out = env.run(&["deploy", "shop", "v1"]);
    assert_eq!(out.status.code(), Some(2));
    let message = one_line(&stderr(&out)).to_string();
    assert!(
        message.contains("rearguard guard") && message.contains("--watch"),
        "{message}"
    );
    assert_eq!(env.versions_json()["releases"].as_array().unwrap().len(), 0);
}

#[test]
fn rollback_of_an_app_with_no_release_is_refused() {
    let env = Env::new();
    let out = env.run(&["rollback", "shop", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line(&stderr(&out)).contains("no current release"));
}

#[test]
fn a_read_only_database_is_a_clear_error() {
    let env = Env::new();
    assert!(env.run(&["status"]).status.success());
    let db = env.path().join(".rearguard/rearguard.db");
    // Root ignores file modes: make the database read-only through the URL instead when
    // permissions would not stop us.
    let mut permissions = std::fs::metadata(&db).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o444);
    std::fs::set_permissions(&db, permissions).unwrap();
    let config = std::fs::read_to_string(env.config()).unwrap();
    std::fs::write(
        env.config(),
        format!("database: \"sqlite://{}?mode=ro\"\n{config}", db.display()),
    )
    .unwrap();
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let message = one_line(&stderr(&out)).to_string();
    assert!(message.contains("read-only"), "{message}");
}

#[test]
fn the_demo_refuses_a_port_in_use() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut command = std::process::Command::new(support::binary());
    command.args(["demo", "--port", &port]);
    let out = support::run_bounded(command, std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let message = one_line(&stderr(&out)).to_string();
    assert!(
        message.contains(&port) && message.contains("another process"),
        "{message}"
    );
}

#[test]
fn backtest_names_the_line_of_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.json");
    std::fs::write(
        &meta,
        r#"{"mode": "bluegreen", "deploy_at": 1, "step_seconds": 1}"#,
    )
    .unwrap();
    let header = "t,version,requests,errors,le_5,le_10,le_25,le_50,le_100,le_250,le_500,le_1000,le_2500,le_5000,le_10000,le_inf";
    let good = "0,baseline,2,0,0,1,2,2,2,2,2,2,2,2,2,2";
    let cases = [
        (
            "t,version,requests\n0,baseline,1\n",
            ":1: missing column(s) errors",
        ),
        (
            &*format!("{header}\n{good}\n1,baseline,x,0,0,0,0,0,0,0,0,0,0,0,0,0\n"),
            ":3: column requests must be a whole number",
        ),
        (
            &*format!("{header}\n{good}\n1,candidate,2,0,0,2,1,2,2,2,2,2,2,2,2,2\n"),
            ":3: latency buckets must not decrease",
        ),
        (
            &*format!(
                "{header}\n{good}\n5,candidate,2,0,0,1,2,2,2,2,2,2,2,2,2,2\n3,candidate,2,0,0,1,2,2,2,2,2,2,2,2,2,2\n"
            ),
            ":4: time goes backwards",
        ),
        (
            &*format!("{header}\n0,nobody,2,0,0,1,2,2,2,2,2,2,2,2,2,2\n"),
            ":2: version must be baseline or candidate",
        ),
    ];
    for (csv, expected) in cases {
        let path = dir.path().join("traffic.csv");
        std::fs::write(&path, csv).unwrap();
        let mut command = std::process::Command::new(support::binary());
        command
            .arg("backtest")
            .arg(&path)
            .arg("--meta")
            .arg(&meta)
            .arg("--json");
        let out = support::run_bounded(command, std::time::Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{expected}");
        assert!(
            one_line(&stderr(&out)).contains(expected),
            "expected {expected:?} in {}",
            stderr(&out)
        );
    }
}

#[test]
fn read_only_commands_do_not_need_the_apps_secrets_but_validate_and_guard_do() {
    let env = Env::builder()
        .component_env("API_TOKEN", "${SHOP_API_TOKEN}")
        .build();
    for args in [
        vec!["versions", "shop"],
        vec!["status"],
        vec!["incidents"],
        vec!["events", "shop"],
    ] {
        let out = env.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = env.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    let message = one_line(&stderr(&out)).to_string();
    assert!(
        message.contains("rearguard.yaml:11:13: environment variable SHOP_API_TOKEN is not set"),
        "at the env key: {message}"
    );
    let out = env.run(&["guard"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("SHOP_API_TOKEN"), "{}", stderr(&out));
}

#[test]
fn the_guard_refuses_to_start_with_notifications_that_page_no_one() {
    let env = Env::builder()
        .top_level(
            "notifications:
  channels:
    oncall: {kind: webhook, url: \"http://127.0.0.1:9/hook\"}
  escalation:
    - after: 0m
      channels: [on-call]
",
        )
        .build();
    for command in ["validate", "guard"] {
        let out = env.run(&[command]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        let message = stderr(&out);
        assert!(
            message.contains("unknown channel \"on-call\"")
                && message.contains("channel oncall is in no escalation level"),
            "{command}: {message}"
        );
    }
}
