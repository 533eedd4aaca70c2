//! A stand-in for a Kubernetes API server, for testing rearguard's Kubernetes backend on
//! machines where no cluster can run. It serves the endpoints that backend calls, over real
//! HTTP on loopback, with real object shapes (k8s-openapi's types), and runs a small
//! Deployment controller and kubelet so rollouts move forward as they do in a cluster.
//!
//! What it models:
//! - Deployments (get, list, create, patch, replace), ReplicaSets (list), Services (get,
//!   patch), Pods (list, log), Events (list); `labelSelector` with `k=v` terms.
//! - JSON merge patch (RFC 7386), JSON patch (RFC 6902, `test` included) and strategic merge
//!   patch for the lists a pod template has (containers, env, ports, volumes... merged by
//!   their key; other lists replaced). `metadata.resourceVersion` in a patch or a replace is
//!   a precondition: a stale one is refused with 409 Conflict, as the API server does.
//!   `metadata.generation` moves when the spec changes; `spec.selector` is immutable.
//! - The Deployment controller: one ReplicaSet per pod template (`pod-template-hash`),
//!   `deployment.kubernetes.io/revision` (a template coming back takes the next revision),
//!   the old ReplicaSets scaled down once the new one's pods are ready, status
//!   (observedGeneration, replicas, updated, ready, available), the Progressing condition
//!   with `ProgressDeadlineExceeded`, paused Deployments left alone.
//! - The kubelet: a pod of an image the test registered becomes ready after a moment; an
//!   unknown image stays in `ErrImagePull`/`ImagePullBackOff`, a crashing one in
//!   `CrashLoopBackOff` with restarts and its last termination; Events say so.
//!
//! What it does not model: watches, authentication and RBAC, field selectors, set-based
//! label selectors, strategic-merge directives (`$patch`, `$retainKeys`), server-side
//! apply, admission, maxSurge/maxUnavailable arithmetic (a rollout brings the whole new
//! ReplicaSet up, then takes the old ones down), minReadySeconds, garbage collection of
//! ReplicaSets beyond `revisionHistoryLimit`, and any other kind of object.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus,
};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Event,
    ObjectReference, Pod, PodSpec, PodStatus, PodTemplateSpec, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Value, json};
use sha2::Digest;

/// The revision annotation the Deployment controller writes on Deployments and ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const TEMPLATE_HASH: &str = "pod-template-hash";

/// A running double: its address, and the cluster behind it for the test to arrange and
/// inspect. Stops when dropped.
pub struct Double {
    address: SocketAddr,
    cluster: Arc<Mutex<Cluster>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Double {
    /// Starts one on a free loopback port, on its own thread (usable from sync and async
    /// tests alike).
    pub fn start() -> Self {
        let cluster = Arc::new(Mutex::new(Cluster::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, address) = std::sync::mpsc::channel();
        let shared = cluster.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                bound.send(listener.local_addr().expect("address")).ok();
                let ticking = shared.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        ticking.lock().expect("lock").reconcile(Instant::now());
                    }
                });
                axum::serve(listener, routes(shared))
                    .with_graceful_shutdown(async {
                        stopped.await.ok();
                    })
                    .await
                    .ok();
            });
        });
        let address = address.recv().expect("the double starts");
        Self {
            address,
            cluster,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig whose context `double` points at this server.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {url}\n\
             users:\n- name: tester\n  user:\n    token: double-token\n\
             contexts:\n- name: double\n  context:\n    cluster: double\n    user: tester\n    namespace: {namespace}\n\
             current-context: double\n",
            url = self.url()
        )
    }

    /// The cluster, for a thread of the test that follows it (a stand-in data plane).
    pub fn shared(&self) -> Arc<Mutex<Cluster>> {
        self.cluster.clone()
    }

    /// Arranges or inspects the cluster.
    pub fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().expect("lock")
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

/// How the kubelet runs an image.
#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// Starts and becomes ready; logs these lines.
    Runs(Vec<String>),
    /// Starts, logs these lines, exits 1, and is restarted with back-off.
    Crashes(Vec<String>),
}

