//! The command-hook backend, against a pretend platform (a script serving one version of the
//! demo app on a fixed port, switched in place): deploy and rollback hooks run with only
//! the environment the config names, a bad release is rolled back through the rollback
//! hook, an unavailable version is refused by the availability hook, the current hook tells
//! a restarted guard what is live, and the hooks' output is kept with the incident.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use support::{Env, deploy_watch, stderr, stdout};

/// The pretend platform: `platform.sh ACTION [VERSION]`.
const PLATFORM: &str = r#"#!/bin/sh
set -e
case "$1" in
  deploy|rollback)
    echo "$1 $2" >> hooks.log
    env | sort > hook-env.txt
    if [ -f platform.pid ]; then kill "$(cat platform.pid)" 2>/dev/null || true; fi
    case "$2" in bad*) rate=0.3;; *) rate=0;; esac
    "$EXE" demo-app --version "$2" --port "$PORT" --error-rate "$rate" > platform-app.log 2>&1 &
    echo $! > platform.pid
    echo "$2" > platform.current
    echo "promoted $2 with token $PLATFORM_TOKEN"
    ;;
  current) cat platform.current ;;
  available)
    case "$2" in missing*) echo "no build of $2 on the platform"; exit 1;; esac ;;
esac
"#;

fn hooks_env() -> (Env, u16) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("platform.sh");
    std::fs::write(&script, PLATFORM).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (public, platform) = (support::free_port(), support::free_port());
    let backend = format!(
        "      kind: command
      deploy: [\"./platform.sh\", \"deploy\", \"{{version}}\"]
      rollback: [\"./platform.sh\", \"rollback\", \"{{version}}\"]
      current: [\"./platform.sh\", \"current\"]
      available: [\"./platform.sh\", \"available\", \"{{version}}\"]
      env:
        EXE: \"{exe}\"
        PORT: \"{platform}\"
        PLATFORM_TOKEN: \"${{PLATFORM_TOKEN}}\"
      endpoints:
        web: 127.0.0.1:{platform}
      timeout: 20s
",
        exe = support::binary().display()
    );
    let env = Env::builder()
        .in_dir(dir, public)
        .backend(&backend)
        .without_checks()
        .build();
    (env, platform)
}

const SECRETS: [(&str, &str); 2] = [
    ("PLATFORM_TOKEN", "pl4tform-t0ken-s3cret"),
    ("SLACK_WEBHOOK_URL", "https://hooks.example/not-for-hooks"),
];

#[test]
fn a_bad_release_on_a_hook_driven_platform_is_rolled_back_through_the_rollback_hook() {
    let (env, _) = hooks_env();
    let mut guard = env.guard_with_env(&SECRETS);
    let traffic = env.steady_traffic();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(deploy_watch(&env, "bad-v2"), 3);
    drop(traffic);
    let log = std::fs::read_to_string(env.path().join("hooks.log")).unwrap();
    assert_eq!(log, "deploy v1\ndeploy bad-v2\nrollback v1\n");
    assert_eq!(env.traffic(5).0.get("v1"), Some(&5));
    // Hooks get what their config names, not the guard's secrets.
    let hook_env = std::fs::read_to_string(env.path().join("hook-env.txt")).unwrap();
    assert!(
        hook_env.contains("PLATFORM_TOKEN=pl4tform-t0ken-s3cret"),
        "{hook_env}"
    );
    assert!(hook_env.contains("REARGUARD_VERSION=v1"), "{hook_env}");
    assert!(!hook_env.contains("not-for-hooks"), "{hook_env}");
    // The incident keeps the hooks' output, the token redacted.
    let out = env.run(&["incident", "show", "1"]);
    let text = stdout(&out);
    assert!(text.contains("promoted bad-v2 with token ***"), "{text}");
    assert!(!text.contains("pl4tform-t0ken-s3cret"), "{text}");
    // A restarted guard asks the platform what is live and redeploys nothing.
    guard.kill_hard();
    let _guard = env.guard_with_env(&SECRETS);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let log = std::fs::read_to_string(env.path().join("hooks.log")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
}

#[test]
fn a_version_the_platform_does_not_have_is_refused_with_its_hooks_words() {
    let (env, _) = hooks_env();
    let _guard = env.guard_with_env(&SECRETS);
    let out = env.run(&["deploy", "shop", "missing-v3"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no build of missing-v3 on the platform"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.state_of("missing-v3"), "");
}
