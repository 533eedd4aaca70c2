//! The Docker Compose backend against this machine's Docker Engine, with images built from
//! local files: blue-green behind the router (good deploy, automatic and manual rollback,
//! a missing image refused, a killed container restarted, a guard restart under load),
//! in place, and the documented example (examples/compose/run.sh).

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use support::{ComposeApp, Env, deploy_watch, stderr, stdout, wait_until};

/// An env whose app runs through compose (in place when `in_place`).
fn compose_env(app: &ComposeApp, in_place: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let published = in_place.then(support::free_port);
    app.write_compose_file(dir.path(), published);
    Env::builder()
        .in_dir(dir, port)
        .backend(&app.backend(published))
        .bake("8s")
        .build()
}

#[test]
fn blue_green_compose_deploys_rolls_back_and_refuses_a_missing_image() {
    let app = ComposeApp::build();
    let env = compose_env(&app, false);
    let _guard = env.guard();
    let traffic = env.steady_traffic();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert_eq!(env.state_of("v1"), "stable");
    std::thread::sleep(Duration::from_secs(3));
    // v2 fails 30 % of its requests: rolled back automatically.
    assert_eq!(deploy_watch(&env, "v2"), 3);
    assert_eq!(env.traffic(10).0.get("v1"), Some(&10));
    drop(traffic);
    // The incident keeps the bad version's container log.
    let out = env.run(&["incident", "show", "1"]);
    assert!(
        stdout(&out).contains("demo-app v2 listening on 0.0.0.0:8080"),
        "{}",
        stdout(&out)
    );
    // The bad version's project is taken down after the rollback.
    wait_until("only v1 runs", Duration::from_secs(30), || {
        app.containers().iter().all(|name| name.contains("-v1"))
    });
    // A version whose image does not exist is refused before anything is recorded.
    let before = app.containers();
    let out = env.run(&["deploy", "shop", "v9"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("version v9 does not exist or is incomplete")
            && message.contains(&format!("image {}:v9 of service web", app.image)),
        "{message}"
    );
    assert_eq!(env.state_of("v9"), "", "nothing recorded");
    assert_eq!(app.containers(), before, "nothing changed");
}

#[test]
fn blue_green_compose_rolls_back_by_hand_and_restarts_a_killed_container() {
    let app = ComposeApp::build();
    let env = compose_env(&app, false);
    let _guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    // The engine's own figures (docker stats) for the serving version's containers.
    wait_until("status shows v1's usage", Duration::from_secs(30), || {
        stdout(&env.run(&["status", "shop"])).contains("v1: CPU ")
    });
    assert_eq!(deploy_watch(&env, "v3"), 0);
    let out = env.run(&["rollback", "shop", "v1", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("v1 serves", Duration::from_secs(20), || {
        env.traffic(5).0.get("v1") == Some(&5)
    });
    let container = app
        .containers()
        .into_iter()
        .find(|name| name.contains("-v1"))
        .expect("v1's container");
    let out = std::process::Command::new("docker")
        .args(["kill", &container])
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_until("v1 serves again", Duration::from_secs(60), || {
        env.request() == Some((200, "v1".into()))
    });
    assert!(
        env.events()
            .iter()
            .any(|e| e["kind"] == "instance_restarted"),
        "{:?}",
        env.events()
    );
}

#[test]
fn a_guard_restarted_under_load_over_compose_fails_no_request() {
    let app = ComposeApp::build();
    let env = compose_env(&app, false);
    let guard = env.guard();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    let _guard = support::restart_guard_under_load(&env, guard);
}

#[test]
fn in_place_compose_rolls_a_bad_release_back_with_the_known_good_tag() {
    let app = ComposeApp::build();
    let env = compose_env(&app, true);
    let _guard = env.guard();
    let traffic = env.steady_traffic();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(deploy_watch(&env, "v2"), 3);
    drop(traffic);
    wait_until("v1 serves", Duration::from_secs(30), || {
        env.traffic(5).0.get("v1") == Some(&5)
    });
    assert_eq!(app.containers().len(), 1, "one project, in place");
}

#[test]
fn the_documented_compose_example_rolls_the_bad_release_back() {
    let repository = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = std::process::Command::new(repository.join("examples/compose/run.sh"));
    command
        .arg(support::binary())
        .env("DEMO_IMAGE", format!("rgexample-{}", std::process::id()))
        .env("DEMO_PORT", support::free_port().to_string());
    let out = support::run_bounded(command, Duration::from_secs(300));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("v2: ROLLED BACK to v1")
            || stderr(&out).contains("ROLLED BACK to v1")
    );
}