/// The objects, the images the nodes can pull, and every request the server answered.
#[derive(Default)]
pub struct Cluster {
    version: u64,
    deployments: BTreeMap<Key, Deployment>,
    replica_sets: BTreeMap<Key, ReplicaSet>,
    services: BTreeMap<Key, Service>,
    pods: BTreeMap<Key, PodRun>,
    events: Vec<Event>,
    images: BTreeMap<String, Image>,
    /// When each Deployment last made progress (for its deadline).
    progress: BTreeMap<Key, Instant>,
    conflicts: usize,
    /// "METHOD path?query", in order.
    pub requests: Vec<String>,
}

type Key = (String, String);

struct PodRun {
    pod: Pod,
    started: Instant,
}

/// Pods become ready this long after they are created.
const READY_AFTER: Duration = Duration::from_millis(300);

impl Cluster {
    /// An image the nodes can pull, and how it runs.
    pub fn add_image(&mut self, image: &str, how: Image) {
        self.images.insert(image.to_string(), how);
    }

    /// Creates a Deployment (defaults filled in as the API server does).
    pub fn create_deployment(&mut self, namespace: &str, deployment: Deployment) {
        let key = (namespace.to_string(), name_of(&deployment.metadata));
        let created = self.admit_deployment(namespace, deployment, None);
        self.deployments.insert(key, created);
    }

