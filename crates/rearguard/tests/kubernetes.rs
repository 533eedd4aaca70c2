//! The Kubernetes backend against `k8s-double`, a stand-in API server this repository
//! writes (no Kubernetes API server can run on these machines; the double's own docs say
//! what it models and what not). Real HTTP on loopback, real object shapes, the patch kinds
//! as the API server applies them, 409 conflicts, and a small Deployment controller whose
//! rollouts move on their own.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_double::{Double, Image, REVISION};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use rearguard::backends::{Backend, BackendConfig, BackendError, Workdirs};
use serde_json::json;

const NAMESPACE: &str = "shop";
const REPOSITORY: &str = "registry.example/shop-web";

fn image(version: &str) -> String {
    format!("{REPOSITORY}:{version}")
}

/// The app's Deployment as a person applied it: two replicas of `v1`.
fn shop_web(progress_deadline_seconds: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop-web", "labels": {"app": "shop"}},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": progress_deadline_seconds,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {
                "metadata": {"labels": {"app": "shop"}},
                "spec": {"containers": [
                    {"name": "web", "image": image("v1"), "ports": [{"containerPort": 8080}]},
                    {"name": "proxy", "image": "registry.example/proxy:1.4"}
                ]}
            }
        }
    }))
    .unwrap()
}

