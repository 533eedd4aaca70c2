//! A command line that fits its ecosystem: JSON only on stdout with --json, RFC 3339 times,
//! no Rust debug text, exit codes a pipeline can gate on, tables and colours that suit
//! where the output goes, RUST_LOG, completions and a man page.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Env, deploy_watch, stderr, stdout};

fn scenario(name: &str) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/public");
    (
        dir.join(format!("{name}.csv")),
        dir.join(format!("{name}.json")),
    )
}

fn rearguard(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(support::binary());
    command.args(args);
    support::run_bounded(command, Duration::from_secs(60))
}

#[test]
fn backtest_exits_3_on_a_rollback_verdict_so_a_pipeline_can_gate_on_it() {
    for (name, code) in [("delayed-000", 3), ("bursty_same-000", 0)] {
        let (csv, meta) = scenario(name);
        let (csv, meta) = (csv.to_str().unwrap(), meta.to_str().unwrap());
        let out = rearguard(&["backtest", csv, "--meta", meta]);
        assert_eq!(out.status.code(), Some(code), "{name}: {}", stdout(&out));
        // With --json the verdict is data: scorers read it whatever it is.
        let out = rearguard(&["backtest", csv, "--meta", meta, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{name}");
        let verdict: serde_json::Value =
            serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
        let expected = if code == 3 { "rollback" } else { "keep" };
        assert_eq!(verdict["verdict"], expected, "{name}");
    }
}

#[test]
fn json_output_has_rfc3339_times_and_text_output_no_debug_text_or_borders() {
    let env = Env::new();
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert_eq!(deploy_watch(&env, "sick-v2"), 3);
    let versions = env.versions_json();
    for time in [
        &versions["releases"][0]["created_at"],
        &versions["rollbacks"][0]["requested_at"],
    ] {
        let text = time.as_str().unwrap_or_else(|| panic!("not text: {time}"));
        text.parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("{text}: {e}"));
    }
    let out = env.run(&["incident", "show", "1"]);
    let text = stdout(&out);
    assert!(text.contains("[P2, mitigated]"), "{text}");
    // The bad version's platform state and log lines are kept with the incident.
    assert!(
        text.contains("last log lines of web:")
            && text.contains("demo-app sick-v2 listening on 127.0.0.1:"),
        "{text}"
    );
    let out = env.run(&["versions", "shop"]);
    let table = stdout(&out);
    assert!(
        table.contains("rolled_back") && table.contains("known-good"),
        "{table}"
    );
    assert!(
        !table.contains('│') && !table.contains('─'),
        "no borders when not on a terminal:\n{table}"
    );
    let out = env.run(&["report"]);
    assert!(
        stdout(&out).contains("incidents: 1 (P2: 1)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn waits_end_at_their_timeout_with_exit_code_5_and_progress_goes_to_stderr_as_lines() {
    let env = Env::builder().bake("30s").build();
    let _guard = env.guard();
    let out = env.run(&["deploy", "shop", "v1", "--watch", "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let progress = stderr(&out);
    assert!(progress.contains("shop v1: "), "progress lines: {progress}");
    assert!(
        progress.contains("still watching after 3s; the guard goes on"),
        "{progress}"
    );
    assert_eq!(env.state_of("v1"), "watching", "the guard goes on");
}

#[test]
fn colour_follows_the_choice_and_rust_log_is_honoured() {
    let env = Env::new();
    let run = |args: &[&str], vars: &[(&str, &str)]| {
        let mut command = Command::new(support::binary());
        command
            .args(args)
            .arg("--config")
            .arg(env.config())
            .envs(vars.iter().copied());
        stderr(&support::run_bounded(command, Duration::from_secs(30)))
    };
    let logs = run(&["versions", "shop"], &[("RUST_LOG", "sqlx=debug")]);
    assert!(
        logs.contains("SELECT"),
        "RUST_LOG shows sqlx's queries: {logs}"
    );
    assert!(!logs.contains('\u{1b}'), "no colour off a terminal");
    let coloured = run(
        &["--color", "always", "versions", "shop"],
        &[("RUST_LOG", "sqlx=debug")],
    );
    assert!(coloured.contains('\u{1b}'), "--color always: {coloured}");
    let never = run(
        &["--color", "never", "versions", "shop"],
        &[("RUST_LOG", "sqlx=debug"), ("REARGUARD_COLOR", "always")],
    );
    assert!(
        !never.contains('\u{1b}'),
        "the flag wins over the environment"
    );
}

#[test]
fn completions_and_a_man_page_are_generated() {
    let out = rearguard(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("_rearguard()"), "{}", stdout(&out));
    let out = rearguard(&["completions", "zsh"]);
    assert!(stdout(&out).contains("#compdef rearguard"));
    let out = rearguard(&["man"]);
    assert!(out.status.success());
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH rearguard"),
        "{page}"
    );
    assert!(page.contains("rollback"), "subcommands are listed");
}

#[test]
fn the_demo_app_exposes_its_requests_and_latency_in_the_prometheus_format() {
    use std::io::{Read, Write};
    let port = support::free_port();
    let mut app = Command::new(support::binary())
        .args(["demo-app", "--version", "v7", "--error-rate", "0.5"])
        .args(["--port", &port.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    support::wait_until("the demo app answers", Duration::from_secs(10), || {
        support::get(port, "/health").is_some()
    });
    for _ in 0..10 {
        support::get(port, "/").unwrap();
    }
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut metrics = String::new();
    stream.read_to_string(&mut metrics).unwrap();
    let _ = app.kill();
    let _ = app.wait();
    for line in [
        r#"http_requests_total{version="v7",code="200"} 5"#,
        r#"http_requests_total{version="v7",code="500"} 5"#,
        r#"http_request_duration_seconds_count{version="v7"} 10"#,
        "# EOF",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
    // Buckets at the judge's own bounds, every request within the last.
    let bucket = |le: &str| {
        metrics.lines().find(|l| {
            l.starts_with("http_request_duration_seconds_bucket{")
                && l.contains(&format!("le=\"{le}\""))
                && l.contains(r#"version="v7""#)
        })
    };
    assert!(bucket("0.005").is_some(), "{metrics}");
    assert!(
        bucket("+Inf").is_some_and(|l| l.ends_with(" 10")),
        "{metrics}"
    );
}