    pub fn create_service(&mut self, namespace: &str, mut service: Service) {
        self.version += 1;
        service.metadata.namespace = Some(namespace.to_string());
        service.metadata.resource_version = Some(self.version.to_string());
        service.metadata.uid = Some(format!("uid-{}", self.version));
        self.services
            .insert((namespace.to_string(), name_of(&service.metadata)), service);
    }

    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        self.deployments
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<Service> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn replica_sets(&self, namespace: &str) -> Vec<ReplicaSet> {
        self.replica_sets
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, rs)| rs.clone())
            .collect()
    }

    /// The images the ready pods of Deployment `name` run: what serves.
    pub fn serving_images(&self, namespace: &str, name: &str) -> BTreeSet<String> {
        let Some(deployment) = self.deployment(namespace, name) else {
            return BTreeSet::new();
        };
        let uid = deployment.metadata.uid.unwrap_or_default();
        self.pods
            .values()
            .filter(|run| {
                pod_ready(&run.pod) && owner_uid_of_pod(self, &run.pod) == Some(uid.clone())
            })
            .flat_map(|run| {
                containers(&run.pod.spec)
                    .into_iter()
                    .filter_map(|c| c.image)
            })
            .collect()
    }

    /// Pauses or resumes a Deployment, as `kubectl rollout pause` does.
    pub fn set_paused(&mut self, namespace: &str, name: &str, paused: bool) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(mut deployment) = self.deployments.get(&key).cloned() {
            deployment.spec.get_or_insert_default().paused = Some(paused);
            let before = self.deployments.get(&key).cloned();
            let admitted = self.admit_deployment(namespace, deployment, before.as_ref());
            self.deployments.insert(key, admitted);
        }
    }

    /// The next `count` writes find the object changed since it was read (409), as when
    /// someone else writes it in between.
    pub fn conflict_next_writes(&mut self, count: usize) {
        self.conflicts = count;
    }

    /// Requests whose line starts with `prefix` ("PATCH", "GET /apis/apps/v1/...").
    pub fn count_requests(&self, prefix: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    /// A write's optimistic concurrency: a resourceVersion in the new object that is not
    /// the stored one (or a conflict the test arranged) is refused with 409.
    fn precondition(
        &mut self,
        kind: &str,
        name: &str,
        new: &Value,
        stored: &ObjectMeta,
    ) -> Option<Response> {
        let stated = new
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        let stale = stated.is_some_and(|v| Some(v) != stored.resource_version.as_deref());
        let arranged = self.conflicts > 0;
        self.conflicts = self.conflicts.saturating_sub(1);
        (arranged || stale).then(|| conflict(kind, name))
    }

    /// Defaults, generation, resource version, uid: what the API server adds on a write.
    fn admit_deployment(
        &mut self,
        namespace: &str,
        mut deployment: Deployment,
        before: Option<&Deployment>,
    ) -> Deployment {
        self.version += 1;
        let meta = &mut deployment.metadata;
        meta.namespace = Some(namespace.to_string());
        meta.resource_version = Some(self.version.to_string());
        let spec = deployment.spec.get_or_insert_default();
        spec.replicas.get_or_insert(1);
        spec.progress_deadline_seconds.get_or_insert(600);
        spec.revision_history_limit.get_or_insert(10);
        match before {
            None => {
                deployment.metadata.uid = Some(format!("uid-{}", self.version));
                deployment.metadata.generation = Some(1);
            }
            Some(before) => {
                let changed = serde_json::to_value(&before.spec).ok()
                    != serde_json::to_value(&deployment.spec).ok();
                deployment.metadata.uid = before.metadata.uid.clone();
                deployment.metadata.generation =
                    Some(before.metadata.generation.unwrap_or(1) + i64::from(changed));
                deployment.status = before.status.clone();
            }
        }
        deployment
    }

    /// One pass of the Deployment controller and the kubelet.
    fn reconcile(&mut self, now: Instant) {
        let keys: Vec<Key> = self.deployments.keys().cloned().collect();
        for key in keys {
            self.reconcile_deployment(&key, now);
        }
        self.run_pods(now);
    }

    fn owned_replica_sets(&self, uid: &str) -> Vec<Key> {
        self.replica_sets
            .iter()
            .filter(|(_, rs)| owner_uid(&rs.metadata).as_deref() == Some(uid))
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn reconcile_deployment(&mut self, key: &Key, now: Instant) {
        let Some(mut deployment) = self.deployments.get(key).cloned() else {
            return;
        };
        let before = serde_json::to_value(&deployment).ok();
        let uid = deployment.metadata.uid.clone().unwrap_or_default();
        let spec = deployment.spec.clone().unwrap_or_default();
        let desired = spec.replicas.unwrap_or(1);
        let template = spec.template.clone();
        let owned = self.owned_replica_sets(&uid);
        let revision_of = |rs: &ReplicaSet| -> i64 {
            annotation(&rs.metadata, REVISION)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0)
        };
        let max_revision = owned
            .iter()
            .map(|k| revision_of(&self.replica_sets[k]))
            .max()
            .unwrap_or(0);
        let matching = owned
            .iter()
            .find(|k| {
                without_hash(
                    &self.replica_sets[k]
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.clone())
                        .unwrap_or_default(),
                ) == without_hash(&template)
            })
            .cloned();
        let mut status = deployment.status.clone().unwrap_or_default();
        status.observed_generation = deployment.metadata.generation;
        if spec.paused == Some(true) {
            set_condition(
                &mut status,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
            );
            deployment.status = Some(status);
            self.store_if_changed(key, deployment, before);
            return;
        }
        let new_key = match matching {
            Some(found) => {
                let rs = self.replica_sets.get_mut(&found).expect("owned");
                if revision_of(rs) < max_revision {
                    // A template coming back (a rollback) takes the next revision.
                    let old = annotation(&rs.metadata, REVISION).unwrap_or_default();
                    let annotations = rs.metadata.annotations.get_or_insert_default();
                    annotations.insert(REVISION.into(), (max_revision + 1).to_string());
                    annotations.insert("deployment.kubernetes.io/revision-history".into(), old);
                    self.progress.insert(key.clone(), now);
                }
                found
            }
            None => {
                let hash = template_hash(&template);
                let name = format!("{}-{hash}", key.1);
                let mut rs_template = template.clone();
                rs_template
                    .metadata
                    .get_or_insert_default()
                    .labels
                    .get_or_insert_default()
                    .insert(TEMPLATE_HASH.into(), hash.clone());
                let mut selector = spec.selector.clone();
                selector
                    .match_labels
                    .get_or_insert_default()
                    .insert(TEMPLATE_HASH.into(), hash.clone());
                let mut annotations = deployment.metadata.annotations.clone().unwrap_or_default();
                annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
                annotations.insert(REVISION.into(), (max_revision + 1).to_string());
                annotations.insert(
                    "deployment.kubernetes.io/desired-replicas".into(),
                    desired.to_string(),
                );
                self.version += 1;
                let rs = ReplicaSet {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(key.0.clone()),
                        uid: Some(format!("uid-{}", self.version)),
                        resource_version: Some(self.version.to_string()),
                        labels: rs_template.metadata.as_ref().and_then(|m| m.labels.clone()),
                        annotations: Some(annotations),
                        owner_references: Some(vec![OwnerReference {
                            api_version: "apps/v1".into(),
                            kind: "Deployment".into(),
                            name: key.1.clone(),
                            uid: uid.clone(),
                            controller: Some(true),
                            block_owner_deletion: Some(true),
                        }]),
                        ..Default::default()
                    },
                    spec: Some(ReplicaSetSpec {
                        replicas: Some(0),
                        selector,
                        template: Some(rs_template),
                        min_ready_seconds: None,
                    }),
                    status: None,
                };
                let rs_key = (key.0.clone(), name.clone());
                self.replica_sets.insert(rs_key.clone(), rs);
                self.event(
                    &key.0,
                    "Deployment",
                    &key.1,
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {name} from 0 to {desired}"),
                );
                self.progress.insert(key.clone(), now);
                rs_key
            }
        };
        // The new ReplicaSet at full size; the old ones down once it is all ready.
        self.scale(&new_key, desired as usize, now);
        let new_ready = self.ready_pods(&new_key);
        for old in owned.iter().filter(|k| **k != new_key) {
            if new_ready >= desired as usize && self.pods_of(old).count() > 0 {
                self.scale(old, 0, now);
                self.event(
                    &key.0,
                    "Deployment",
                    &key.1,
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Scaled down replica set {} to 0", old.1),
                );
            }
        }
        // Every pod of the Deployment, the ReplicaSet this pass created among them.
        let all: Vec<bool> = self
            .owned_replica_sets(&uid)
            .iter()
            .flat_map(|k| self.pods_of(k).map(|p| pod_ready(&p.pod)))
            .collect();
        let ready = all.iter().filter(|ready| **ready).count() as i32;
        let updated = self.pods_of(&new_key).count() as i32;
        let previous_ready = status.ready_replicas.unwrap_or(0);
        if ready > previous_ready {
            self.progress.insert(key.clone(), now);
        }
        status.replicas = Some(all.len() as i32);
        status.updated_replicas = Some(updated);
        status.ready_replicas = Some(ready);
        status.available_replicas = Some(ready);
        status.unavailable_replicas = Some((desired - ready).max(0));
        set_condition(
            &mut status,
            "Available",
            if ready >= desired { "True" } else { "False" },
            if ready >= desired {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            if ready >= desired {
                "Deployment has minimum availability."
            } else {
                "Deployment does not have minimum availability."
            },
        );
        let complete =
            updated == desired && new_ready as i32 == desired && all.len() as i32 == desired;
        let deadline =
            Duration::from_secs(spec.progress_deadline_seconds.unwrap_or(600).max(0) as u64);
        let stalled = self
            .progress
            .get(key)
            .is_some_and(|since| now.duration_since(*since) > deadline);
        let rs_name = &new_key.1;
        if complete {
            set_condition(
                &mut status,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            );
        } else if stalled {
            set_condition(
                &mut status,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            );
        } else {
            set_condition(
                &mut status,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{rs_name}\" is progressing."),
            );
        }
        deployment.status = Some(status);
        let revision =
            annotation(&self.replica_sets[&new_key].metadata, REVISION).unwrap_or_default();
        deployment
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(REVISION.into(), revision);
        self.store_if_changed(key, deployment, before);
    }

    fn store_if_changed(&mut self, key: &Key, mut deployment: Deployment, before: Option<Value>) {
        if serde_json::to_value(&deployment).ok() != before {
            self.version += 1;
            deployment.metadata.resource_version = Some(self.version.to_string());
            self.deployments.insert(key.clone(), deployment);
        }
    }

    fn pods_of<'a>(&'a self, rs: &'a Key) -> impl Iterator<Item = &'a PodRun> + 'a {
        let uid = self
            .replica_sets
            .get(rs)
            .and_then(|r| r.metadata.uid.clone());
        self.pods
            .values()
            .filter(move |run| uid.is_some() && owner_uid(&run.pod.metadata) == uid)
    }

    fn ready_pods(&self, rs: &Key) -> usize {
        self.pods_of(rs).filter(|p| pod_ready(&p.pod)).count()
    }

    /// Creates or deletes pods of a ReplicaSet until it has `size`.
    fn scale(&mut self, rs_key: &Key, size: usize, now: Instant) {
        let Some(rs) = self.replica_sets.get_mut(rs_key) else {
            return;
        };
        rs.spec.get_or_insert_default().replicas = Some(size as i32);
        let rs = rs.clone();
        let mut current: Vec<Key> = self
            .pods
            .iter()
            .filter(|(_, run)| owner_uid(&run.pod.metadata) == rs.metadata.uid)
            .map(|(k, _)| k.clone())
            .collect();
        while current.len() > size {
            let gone = current.pop().expect("non-empty");
            self.pods.remove(&gone);
        }
        let template = rs.spec.and_then(|s| s.template).unwrap_or_default();
        let mut index = 0;
        while current.len() < size {
            index += 1;
            let name = format!("{}-{index:05}", rs_key.1);
            let key = (rs_key.0.clone(), name.clone());
            if self.pods.contains_key(&key) {
                continue;
            }
            let mut meta = template.metadata.clone().unwrap_or_default();
            meta.name = Some(name);
            meta.namespace = Some(rs_key.0.clone());
            meta.owner_references = Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: rs_key.1.clone(),
                uid: rs.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
            let pod = Pod {
                metadata: meta,
                spec: template.spec.clone(),
                status: Some(PodStatus {
                    phase: Some("Pending".into()),
                    ..Default::default()
                }),
            };
            self.pods.insert(key.clone(), PodRun { pod, started: now });
            current.push(key);
        }
    }

    /// The kubelet: each pod's status from its images and age.
    fn run_pods(&mut self, now: Instant) {
        let mut events = Vec::new();
        for ((namespace, name), run) in self.pods.iter_mut() {
            let age = now.duration_since(run.started);
            let mut statuses = Vec::new();
            for container in containers(&run.pod.spec) {
                let image = container.image.clone().unwrap_or_default();
                let (state, ready, restarts, last) = match self.images.get(&image) {
                    None => {
                        let reason = if age < Duration::from_secs(1) {
                            "ErrImagePull"
                        } else {
                            "ImagePullBackOff"
                        };
                        let message = format!(
                            "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"
                        );
                        events.push((namespace.clone(), name.clone(), "Failed", message.clone()));
                        (waiting(reason, &message), false, 0, None)
                    }
                    Some(Image::Crashes(_)) => {
                        let restarts = (age.as_millis() / 500) as i32;
                        let message = format!(
                            "back-off restarting failed container {} in pod {name}",
                            container.name
                        );
                        events.push((namespace.clone(), name.clone(), "BackOff", message.clone()));
                        let last = ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                exit_code: 1,
                                reason: Some("Error".into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        };
                        (
                            waiting("CrashLoopBackOff", &message),
                            false,
                            restarts,
                            Some(last),
                        )
                    }
                    Some(Image::Runs(_)) => {
                        let ready = age >= READY_AFTER;
                        let state = ContainerState {
                            running: Some(Default::default()),
                            ..Default::default()
                        };
                        (state, ready, 0, None)
                    }
                };
                statuses.push(ContainerStatus {
                    name: container.name.clone(),
                    image,
                    image_id: String::new(),
                    ready,
                    restart_count: restarts,
                    started: Some(state.running.is_some()),
                    state: Some(state),
                    last_state: last,
                    ..Default::default()
                });
            }
            let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
            let status = run.pod.status.get_or_insert_default();
            status.phase = Some(
                if statuses.iter().any(|s| {
                    s.state.as_ref().is_some_and(|st| {
                        st.running.is_some()
                            || st
                                .waiting
                                .as_ref()
                                .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
                    })
                }) {
                    "Running"
                } else {
                    "Pending"
                }
                .into(),
            );
            status.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: if all_ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]);
            status.container_statuses = Some(statuses);
        }
        for (namespace, pod, reason, message) in events {
            self.event(&namespace, "Pod", &pod, "Warning", reason, &message);
        }
    }

    /// Records an Event, or counts it again when the last one of the object says the same.
    fn event(
        &mut self,
        namespace: &str,
        kind: &str,
        name: &str,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        if let Some(same) = self.events.iter_mut().find(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
                && e.message.as_deref() == Some(message)
        }) {
            same.count = Some(same.count.unwrap_or(1) + 1);
            return;
        }
        self.version += 1;
        self.events.push(Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", self.version)),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some(kind.into()),
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            count: Some(1),
            ..Default::default()
        });
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some(message.into()),
        }),
        ..Default::default()
    }
}