struct Cluster {
    double: Double,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A double with shop-web at v1 rolled out, and the images the nodes can pull.
    fn start(progress_deadline_seconds: i32) -> Self {
        let double = Double::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), double.kubeconfig(NAMESPACE)).unwrap();
        {
            let mut cluster = double.cluster();
            for version in ["v1", "v2", "bad-v2", "bad-v3"] {
                cluster.add_image(
                    &image(version),
                    Image::Runs(vec![format!("serving {version}")]),
                );
            }
            cluster.add_image("registry.example/proxy:1.4", Image::Runs(vec![]));
            cluster.add_image(
                &image("crashy-v5"),
                Image::Crashes(vec![
                    "starting crashy-v5".into(),
                    "connecting to postgres://shop:hunter2-pass@db:5432/shop".into(),
                    "password K8S_TEST_SECRET_VALUE_123 rejected".into(),
                    "panic: cannot reach the database".into(),
                ]),
            );
            cluster.create_deployment(NAMESPACE, shop_web(progress_deadline_seconds));
        }
        let this = Self { double, dir };
        this.wait_until_rolled_out("v1");
        this
    }

    /// Settled on `tag`: the controller writes no more status that would race a test's counted
    /// patch into a (correctly retried) 409.
    fn wait_until_rolled_out(&self, tag: &str) {
        self.wait_for(|c| {
            c.deployment(NAMESPACE, "shop-web")
                .is_some_and(|d| rolled_out_tag(&d).as_deref() == Some(tag))
        });
    }

    fn backend(&self, more: serde_json::Value) -> Box<dyn Backend> {
        let mut config = json!({
            "kind": "kubernetes",
            "kubeconfig": "kubeconfig",
            "components": {"web": {"deployment": "shop-web", "image": REPOSITORY}},
            "rollout_timeout": "30s",
            "stuck_after": "1s",
        });
        for (key, value) in more.as_object().unwrap() {
            config[key] = value.clone();
        }
        let config: BackendConfig = serde_json::from_value(config).unwrap();
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let dirs = Workdirs {
            config_dir: self.dir.path().to_path_buf(),
            state_dir: self.dir.path().join("state"),
        };
        config.build("shop", dirs)
    }

    fn deployment(&self, name: &str) -> Deployment {
        self.double.cluster().deployment(NAMESPACE, name).unwrap()
    }

    fn template_image(&self, name: &str) -> String {
        self.deployment(name)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap()
    }

    fn service_selector(&self) -> BTreeMap<String, String> {
        self.double
            .cluster()
            .service(NAMESPACE, "shop-web")
            .unwrap()
            .spec
            .unwrap()
            .selector
            .unwrap()
    }

    /// ReplicaSets of shop-web as (revision, web image, replicas), by revision.
    fn history(&self) -> Vec<(i64, String, i32)> {
        let mut history: Vec<(i64, String, i32)> = self
            .double
            .cluster()
            .replica_sets(NAMESPACE)
            .into_iter()
            .map(|rs| {
                let revision = rs.metadata.annotations.unwrap()[REVISION].parse().unwrap();
                let spec = rs.spec.unwrap();
                let image = spec.template.unwrap().spec.unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap();
                (revision, image, spec.replicas.unwrap())
            })
            .collect();
        history.sort();
        history
    }

    /// Whether ready pods of Deployment `name` run `version`.
    fn serves(&self, name: &str, version: &str) -> bool {
        self.double
            .cluster()
            .serving_images(NAMESPACE, name)
            .contains(&image(version))
    }

    /// Sends a patch of shop-web straight to the API, as another client would; its status.
    async fn patch_directly(&self, content_type: &str, patch: serde_json::Value) -> u16 {
        reqwest::Client::new()
            .patch(format!(
                "{}/apis/apps/v1/namespaces/shop/deployments/shop-web",
                self.double.url()
            ))
            .header("content-type", content_type)
            .body(patch.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn requests(&self, prefix: &str) -> usize {
        self.double.cluster().count_requests(prefix)
    }

    fn clear_requests(&self) {
        self.double.cluster().requests.clear();
    }

    fn wait_for(&self, what: impl Fn(&k8s_double::Cluster) -> bool) {
        for _ in 0..200 {
            if what(&self.double.cluster()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the double did not get there in 10 s");
    }
}

#[tokio::test]
async fn a_rolling_deploy_patches_the_image_once_and_waits_for_the_rollout() {
    let cluster = Cluster::start(600);
    let backend = cluster.backend(json!({}));
    backend.check_available("v2").await.unwrap();
    let instances = backend.deploy("v2").await.unwrap();
    assert_eq!(instances.version, "v2");
    assert_eq!(cluster.template_image("shop-web"), image("v2"));
    let status = cluster.deployment("shop-web").status.unwrap();
    assert_eq!(
        (status.updated_replicas, status.available_replicas),
        (Some(2), Some(2))
    );
    assert_eq!(
        cluster.history(),
        vec![(1, image("v1"), 0), (2, image("v2"), 2)]
    );
    assert_eq!(cluster.requests("PATCH"), 1);
    // The sidecar's image is its own: the strategic merge patch changed one container.
    let containers = cluster
        .deployment("shop-web")
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers;
    assert_eq!(
        containers[1].image.as_deref(),
        Some("registry.example/proxy:1.4")
    );
    // What runs is read from the cluster; deploying what runs changes nothing.
    assert!(backend.running("v2").await.is_some());
    assert!(backend.running("v1").await.is_none());
    backend.deploy("v2").await.unwrap();
    assert_eq!(cluster.requests("PATCH"), 1);
}

#[tokio::test]
async fn a_rollback_goes_to_the_known_good_replica_set_across_two_bad_revisions() {
    let cluster = Cluster::start(600);
    let backend = cluster.backend(json!({}));
    backend.deploy("bad-v2").await.unwrap();
    backend.deploy("bad-v3").await.unwrap();
    // The bad release also changed more than its image (as a `kubectl apply` of it would).
    let feature = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "FEATURE_X", "value": "on"}]}
    ]}}}});
    let status = cluster
        .patch_directly("application/strategic-merge-patch+json", feature)
        .await;
    assert_eq!(status, 200);
    cluster.wait_until_rolled_out("bad-v3");
    assert_eq!(cluster.double.cluster().replica_sets(NAMESPACE).len(), 4);
    // `kubectl rollout undo` would take the previous revision: bad-v2.
    let history = cluster.history();
    assert_eq!(
        (history[2].0, &history[2].1),
        (3, &image("bad-v3")),
        "{history:?}"
    );
    cluster.clear_requests();
    backend.rollback("v1").await.unwrap();
    assert_eq!(cluster.template_image("shop-web"), image("v1"));
    // One list of ReplicaSets and one patch (then reads until the rollout is done).
    assert_eq!(
        cluster.requests("GET /apis/apps/v1/namespaces/shop/replicasets"),
        1
    );
    assert_eq!(cluster.requests("PATCH"), 1);
    // v1's own ReplicaSet came back, with the next revision, as the controller does.
    let history = cluster.history();
    assert_eq!(history.len(), 4, "{history:?}");
    assert_eq!(history[3], (5, image("v1"), 2), "{history:?}");
    let deployment = cluster.deployment("shop-web");
    assert_eq!(deployment.metadata.annotations.unwrap()[REVISION], "5");
    // The whole template came back, not only the image.
    let web = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(web.env, None, "{web:?}");
    // Already on the known-good release: a success, no write.
    cluster.clear_requests();
    backend.rollback("v1").await.unwrap();
    assert_eq!(cluster.requests("PATCH"), 0);
}

