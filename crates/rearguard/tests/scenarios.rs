//! The judge scored on recorded-style scenarios with the official scorer: the public set in
//! `scenarios/public` (committed with the repository), and a set generated here
//! (bench/gen_scenarios.py, fixed seed).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scenarios() -> PathBuf {
    repository().join("scenarios")
}

/// Runs score.py over `dir` with `rearguard backtest` and returns its JSON summary.
fn score(dir: &Path) -> serde_json::Value {
    let template = format!(
        "{} backtest {{csv}} --meta {{meta}} --json",
        support::binary().display()
    );
    let mut command = std::process::Command::new("python3");
    command
        .arg(scenarios().join("score.py"))
        .arg(dir)
        .arg("--cmd")
        .arg(template)
        .arg("--json");
    let out = support::run_bounded(command, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "score.py failed: {}",
        support::stderr(&out)
    );
    let text = support::stdout(&out);
    println!("{text}");
    serde_json::from_str(text.lines().last().expect("a summary line")).unwrap()
}

#[test]
fn the_public_scenarios_are_judged_without_a_false_rollback() {
    let public = scenarios().join("public");
    assert!(
        public.is_dir(),
        "the public scenarios should be at {}",
        public.display()
    );
    let summary = score(&public);
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["false_rollbacks"], 0, "{summary}");
    assert_eq!(summary["premature"], 0, "{summary}");
    // The target: 22 of 23.
    assert!(summary["detected"].as_u64().unwrap() >= 22, "{summary}");
}

/// A set from bench/gen_scenarios.py drawn with seed 1: `count` scenarios of each family
/// (`families`, or all).
fn generated(count: u32, families: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("python3");
    command
        .arg(repository().join("bench/gen_scenarios.py"))
        .arg(dir.path())
        .args(["--count", &count.to_string(), "--seed", "1"]);
    if let Some(families) = families {
        command.args(["--families", families]);
    }
    let out = support::run_bounded(command, Duration::from_secs(300));
    assert!(out.status.success(), "{}", support::stderr(&out));
    dir
}

#[test]
fn generated_scenarios_are_judged_without_a_false_rollback() {
    let dir = generated(4, None);
    let summary = score(dir.path());
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["false_rollbacks"], 0, "{summary}");
    assert!(
        summary["detected"].as_u64().unwrap() * 10 >= summary["detectable"].as_u64().unwrap() * 8,
        "{summary}"
    );
}

/// bench/ceiling.py bounds what any judge could catch from the scenarios' own data; a judge
/// that caught more, in all or in a class, would show the bound wrong (the judge is held to
/// the same tolerances). The families are those where the bound binds, so a bound set too
/// low shows (one that looked only at the first minute allows 22.3 of the 26 caught here).
#[test]
fn the_judge_catches_no_more_than_the_ceiling_allows() {
    let dir = generated(
        10,
        Some("error_step,delayed,noisy_baseline_small_fault,tail,latency_shift"),
    );
    let mut command = std::process::Command::new("python3");
    command
        .arg(repository().join("bench/ceiling.py"))
        .arg(dir.path())
        .args(["--nats", "5", "--json", "--cmd"])
        .arg(format!(
            "{} backtest {{csv}} --meta {{meta}} --json",
            support::binary().display()
        ));
    let out = support::run_bounded(command, Duration::from_secs(300));
    assert!(out.status.success(), "{}", support::stderr(&out));
    let ceiling: serde_json::Value = serde_json::from_str(support::stdout(&out).trim()).unwrap();
    println!("{ceiling}");
    let classes = ceiling["classes"].as_object().unwrap();
    assert!(classes.len() >= 8, "{ceiling}");
    // The latency part of the bound is an expected count: a judge may be a fault lucky.
    for (class, counts) in std::iter::once(("all", &ceiling)).chain(
        classes
            .iter()
            .map(|(class, counts)| (class.as_str(), counts)),
    ) {
        let judge = counts["judge"].as_f64().unwrap();
        let catchable = counts["catchable"].as_f64().unwrap();
        assert!(
            judge <= catchable + 1.0,
            "{class}: the judge caught {judge}, the bound allows {catchable}"
        );
    }
}