fn set_condition(
    status: &mut DeploymentStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
) {
    let conditions = status.conditions.get_or_insert_default();
    let condition = DeploymentCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..Default::default()
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

fn owner_uid(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// The Deployment a pod belongs to (through its ReplicaSet).
fn owner_uid_of_pod(cluster: &Cluster, pod: &Pod) -> Option<String> {
    let rs_uid = owner_uid(&pod.metadata)?;
    cluster
        .replica_sets
        .values()
        .find(|rs| rs.metadata.uid.as_deref() == Some(rs_uid.as_str()))
        .and_then(|rs| owner_uid(&rs.metadata))
}

fn containers(spec: &Option<PodSpec>) -> Vec<k8s_openapi::api::core::v1::Container> {
    spec.as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn without_hash(template: &PodTemplateSpec) -> Value {
    let mut template = template.clone();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(TEMPLATE_HASH);
    }
    serde_json::to_value(template).unwrap_or(Value::Null)
}

fn template_hash(template: &PodTemplateSpec) -> String {
    let digest = sha2::Sha256::digest(without_hash(template).to_string().as_bytes());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

// The HTTP side.

type Shared = Arc<Mutex<Cluster>>;

fn routes(cluster: Shared) -> Router {
    Router::new()
        .route(
            "/apis/apps/v1/namespaces/{namespace}/deployments",
            get(list_deployments).post(create_deployment),
        )
        .route(
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            get(get_deployment)
                .patch(patch_deployment)
                .put(replace_deployment),
        )
        .route(
            "/apis/apps/v1/namespaces/{namespace}/replicasets",
            get(list_replica_sets),
        )
        .route(
            "/api/v1/namespaces/{namespace}/services/{name}",
            get(get_service).patch(patch_service),
        )
        .route("/api/v1/namespaces/{namespace}/pods", get(list_pods))
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            get(pod_log),
        )
        .route("/api/v1/namespaces/{namespace}/events", get(list_events))
        .fallback(|method: Method, uri: Uri| async move {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("the double does not serve {method} {uri}"),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            cluster.clone(),
            record,
        ))
        .with_state(cluster)
}

async fn record(
    State(cluster): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", request.method(), request.uri());
    cluster.lock().expect("lock").requests.push(line);
    next.run(request).await
}

/// A `metav1.Status` error, as the API server sends.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn not_found(kind: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
    )
}