#[tokio::test]
async fn a_write_that_meets_a_conflict_is_read_again_and_retried() {
    let cluster = Cluster::start(600);
    let backend = cluster.backend(json!({}));
    cluster.double.cluster().conflict_next_writes(2);
    backend.deploy("v2").await.unwrap();
    assert_eq!(cluster.requests("PATCH"), 3);
    assert_eq!(cluster.template_image("shop-web"), image("v2"));
    // A stale resourceVersion is refused by the API server itself, not only by the test hook.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 3}});
    let status = cluster
        .patch_directly("application/merge-patch+json", stale)
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn progress_deadline_exceeded_fails_the_deploy_with_the_conditions_message() {
    let cluster = Cluster::start(1);
    // Pods stuck for longer than the deadline would also fail it; here the deadline speaks.
    let backend = cluster.backend(json!({"stuck_after": "10m"}));
    let error = backend.deploy("v404").await.unwrap_err().to_string();
    assert!(error.contains("ProgressDeadlineExceeded"), "{error}");
    assert!(error.contains("has timed out progressing"), "{error}");
    // The old pods kept serving: nothing was taken down for a rollout that did not come up.
    assert!(cluster.serves("shop-web", "v1"));
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_deploy_once_stuck_for_stuck_after() {
    let cluster = Cluster::start(600);
    let backend = cluster.backend(json!({}));
    let error = backend.deploy("v404").await.unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, BackendError::NotReady { within, .. } if within.as_millis() == 1000),
        "{text}"
    );
    assert!(
        text.contains("ErrImagePull") || text.contains("ImagePullBackOff"),
        "{text}"
    );
    assert!(text.contains("not found"), "{text}");
}

#[tokio::test]
async fn a_paused_deployment_is_refused_with_a_clear_message() {
    let cluster = Cluster::start(600);
    let backend = cluster.backend(json!({}));
    cluster
        .double
        .cluster()
        .set_paused(NAMESPACE, "shop-web", true);
    for outcome in [backend.deploy("v2").await, backend.rollback("v1").await] {
        let error = outcome.unwrap_err().to_string();
        assert!(error.contains("paused"), "{error}");
        assert!(
            error.contains("kubectl rollout resume deployment/shop-web"),
            "{error}"
        );
    }
    assert_eq!(cluster.requests("PATCH"), 0);
}

#[tokio::test]
async fn crash_looping_pods_fail_the_deploy_and_the_incident_keeps_them_redacted() {
    // SAFETY: nextest runs each test in its own process; nothing else reads it.
    unsafe { std::env::set_var("K8S_TEST_DB_PASSWORD", "K8S_TEST_SECRET_VALUE_123") };
    let cluster = Cluster::start(600);
    let backend = cluster.backend(json!({"redact": ["K8S_TEST_DB_PASSWORD"]}));
    let error = backend.deploy("crashy-v5").await.unwrap_err().to_string();
    assert!(error.contains("CrashLoopBackOff"), "{error}");
    let exited = backend.exited("crashy-v5").await;
    assert!(
        exited.iter().any(|e| e.contains("last exit 1 Error")),
        "{exited:?}"
    );
    let capture = backend.capture("crashy-v5").await;
    let state = &capture.state["components"]["web"];
    let troubles = state["pods"].to_string();
    assert!(troubles.contains("CrashLoopBackOff"), "{state}");
    assert!(state["events"].to_string().contains("BackOff"), "{state}");
    assert!(
        state["replica_sets"].as_array().unwrap().len() == 2,
        "{state}"
    );
    let logs: String = capture.logs.values().cloned().collect();
    assert!(logs.contains("panic: cannot reach the database"), "{logs}");
    assert!(!logs.contains("hunter2-pass"), "{logs}");
    assert!(!logs.contains("K8S_TEST_SECRET_VALUE_123"), "{logs}");
    // The old pods still serve while the new ones crash.
    assert!(cluster.serves("shop-web", "v1"));
}