fn conflict(kind: &str, name: &str) -> Response {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
    )
}

fn list<T: serde::Serialize>(
    kind: &str,
    api_version: &str,
    version: u64,
    items: Vec<T>,
) -> Response {
    axum::Json(json!({
        "kind": kind, "apiVersion": api_version,
        "metadata": {"resourceVersion": version.to_string()},
        "items": items,
    }))
    .into_response()
}

/// `labelSelector=k=v,k2=v2` (equality terms only).
fn selects(query: &BTreeMap<String, String>, labels: &Option<BTreeMap<String, String>>) -> bool {
    let Some(selector) = query.get("labelSelector").filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (key, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .unwrap_or((term, ""));
        labels.as_ref().and_then(|l| l.get(key)).map(String::as_str) == Some(value)
    })
}

async fn list_deployments(
    State(cluster): State<Shared>,
    Path(namespace): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let cluster = cluster.lock().expect("lock");
    let items: Vec<&Deployment> = cluster
        .deployments
        .iter()
        .filter(|((ns, _), d)| *ns == namespace && selects(&query, &d.metadata.labels))
        .map(|(_, d)| d)
        .collect();
    list("DeploymentList", "apps/v1", cluster.version, items)
}

async fn create_deployment(
    State(cluster): State<Shared>,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Response {
    let deployment: Deployment = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let mut cluster = cluster.lock().expect("lock");
    let name = name_of(&deployment.metadata);
    let key = (namespace.clone(), name.clone());
    if cluster.deployments.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("deployments.apps \"{name}\" already exists"),
        );
    }
    cluster.create_deployment(&namespace, deployment);
    (
        StatusCode::CREATED,
        axum::Json(cluster.deployments[&key].clone()),
    )
        .into_response()
}

async fn get_deployment(
    State(cluster): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match cluster.lock().expect("lock").deployment(&namespace, &name) {
        Some(d) => axum::Json(d).into_response(),
        None => not_found("deployments.apps", &name),
    }
}

async fn patch_deployment(
    State(cluster): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut cluster = cluster.lock().expect("lock");
    let current = cluster.deployment(&namespace, &name);
    let (current, patched) = match patch_of(current, "deployments.apps", &name, &headers, &body) {
        Ok(both) => both,
        Err(response) => return response,
    };
    write_deployment(&mut cluster, &namespace, &name, current, patched)
}

async fn replace_deployment(
    State(cluster): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut cluster = cluster.lock().expect("lock");
    let key = (namespace.clone(), name.clone());
    let Some(current) = cluster.deployments.get(&key).cloned() else {
        return not_found("deployments.apps", &name);
    };
    let replaced: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    write_deployment(&mut cluster, &namespace, &name, current, replaced)
}

/// A write of a Deployment: the resourceVersion precondition, validation, then admission.
fn write_deployment(
    cluster: &mut Cluster,
    namespace: &str,
    name: &str,
    current: Deployment,
    new: Value,
) -> Response {
    if let Some(refused) = cluster.precondition("deployments.apps", name, &new, &current.metadata) {
        return refused;
    }
    let mut deployment: Deployment = match serde_json::from_value(new) {
        Ok(d) => d,
        Err(e) => {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                &format!("Deployment.apps \"{name}\" is invalid: {e}"),
            );
        }
    };
    let selector = |d: &Deployment| {
        d.spec
            .as_ref()
            .map(|s| serde_json::to_value(&s.selector).ok())
    };
    if selector(&deployment) != selector(&current) {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "Deployment.apps \"{name}\" is invalid: spec.selector: Invalid value: field is immutable"
            ),
        );
    }
    deployment.metadata.name = Some(name.to_string());
    let admitted = cluster.admit_deployment(namespace, deployment, Some(&current));
    cluster
        .deployments
        .insert((namespace.to_string(), name.to_string()), admitted.clone());
    axum::Json(admitted).into_response()
}