#[tokio::test]
async fn blue_green_runs_a_deployment_per_version_and_switches_the_service_in_one_patch() {
    let cluster = Cluster::start(600);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "shop-web"},
        "spec": {"selector": {"app": "shop"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    cluster.double.cluster().create_service(NAMESPACE, service);
    let backend = cluster.backend(json!({
        "strategy": "bluegreen",
        "components": {"web": {"deployment": "shop-web", "image": REPOSITORY, "service": "shop-web"}},
    }));
    backend.deploy("v1").await.unwrap();
    let selector = cluster.service_selector();
    assert_eq!(selector["rearguard.dev/version"], "v1");
    assert_eq!(selector["app"], "shop");
    backend.deploy("v2").await.unwrap();
    assert_eq!(cluster.service_selector()["rearguard.dev/version"], "v2");
    assert_eq!(cluster.template_image("shop-web-v2"), image("v2"));
    assert!(cluster.serves("shop-web-v1", "v1"));
    // The switch back to the warm version: one patch, of the Service; nothing created.
    cluster.clear_requests();
    backend.rollback("v1").await.unwrap();
    assert_eq!(cluster.service_selector()["rearguard.dev/version"], "v1");
    assert_eq!(
        cluster.requests("PATCH /api/v1/namespaces/shop/services/shop-web"),
        1
    );
    assert_eq!(cluster.requests("PATCH"), 1);
    assert_eq!(cluster.requests("POST"), 0);
    // The replaced version is scaled to zero, kept for a later switch.
    backend.stop("v2").await;
    assert_eq!(
        cluster.deployment("shop-web-v2").spec.unwrap().replicas,
        Some(0)
    );
    assert!(backend.running("v2").await.is_none());
    assert!(backend.running("v1").await.is_some());
}

#[tokio::test]
async fn a_missing_deployment_or_container_is_refused_before_anything_changes() {
    let cluster = Cluster::start(600);
    let backend = cluster.backend(json!({
        "components": {
            "web": {"deployment": "shop-web", "image": REPOSITORY, "container": "nginx"},
            "api": {"deployment": "shop-api", "image": "registry.example/shop-api"},
        },
    }));
    let error = backend.check_available("v2").await.unwrap_err().to_string();
    assert!(
        error.contains("deployment/shop-api does not exist"),
        "{error}"
    );
    assert!(error.contains("no container of that name"), "{error}");
    let error = backend
        .check_available("v1;rm")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("may only hold"), "{error}");
    assert_eq!(cluster.requests("PATCH"), 0);
}