async fn list_replica_sets(
    State(cluster): State<Shared>,
    Path(namespace): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let cluster = cluster.lock().expect("lock");
    let items: Vec<ReplicaSet> = cluster
        .replica_sets(&namespace)
        .into_iter()
        .filter(|rs| selects(&query, &rs.metadata.labels))
        .map(|mut rs| {
            let ready = cluster.ready_pods(&(namespace.clone(), name_of(&rs.metadata))) as i32;
            rs.status = Some(ReplicaSetStatus {
                replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                ..Default::default()
            });
            rs
        })
        .collect();
    list("ReplicaSetList", "apps/v1", cluster.version, items)
}

async fn get_service(
    State(cluster): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match cluster.lock().expect("lock").service(&namespace, &name) {
        Some(s) => axum::Json(s).into_response(),
        None => not_found("services", &name),
    }
}

async fn patch_service(
    State(cluster): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut cluster = cluster.lock().expect("lock");
    let current = cluster.service(&namespace, &name);
    let (current, patched) = match patch_of(current, "services", &name, &headers, &body) {
        Ok(both) => both,
        Err(response) => return response,
    };
    let key = (namespace.clone(), name.clone());
    if let Some(refused) = cluster.precondition("services", &name, &patched, &current.metadata) {
        return refused;
    }
    let mut service: Service = match serde_json::from_value(patched) {
        Ok(s) => s,
        Err(e) => return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e.to_string()),
    };
    cluster.version += 1;
    service.metadata.resource_version = Some(cluster.version.to_string());
    cluster.services.insert(key, service.clone());
    axum::Json(service).into_response()
}

async fn list_pods(
    State(cluster): State<Shared>,
    Path(namespace): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let cluster = cluster.lock().expect("lock");
    let items: Vec<&Pod> = cluster
        .pods
        .iter()
        .filter(|((ns, _), run)| *ns == namespace && selects(&query, &run.pod.metadata.labels))
        .map(|(_, run)| &run.pod)
        .collect();
    list("PodList", "v1", cluster.version, items)
}

async fn pod_log(
    State(cluster): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let cluster = cluster.lock().expect("lock");
    let Some(run) = cluster.pods.get(&(namespace, name.clone())) else {
        return not_found("pods", &name);
    };
    let container = query.get("container");
    let Some(image) = containers(&run.pod.spec)
        .into_iter()
        .find(|c| container.is_none_or(|n| *n == c.name))
        .and_then(|c| c.image)
    else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "no such container");
    };
    let lines = match cluster.images.get(&image) {
        Some(Image::Runs(lines) | Image::Crashes(lines)) => lines.clone(),
        None => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "container in pod \"{name}\" is waiting to start: trying and failing to pull image"
                ),
            );
        }
    };
    let tail = query
        .get("tailLines")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let skip = lines.len().saturating_sub(tail);
    let text: String = lines.iter().skip(skip).map(|l| format!("{l}\n")).collect();
    (StatusCode::OK, text).into_response()
}

async fn list_events(State(cluster): State<Shared>, Path(namespace): Path<String>) -> Response {
    let cluster = cluster.lock().expect("lock");
    let items: Vec<&Event> = cluster
        .events
        .iter()
        .filter(|e| e.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .collect();
    list("EventList", "v1", cluster.version, items)
}

/// The stored object and the patch applied to it, or why not (404, a bad patch).
#[allow(clippy::result_large_err)]
fn patch_of<T: serde::Serialize>(
    current: Option<T>,
    kind: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(T, Value), Response> {
    let current = current.ok_or_else(|| not_found(kind, name))?;
    let patched = apply_patch(headers, body, &current)?;
    Ok((current, patched))
}

/// Applies a patch of the kind its Content-Type names to `current`.
// The error is the HTTP answer itself, returned at once by the handler.
#[allow(clippy::result_large_err)]
fn apply_patch<T: serde::Serialize>(
    headers: &HeaderMap,
    body: &[u8],
    current: &T,
) -> Result<Value, Response> {
    let bad = |e: String| status(StatusCode::BAD_REQUEST, "BadRequest", &e);
    let mut target = serde_json::to_value(current).map_err(|e| bad(e.to_string()))?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/json-patch+json" => {
            let patch: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
            json_patch::patch(&mut target, &patch).map_err(|e| {
                status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &format!("the JSON patch does not apply: {e}"),
                )
            })?;
        }
        "application/merge-patch+json" => {
            let patch: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
            json_patch::merge(&mut target, &patch);
        }
        "application/strategic-merge-patch+json" => {
            let patch: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
            strategic_merge(&mut target, &patch, "");
        }
        other => {
            return Err(status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!("the body of the request was in an unknown format: {other}"),
            ));
        }
    }
    Ok(target)
}

/// The merge key of the lists a strategic merge patch merges by key (from the API's
/// `x-kubernetes-patch-merge-key`); other lists are replaced.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "env" | "volumes" | "imagePullSecrets" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "conditions" => "type",
        _ => return None,
    })
}

fn strategic_merge(target: &mut Value, patch: &Value, field: &str) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    strategic_merge(target.entry(key.clone()).or_insert(Value::Null), value, key);
                }
            }
        }
        (Value::Array(target), Value::Array(patch)) if merge_key(field).is_some() => {
            let key = merge_key(field).expect("checked");
            for item in patch {
                match target
                    .iter_mut()
                    .find(|t| t.get(key).is_some() && t.get(key) == item.get(key))
                {
                    Some(existing) => strategic_merge(existing, item, ""),
                    None => target.push(item.clone()),
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strategic_merge_patch_merges_containers_by_name_and_replaces_other_lists() {
        let mut target = json!({"spec": {"containers": [
            {"name": "web", "image": "shop:v1", "args": ["a", "b"]},
            {"name": "sidecar", "image": "proxy:1"}
        ]}});
        let patch =
            json!({"spec": {"containers": [{"name": "web", "image": "shop:v2", "args": ["c"]}]}});
        strategic_merge(&mut target, &patch, "");
        assert_eq!(
            target,
            json!({"spec": {"containers": [
                {"name": "web", "image": "shop:v2", "args": ["c"]},
                {"name": "sidecar", "image": "proxy:1"}
            ]}})
        );
    }

    #[test]
    fn selectors_match_every_equality_term() {
        let labels = Some(BTreeMap::from([
            ("app".to_string(), "shop".to_string()),
            ("tier".to_string(), "web".to_string()),
        ]));
        let query = |s: &str| BTreeMap::from([("labelSelector".to_string(), s.to_string())]);
        assert!(selects(&query("app=shop"), &labels));
        assert!(selects(&query("app==shop,tier=web"), &labels));
        assert!(!selects(&query("app=shop,tier=db"), &labels));
        assert!(selects(&BTreeMap::new(), &labels));
    }
}