/// The pods' data plane for the guard test: whenever shop-web's rollout is complete, the
/// demo app of its image's tag serves on `port` (failing 30 % of requests for `bad*`), as
/// the cluster's Ingress would. Stopped with its process when dropped.
struct Kubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    fn start(cluster: &Cluster, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let shared = cluster.double.shared();
        let thread = std::thread::spawn(move || {
            let mut serving: Option<(String, Child)> = None;
            // Bounded even if leaked: at most 10 minutes.
            for _ in 0..6000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let deployment = shared.lock().unwrap().deployment(NAMESPACE, "shop-web");
                if let Some(tag) = deployment.as_ref().and_then(rolled_out_tag)
                    && serving.as_ref().is_none_or(|(running, _)| *running != tag)
                {
                    if let Some((_, mut child)) = serving.take() {
                        child.kill().ok();
                        child.wait().ok();
                    }
                    let rate = if tag.starts_with("bad") { "0.3" } else { "0" };
                    let child = Command::new(support::binary())
                        .args([
                            "demo-app",
                            "--version",
                            &tag,
                            "--port",
                            &port.to_string(),
                            "--error-rate",
                            rate,
                        ])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap();
                    serving = Some((tag, child));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some((_, mut child)) = serving.take() {
                child.kill().ok();
                child.wait().ok();
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

/// The web image's tag once a Deployment's rollout is complete.
fn rolled_out_tag(deployment: &Deployment) -> Option<String> {
    let spec = deployment.spec.as_ref()?;
    let status = deployment.status.as_ref()?;
    let replicas = spec.replicas?;
    let done = status.observed_generation >= deployment.metadata.generation
        && status.updated_replicas == Some(replicas)
        && status.available_replicas == Some(replicas)
        && status.replicas == Some(replicas);
    let image = spec.template.spec.as_ref()?.containers[0].image.clone()?;
    done.then(|| image.rsplit_once(':').map(|(_, tag)| tag.to_string()))?
}

/// The whole loop through the guard process: a good release baked, a release whose pods
/// crash refused and the Deployment put back on the known-good template, then an unbaked
/// release replaced by one failing 30 % of its requests (seen by the router in front of the
/// cluster's endpoint), rolled back on its own to the known-good ReplicaSet, with the pods
/// and their logs in the incident.
#[test]
fn the_guard_rolls_a_bad_release_back_on_kubernetes() {
    let cluster = Cluster::start(600);
    let endpoint = support::free_port();
    let _kubelet = Kubelet::start(&cluster, endpoint);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        cluster.double.kubeconfig(NAMESPACE),
    )
    .unwrap();
    let backend = format!(
        "      kind: kubernetes
      kubeconfig: kubeconfig
      components:
        web:
          deployment: shop-web
          image: {REPOSITORY}
          endpoint: 127.0.0.1:{endpoint}
      stuck_after: 2s
      rollout_timeout: 60s
"
    );
    let public = support::free_port();
    let env = support::Env::builder()
        .in_dir(dir, public)
        .backend(&backend)
        .without_checks()
        .bake("15s")
        .build();
    let _guard = env.guard();
    support::wait_until("v1 serves", Duration::from_secs(10), || {
        support::get(endpoint, "/version").is_some()
    });
    let traffic = env.steady_traffic();
    assert_eq!(support::deploy_watch(&env, "v1"), 0);
    // Pods that crash: the deploy fails and the Deployment is put back on v1's template.
    let out = env.run(&["deploy", "shop", "crashy-v5", "--watch"]);
    assert_ne!(out.status.code(), Some(0), "{}", support::stdout(&out));
    assert_eq!(env.state_of("crashy-v5"), "failed");
    cluster.wait_for(|c| {
        c.deployment(NAMESPACE, "shop-web")
            .as_ref()
            .and_then(rolled_out_tag)
            .as_deref()
            == Some("v1")
    });
    // Put back by the failed deploy itself, not found dead and restarted later.
    let events = serde_json::Value::from(env.events()).to_string();
    assert!(!events.contains("instance_restarted"), "{events}");
    // v2 rolls out and is watched, not yet baked; bad-v3 replaces it and serves badly: the
    // judge rolls back to v1's ReplicaSet, the last release that passed its bake, not to
    // v2, the previous revision `kubectl rollout undo` would take.
    assert_eq!(env.run(&["deploy", "shop", "v2"]).status.code(), Some(0));
    support::wait_until("v2 is watched", Duration::from_secs(30), || {
        env.state_of("v2") == "watching"
    });
    // A few seconds of v2's traffic: the baseline bad-v3 is judged against.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(support::deploy_watch(&env, "bad-v3"), 3);
    drop(traffic);
    assert_eq!(cluster.template_image("shop-web"), image("v1"));
    let history = cluster.history();
    let previous = &history[history.len() - 2];
    assert_eq!(previous.1, image("bad-v3"), "{history:?}");
    assert_eq!(history[history.len() - 3].1, image("v2"), "{history:?}");
    let newest = history.last().unwrap();
    assert_eq!(newest.1, image("v1"), "{history:?}");
    assert_eq!(
        history.iter().filter(|(_, i, _)| *i == image("v1")).count(),
        1,
        "{history:?}"
    );
    cluster.wait_for(|c| {
        c.deployment(NAMESPACE, "shop-web")
            .as_ref()
            .and_then(rolled_out_tag)
            .as_deref()
            == Some("v1")
    });
    support::wait_until("v1 answers again", Duration::from_secs(10), || {
        env.traffic(5).0.get("v1") == Some(&5)
    });
    let rollbacks = env.versions_json()["rollbacks"].to_string();
    assert!(rollbacks.contains("error rate"), "{rollbacks}");
    let incident = support::stdout(&env.run(&["incident", "show", "2"]));
    assert!(incident.contains("serving bad-v3"), "{incident}");
    assert!(incident.contains("shop-web"), "{incident}");
}
