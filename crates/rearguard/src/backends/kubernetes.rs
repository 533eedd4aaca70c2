//! Kubernetes backend: each component is a Deployment (and a container in it); a version is
//! the image tag on it, read from the cluster. `rolling` patches the image and waits as
//! `kubectl rollout status` does; a rollback goes to the known-good release's ReplicaSet
//! (its template, as `kubectl rollout undo --to-revision` does), not to the previous
//! revision, so two bad releases in a row still end on the known-good one. `bluegreen` runs
//! one Deployment per version, copied from the component's Deployment, and switches a
//! Service's selector in one patch; the replaced one is scaled to zero after its warm time.
//!
//! API calls (kube-rs over the cluster's REST API): a rolling deploy is one GET and one
//! strategic merge patch per component; a rollback one GET, one list of ReplicaSets and
//! one JSON patch; a blue-green switch one patch of the Service. Then GETs of the
//! Deployment (and a list of its pods) every half second until the rollout is done.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod, PodTemplateSpec, Service};
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams, PostParams};
use rearguard_judge::Span;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Backend, BackendError, Capture, Instances, Workdirs};
use crate::config::Flaw;
use crate::{names, telemetry};

/// The label a blue-green Deployment, its pods and the Service's selector carry.
pub const VERSION_LABEL: &str = "rearguard.dev/version";
const REVISION: &str = "deployment.kubernetes.io/revision";
const TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotations a rollback keeps on the Deployment rather than take the ReplicaSet's (as
/// kubectl's `rollout undo` does).
const KEPT_ANNOTATIONS: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];
/// Pod states that do not get better by waiting.
const STUCK_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];
/// How often a rollout is looked at.
const POLL: Duration = Duration::from_millis(500);
/// Lines of each bad pod's log kept in an incident, and how many pods.
const CAPTURED_LINES: i64 = 100;
const CAPTURED_PODS: usize = 3;
/// A write that finds the object changed since it was read is tried again this often.
const CONFLICT_RETRIES: usize = 5;

/// Settings of the Kubernetes backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The namespace (default: the kubeconfig context's, or the service account's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// A kubeconfig file, relative to this config (default: in-cluster when run in a pod,
    /// else $KUBECONFIG or ~/.kube/config).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// `rolling`: the image on each Deployment is patched; `bluegreen`: one Deployment per
    /// version and a Service's selector switched.
    #[serde(default)]
    pub strategy: Strategy,
    /// The app's components.
    pub components: BTreeMap<String, KubernetesComponent>,
    /// How long a rollout may take (beside the Deployment's own progress deadline).
    #[serde(default = "default_rollout_timeout")]
    pub rollout_timeout: Span,
    /// A pod stuck this long in ErrImagePull, ImagePullBackOff or CrashLoopBackOff fails the
    /// deploy.
    #[serde(default = "default_stuck_after")]
    pub stuck_after: Span,
    /// Blue-green: how long the replaced version's Deployment keeps its pods.
    #[serde(default = "super::default_keep_warm")]
    pub keep_previous_warm: Span,
    /// Variables of the guard's environment whose values are hidden in the pod logs an
    /// incident keeps (beside URL passwords and rearguard's tokens).
    #[serde(default)]
    pub redact: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Rolling,
    Bluegreen,
}

/// One component: its Deployment and container.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesComponent {
    /// The Deployment (blue-green: the one each version's Deployment is copied from,
    /// named `DEPLOYMENT-VERSION`).
    pub deployment: String,
    /// The container whose image carries the version (default: the component's name).
    #[serde(default)]
    pub container: Option<String>,
    /// The image repository; a version is its tag (`registry.example/shop-web`).
    pub image: String,
    /// Blue-green: the Service whose selector picks the serving version.
    #[serde(default)]
    pub service: Option<String>,
    /// Where rearguard can reach the component (an Ingress, a LoadBalancer), for a router
    /// in front of it and for checks; `HOST:PORT`.
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
}

fn default_rollout_timeout() -> Span {
    Span::from_secs(600)
}

fn default_stuck_after() -> Span {
    Span::from_secs(120)
}

impl KubernetesConfig {
    pub fn problems(&self) -> Vec<Flaw> {
        let mut problems = Vec::new();
        if self.components.is_empty() {
            problems.push(Flaw::at(
                &["backend", "components"],
                "name at least one component and its Deployment",
            ));
        }
        for (name, component) in &self.components {
            let at = |key: &str, message: String| {
                Flaw::at(&["backend", "components", name, key], message)
            };
            if let Err(e) = names::check_name(name) {
                problems.push(Flaw::at(
                    &["backend", "components", name],
                    format!("component name {e}"),
                ));
            }
            if let Err(e) = check_object_name(&component.deployment) {
                problems.push(at("deployment", e));
            }
            if let Some(Err(e)) = component.container.as_deref().map(check_object_name) {
                problems.push(at("container", e));
            }
            if component.image.is_empty()
                || component.image.contains(['@', ' '])
                || component
                    .image
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.contains(':'))
            {
                problems.push(at(
                    "image",
                    format!(
                        "{:?}: give the repository without a tag or digest (registry.example/shop-web); the version is the tag",
                        component.image
                    ),
                ));
            }
            match (self.strategy, &component.service) {
                (Strategy::Bluegreen, None) => problems.push(at(
                    "service",
                    "blue-green needs the Service whose selector picks the version".into(),
                )),
                (Strategy::Bluegreen, Some(service)) => {
                    if let Err(e) = check_object_name(service) {
                        problems.push(at("service", e));
                    }
                }
                (Strategy::Rolling, Some(_)) => problems.push(at(
                    "service",
                    "a rolling deploy switches no Service: remove `service` or use strategy: bluegreen".into(),
                )),
                (Strategy::Rolling, None) => {}
            }
        }
        if let Some(Err(e)) = self.namespace.as_deref().map(check_object_name) {
            problems.push(Flaw::at(&["backend", "namespace"], e));
        }
        for (key, span) in [
            ("rollout_timeout", self.rollout_timeout),
            ("stuck_after", self.stuck_after),
        ] {
            problems.extend(Flaw::if_zero(&["backend", key], span));
        }
        problems
    }

    pub fn listening_components(&self) -> Vec<String> {
        self.components
            .iter()
            .filter(|(_, c)| c.endpoint.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// A DNS-1123 label, as Kubernetes names Deployments, containers and namespaces.
fn check_object_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if fine {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a Kubernetes name: 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

/// A version as a label value and an image tag: at most 63 characters, starting and ending
/// with a letter or digit (versions pass `names::check_version` first).
fn check_version(version: &str) -> Result<(), BackendError> {
    let unavailable = |why: String| BackendError::Unavailable {
        version: version.into(),
        missing: vec![why],
    };
    names::check_version(version).map_err(unavailable)?;
    let alnum_ends = version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version.ends_with(|c: char| c.is_ascii_alphanumeric());
    if version.len() > 63 || !alnum_ends {
        return Err(unavailable(format!(
            "{version:?} cannot be a Kubernetes label: at most 63 characters, starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

/// The blue-green Deployment of `version`: `BASE-VERSION`, the version lower-cased with
/// '.' and '_' as '-', and a short digest of it when that changed it (so `V1.2` and `v1-2`
/// do not share one).
fn versioned_name(base: &str, version: &str) -> String {
    use sha2::Digest as _;
    let mut label: String = version
        .chars()
        .map(|c| match c {
            '.' | '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    if label != version {
        let digest = sha2::Sha256::digest(version.as_bytes());
        label.push('-');
        label.extend(digest.iter().take(3).map(|b| format!("{b:02x}")));
    }
    let mut name = format!("{base}-{label}");
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

pub struct KubernetesBackend {
    app: String,
    config: KubernetesConfig,
    dirs: Workdirs,
    client: tokio::sync::OnceCell<(kube::Client, String)>,
}

impl KubernetesBackend {
    pub fn new(app: &str, config: KubernetesConfig, dirs: Workdirs) -> Self {
        Self {
            app: app.to_string(),
            config,
            dirs,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The client and namespace, made on first use from the kubeconfig or the pod's
    /// service account.
    async fn client(&self) -> Result<&(kube::Client, String), BackendError> {
        let failed = |why: String| BackendError::Platform {
            what: "connecting to the Kubernetes API".into(),
            why,
        };
        self.client
            .get_or_try_init(|| async {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let options = kube::config::KubeConfigOptions {
                    context: self.config.context.clone(),
                    ..Default::default()
                };
                let config = match &self.config.kubeconfig {
                    Some(path) => {
                        let path = self.dirs.config_dir.join(path);
                        let file = kube::config::Kubeconfig::read_from(&path)
                            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
                        kube::Config::from_custom_kubeconfig(file, &options)
                            .await
                            .map_err(|e| failed(e.to_string()))?
                    }
                    None if self.config.context.is_some() => {
                        kube::Config::from_kubeconfig(&options)
                            .await
                            .map_err(|e| failed(e.to_string()))?
                    }
                    None => kube::Config::infer()
                        .await
                        .map_err(|e| failed(e.to_string()))?,
                };
                let namespace = self
                    .config
                    .namespace
                    .clone()
                    .unwrap_or_else(|| config.default_namespace.clone());
                let client = kube::Client::try_from(config).map_err(|e| failed(e.to_string()))?;
                Ok((client, namespace))
            })
            .await
    }

    async fn api<K>(&self) -> Result<Api<K>, BackendError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        let (client, namespace) = self.client().await?;
        Ok(Api::namespaced(client.clone(), namespace))
    }

    fn image(&self, component: &KubernetesComponent, version: &str) -> String {
        format!("{}:{version}", component.image)
    }

    fn container<'a>(&self, name: &'a str, component: &'a KubernetesComponent) -> &'a str {
        component.container.as_deref().unwrap_or(name)
    }

    /// The Deployment that runs `version` of a component.
    fn deployment_name(&self, component: &KubernetesComponent, version: &str) -> String {
        match self.config.strategy {
            Strategy::Rolling => component.deployment.clone(),
            Strategy::Bluegreen => versioned_name(&component.deployment, version),
        }
    }

    fn instances(&self, version: &str) -> Instances {
        Instances {
            version: version.to_string(),
            endpoints: self
                .config
                .components
                .iter()
                .filter_map(|(name, c)| c.endpoint.map(|e| (name.clone(), e)))
                .collect(),
        }
    }

    /// Rolling: patches the container's image when it is not `version`'s already.
    async fn set_image(
        &self,
        name: &str,
        component: &KubernetesComponent,
        version: &str,
    ) -> Result<(), BackendError> {
        let api: Api<Deployment> = self.api().await?;
        let container = self.container(name, component);
        let image = self.image(component, version);
        retry_conflicts(|| async {
            let deployment = get(&api, &component.deployment).await?;
            refuse_paused(&deployment)?;
            if container_image(&template_of(&deployment), container)? == image {
                return Ok(());
            }
            let patch = json!({
                "metadata": {"resourceVersion": deployment.metadata.resource_version},
                "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}},
            });
            api.patch(&component.deployment, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map(|_| ())
                .map_err(|e| api_error(&format!("patching deployment/{}", component.deployment), e))
        })
        .await
    }

    /// Rolling: puts back the template of the ReplicaSet that ran `version` (the newest
    /// such), as `kubectl rollout undo --to-revision` does; without one (pruned history),
    /// patches the image.
    async fn undo_to(
        &self,
        name: &str,
        component: &KubernetesComponent,
        version: &str,
    ) -> Result<(), BackendError> {
        let deployments: Api<Deployment> = self.api().await?;
        let replica_sets: Api<ReplicaSet> = self.api().await?;
        let container = self.container(name, component);
        let image = self.image(component, version);
        let undone = retry_conflicts(|| async {
            let deployment = get(&deployments, &component.deployment).await?;
            refuse_paused(&deployment)?;
            let current = template_of(&deployment);
            let selector = match_labels(&deployment);
            let owned = replica_sets
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| api_error("listing replicasets", e))?;
            let uid = deployment.metadata.uid.clone();
            let Some(good) = owned
                .items
                .into_iter()
                .filter(|rs| controller_uid(&rs.metadata) == uid)
                .filter_map(|rs| {
                    let template = without_hash(rs.spec.as_ref()?.template.clone()?);
                    (container_image(&template, container).ok()? == image).then(|| (revision(&rs), template, rs))
                })
                .max_by_key(|(revision, _, _)| *revision)
            else {
                return Ok(false);
            };
            let (_, template, rs) = good;
            if serde_json::to_value(&current).ok() == serde_json::to_value(&template).ok() {
                return Ok(true);
            }
            let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
            annotations.retain(|key, _| !KEPT_ANNOTATIONS.contains(&key.as_str()));
            for (key, value) in deployment.metadata.annotations.iter().flatten() {
                if KEPT_ANNOTATIONS.contains(&key.as_str()) {
                    annotations.insert(key.clone(), value.clone());
                }
            }
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "replace", "path": "/metadata/resourceVersion", "value": deployment.metadata.resource_version},
                {"op": "replace", "path": "/spec/template", "value": template},
                {"op": "replace", "path": "/metadata/annotations", "value": annotations},
            ]))
            .expect("a well-formed JSON patch");
            deployments
                .patch(&component.deployment, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
                .map_err(|e| api_error(&format!("patching deployment/{}", component.deployment), e))?;
            tracing::info!(app = %self.app, deployment = %component.deployment, replica_set = ?rs.metadata.name, version, "rolled back to the known-good ReplicaSet's template");
            Ok(true)
        })
        .await?;
        if !undone {
            tracing::warn!(app = %self.app, deployment = %component.deployment, version, "no ReplicaSet of the known-good version is left: setting its image");
            self.set_image(name, component, version).await?;
        }
        Ok(())
    }

    /// Blue-green: creates `version`'s Deployment from the component's (or scales it back
    /// up).
    async fn ensure_versioned(
        &self,
        name: &str,
        component: &KubernetesComponent,
        version: &str,
    ) -> Result<(), BackendError> {
        let api: Api<Deployment> = self.api().await?;
        let target = self.deployment_name(component, version);
        let base = get(&api, &component.deployment).await?;
        let replicas = base
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(1);
        match api
            .get_opt(&target)
            .await
            .map_err(|e| api_error(&format!("reading deployment/{target}"), e))?
        {
            Some(existing) => {
                refuse_paused(&existing)?;
                if existing.spec.as_ref().and_then(|s| s.replicas) != Some(replicas) {
                    let patch = json!({"spec": {"replicas": replicas}});
                    api.patch(&target, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .map_err(|e| api_error(&format!("scaling deployment/{target}"), e))?;
                }
                Ok(())
            }
            None => {
                let copy = versioned_copy(
                    &base,
                    &target,
                    self.container(name, component),
                    &self.image(component, version),
                    version,
                    replicas,
                )?;
                match api.create(&PostParams::default(), &copy).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(api_error(&format!("creating deployment/{target}"), e)),
                }
            }
        }
    }

    /// Blue-green: points the component's Service at `version`, in one patch.
    async fn switch_service(
        &self,
        component: &KubernetesComponent,
        version: &str,
    ) -> Result<(), BackendError> {
        let Some(service) = &component.service else {
            return Ok(());
        };
        let api: Api<Service> = self.api().await?;
        let patch = json!({"spec": {"selector": {VERSION_LABEL: version}}});
        api.patch(service, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map(|_| ())
            .map_err(|e| api_error(&format!("switching service/{service}"), e))
    }

    /// Waits as `kubectl rollout status` does, and fails early on pods stuck in a state
    /// that waiting does not mend, or on the Deployment's progress deadline.
    async fn wait_rolled_out(
        &self,
        name: &str,
        component: &KubernetesComponent,
        version: &str,
    ) -> Result<(), BackendError> {
        let api: Api<Deployment> = self.api().await?;
        let target = self.deployment_name(component, version);
        let image = self.image(component, version);
        let not_ready = |why: String, within: Span| BackendError::NotReady {
            component: name.to_string(),
            version: version.to_string(),
            within,
            why,
        };
        let started = tokio::time::Instant::now();
        let mut stuck_since: Option<tokio::time::Instant> = None;
        loop {
            let deployment = get(&api, &target).await?;
            let waiting_for = match rollout_state(&deployment) {
                Rollout::Done => return Ok(()),
                Rollout::Failed(why) => return Err(not_ready(why, self.config.rollout_timeout)),
                Rollout::Waiting(why) => why,
            };
            match self.stuck_pods(&deployment, &image).await? {
                Some(why) => {
                    let since = *stuck_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= self.config.stuck_after.std() {
                        return Err(not_ready(why, self.config.stuck_after));
                    }
                }
                None => stuck_since = None,
            }
            if started.elapsed() >= self.config.rollout_timeout.std() {
                return Err(not_ready(waiting_for, self.config.rollout_timeout));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The pods of `deployment` running `image` that are stuck, said in the kubelet's
    /// words; `None` when none is.
    async fn stuck_pods(
        &self,
        deployment: &Deployment,
        image: &str,
    ) -> Result<Option<String>, BackendError> {
        let stuck: Vec<String> = self
            .pods(deployment)
            .await?
            .iter()
            .filter(|pod| pod_images(pod).iter().any(|i| i == image))
            .flat_map(pod_troubles)
            .filter(|trouble| STUCK_REASONS.iter().any(|r| trouble.contains(r)))
            .collect();
        Ok((!stuck.is_empty()).then(|| stuck.join("; ")))
    }

    async fn pods(&self, deployment: &Deployment) -> Result<Vec<Pod>, BackendError> {
        let api: Api<Pod> = self.api().await?;
        let selector = match_labels(deployment);
        api.list(&ListParams::default().labels(&selector))
            .await
            .map(|list| list.items)
            .map_err(|e| api_error("listing pods", e))
    }

    /// Where every component of `version` stands: deployed with its image and rolled out.
    async fn rolled_out(&self, version: &str) -> Result<bool, BackendError> {
        let api: Api<Deployment> = self.api().await?;
        for (name, component) in &self.config.components {
            let target = self.deployment_name(component, version);
            let Some(deployment) = api
                .get_opt(&target)
                .await
                .map_err(|e| api_error("reading a deployment", e))?
            else {
                return Ok(false);
            };
            let runs_version =
                container_image(&template_of(&deployment), self.container(name, component))?
                    == self.image(component, version);
            let scaled_up = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1)
                > 0;
            if !runs_version || !scaled_up || rollout_state(&deployment) != Rollout::Done {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn capture_component(
        &self,
        name: &str,
        component: &KubernetesComponent,
        version: &str,
        logs: &mut BTreeMap<String, String>,
    ) -> Result<Value, BackendError> {
        let deployments: Api<Deployment> = self.api().await?;
        let target = self.deployment_name(component, version);
        let deployment = get(&deployments, &target).await?;
        let replica_sets: Api<ReplicaSet> = self.api().await?;
        let uid = deployment.metadata.uid.clone();
        let owned: Vec<Value> = replica_sets
            .list(&ListParams::default().labels(&match_labels(&deployment)))
            .await
            .map_err(|e| api_error("listing replicasets", e))?
            .items
            .iter()
            .filter(|rs| controller_uid(&rs.metadata) == uid)
            .map(|rs| {
                json!({
                    "name": rs.metadata.name,
                    "revision": revision(rs),
                    "images": rs.spec.as_ref().and_then(|s| s.template.as_ref()).map(template_images).unwrap_or_default(),
                    "replicas": rs.spec.as_ref().and_then(|s| s.replicas),
                    "ready": rs.status.as_ref().and_then(|s| s.ready_replicas),
                })
            })
            .collect();
        let pods = self.pods(&deployment).await?;
        let image = self.image(component, version);
        let mut names: Vec<String> = vec![target.clone()];
        names.extend(
            owned
                .iter()
                .filter_map(|rs| rs["name"].as_str().map(String::from)),
        );
        names.extend(pods.iter().filter_map(|p| p.metadata.name.clone()));
        let pod_api: Api<Pod> = self.api().await?;
        let secrets = self.secrets();
        let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        for pod in pods
            .iter()
            .filter(|p| pod_images(p).contains(&image))
            .take(CAPTURED_PODS)
        {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let params = LogParams {
                container: Some(self.container(name, component).to_string()),
                tail_lines: Some(CAPTURED_LINES),
                ..Default::default()
            };
            let text = match pod_api.logs(&pod_name, &params).await {
                Ok(text) => text,
                Err(e) => format!("(no log: {})", api_error("reading the log", e)),
            };
            logs.insert(
                format!("{name} {pod_name}"),
                telemetry::redact_secrets(&text, &secret_refs),
            );
        }
        let events: Api<Event> = self.api().await?;
        let recent: Vec<Value> = events
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error("listing events", e))?
            .items
            .iter()
            .filter(|e| e.involved_object.name.as_ref().is_some_and(|n| names.contains(n)))
            .map(|e| {
                json!({
                    "object": format!("{}/{}", e.involved_object.kind.clone().unwrap_or_default(), e.involved_object.name.clone().unwrap_or_default()),
                    "type": e.type_, "reason": e.reason, "count": e.count,
                    "message": e.message.as_deref().map(|m| telemetry::redact_secrets(m, &secret_refs)),
                })
            })
            .rev()
            .take(20)
            .collect();
        let status = deployment.status.clone().unwrap_or_default();
        Ok(json!({
            "deployment": target,
            "generation": deployment.metadata.generation,
            "observed_generation": status.observed_generation,
            "replicas": deployment.spec.as_ref().and_then(|s| s.replicas),
            "updated": status.updated_replicas, "ready": status.ready_replicas, "available": status.available_replicas,
            "images": deployment.spec.as_ref().map(|s| template_images(&s.template)).unwrap_or_default(),
            "conditions": status.conditions.iter().flatten().map(|c| json!({
                "type": c.type_, "status": c.status, "reason": c.reason, "message": c.message,
            })).collect::<Vec<_>>(),
            "replica_sets": owned,
            "pods": pods.iter().map(|p| json!({
                "name": p.metadata.name,
                "phase": p.status.as_ref().and_then(|s| s.phase.clone()),
                "images": pod_images(p),
                "restarts": p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map(|c| c.iter().map(|c| c.restart_count).sum::<i32>()),
                "troubles": pod_troubles(p),
            })).collect::<Vec<_>>(),
            "events": recent,
        }))
    }

    fn secrets(&self) -> Vec<String> {
        self.config
            .redact
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .collect()
    }

    async fn make_live(&self, version: &str, rollback: bool) -> Result<Instances, BackendError> {
        check_version(version)?;
        for (name, component) in &self.config.components {
            match (self.config.strategy, rollback) {
                (Strategy::Rolling, false) => self.set_image(name, component, version).await?,
                (Strategy::Rolling, true) => self.undo_to(name, component, version).await?,
                (Strategy::Bluegreen, _) => self.ensure_versioned(name, component, version).await?,
            }
        }
        for (name, component) in &self.config.components {
            self.wait_rolled_out(name, component, version).await?;
        }
        for component in self.config.components.values() {
            self.switch_service(component, version).await?;
        }
        Ok(self.instances(version))
    }
}

#[async_trait::async_trait]
impl Backend for KubernetesBackend {
    /// The cluster keeps what runs; a restarted guard reads it from there.
    async fn recover(&self) {
        if let Err(e) = self.client().await {
            tracing::warn!(app = %self.app, error = %e, "cannot reach the Kubernetes API yet");
        }
    }

    /// Every Deployment (and container) exists and the version can be a tag and a label.
    /// Whether the image exists in the registry only the rollout tells (a pull failure
    /// fails the deploy within `stuck_after`).
    async fn check_available(&self, version: &str) -> Result<(), BackendError> {
        check_version(version)?;
        let api: Api<Deployment> = self.api().await?;
        let mut missing = Vec::new();
        for (name, component) in &self.config.components {
            match api.get_opt(&component.deployment).await {
                Ok(Some(deployment)) => {
                    let template = template_of(&deployment);
                    if let Err(e) = container_image(&template, self.container(name, component)) {
                        missing.push(e.to_string());
                    }
                }
                Ok(None) => missing.push(format!(
                    "deployment/{} does not exist",
                    component.deployment
                )),
                Err(e) => missing.push(api_error("reading a deployment", e).to_string()),
            }
        }
        match missing.is_empty() {
            true => Ok(()),
            false => Err(BackendError::Unavailable {
                version: version.into(),
                missing,
            }),
        }
    }

    async fn deploy(&self, version: &str) -> Result<Instances, BackendError> {
        self.make_live(version, false).await
    }

    async fn rollback(&self, version: &str) -> Result<Instances, BackendError> {
        self.make_live(version, true).await
    }

    async fn running(&self, version: &str) -> Option<Instances> {
        match self.rolled_out(version).await {
            Ok(true) => Some(self.instances(version)),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(app = %self.app, version, error = %e, "cannot tell what runs");
                None
            }
        }
    }

    async fn exited(&self, version: &str) -> Vec<String> {
        let Ok(api) = self.api::<Deployment>().await else {
            return Vec::new();
        };
        let mut troubles = Vec::new();
        for component in self.config.components.values() {
            let target = self.deployment_name(component, version);
            if let Ok(Some(deployment)) = api.get_opt(&target).await
                && let Ok(pods) = self.pods(&deployment).await
            {
                let image = self.image(component, version);
                troubles.extend(
                    pods.iter()
                        .filter(|p| pod_images(p).contains(&image))
                        .flat_map(pod_troubles),
                );
            }
        }
        troubles
    }

    /// Blue-green: the version's Deployments are scaled to zero (kept, for a later switch
    /// back). Rolling: nothing runs beside the serving version.
    async fn stop(&self, version: &str) {
        if self.config.strategy == Strategy::Rolling {
            return;
        }
        let Ok(api) = self.api::<Deployment>().await else {
            return;
        };
        for component in self.config.components.values() {
            let target = self.deployment_name(component, version);
            let patch = json!({"spec": {"replicas": 0}});
            if let Err(e) = api
                .patch(&target, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::warn!(app = %self.app, deployment = %target, error = %api_error("scaling down", e), "cannot scale the replaced version down");
            }
        }
    }

    /// The cluster's workloads outlive the guard.
    async fn stop_all(&self) {}

    async fn capture(&self, version: &str) -> Capture {
        let mut logs = BTreeMap::new();
        let mut components = serde_json::Map::new();
        for (name, component) in &self.config.components {
            let state = match self
                .capture_component(name, component, version, &mut logs)
                .await
            {
                Ok(state) => state,
                Err(e) => json!({"error": e.to_string()}),
            };
            components.insert(name.clone(), state);
        }
        Capture {
            state: json!({"backend": "kubernetes", "components": components}),
            logs,
        }
    }

    fn keep_previous_warm(&self) -> Span {
        match self.config.strategy {
            Strategy::Rolling => Span::default(),
            Strategy::Bluegreen => self.config.keep_previous_warm,
        }
    }
}

/// Tries a read-modify-write again when the object changed in between (409).
async fn retry_conflicts<T, F, Fut>(mut write: F) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BackendError>>,
{
    let mut tries = 0;
    loop {
        match write().await {
            Err(BackendError::Platform { why, .. })
                if why.contains("(409)") && tries < CONFLICT_RETRIES =>
            {
                tries += 1;
                tracing::info!(
                    tries,
                    "the object changed since it was read: reading it again"
                );
            }
            other => return other,
        }
    }
}

fn api_error(what: &str, error: kube::Error) -> BackendError {
    let why = match &error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    };
    BackendError::Platform {
        what: what.to_string(),
        why,
    }
}

async fn get(api: &Api<Deployment>, name: &str) -> Result<Deployment, BackendError> {
    api.get_opt(name)
        .await
        .map_err(|e| api_error(&format!("reading deployment/{name}"), e))?
        .ok_or_else(|| BackendError::Platform {
            what: format!("reading deployment/{name}"),
            why: "it does not exist in the namespace (kubectl get deployments)".into(),
        })
}

fn refuse_paused(deployment: &Deployment) -> Result<(), BackendError> {
    if deployment.spec.as_ref().and_then(|s| s.paused) == Some(true) {
        let name = deployment.metadata.name.clone().unwrap_or_default();
        return Err(BackendError::Platform {
            what: format!("changing deployment/{name}"),
            why: format!(
                "it is paused; nothing would roll out. Resume it (kubectl rollout resume deployment/{name}) or let whoever paused it finish"
            ),
        });
    }
    Ok(())
}

/// The image of `container` in a pod template.
fn container_image(template: &PodTemplateSpec, container: &str) -> Result<String, BackendError> {
    template
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .map(|c| c.image.clone().unwrap_or_default())
        .ok_or_else(|| no_container(container))
}

fn no_container(container: &str) -> BackendError {
    BackendError::Platform {
        what: format!("finding container {container}"),
        why: "the Deployment's pod template has no container of that name (set `container:`)"
            .into(),
    }
}

fn template_of(deployment: &Deployment) -> PodTemplateSpec {
    deployment
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

fn template_images(template: &PodTemplateSpec) -> Vec<String> {
    template
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().filter_map(|c| c.image.clone()))
        .collect()
}

fn pod_images(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter().filter_map(|c| c.image.clone()))
        .collect()
}

/// What is wrong with a pod's containers, in the kubelet's words.
fn pod_troubles(pod: &Pod) -> Vec<String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.clone().unwrap_or_default();
            let last = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        ", last exit {} {}",
                        t.exit_code,
                        t.reason.clone().unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            Some(format!(
                "pod {name} container {}: {reason} ({}; {} restarts{last})",
                c.name,
                waiting.message.clone().unwrap_or_default(),
                c.restart_count
            ))
        })
        .collect()
}

fn match_labels(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn controller_uid(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// A ReplicaSet's template as the Deployment's: without the label the controller adds.
fn without_hash(mut template: PodTemplateSpec) -> PodTemplateSpec {
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(TEMPLATE_HASH);
    }
    template
}

#[derive(Debug, PartialEq)]
enum Rollout {
    Done,
    Waiting(String),
    Failed(String),
}

/// `kubectl rollout status`'s reading of a Deployment.
fn rollout_state(deployment: &Deployment) -> Rollout {
    let spec = deployment.spec.clone().unwrap_or_default();
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::Waiting("the controller has not seen the change yet".into());
    }
    if let Some(condition) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Rollout::Failed(format!(
            "ProgressDeadlineExceeded: {}",
            condition.message.clone().unwrap_or_default()
        ));
    }
    let replicas = spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if updated < replicas {
        Rollout::Waiting(format!("{updated} of {replicas} new replicas updated"))
    } else if total > updated {
        Rollout::Waiting(format!(
            "{} old replicas pending termination",
            total - updated
        ))
    } else if available < updated {
        Rollout::Waiting(format!(
            "{available} of {updated} updated replicas available"
        ))
    } else {
        Rollout::Done
    }
}

/// `version`'s blue-green Deployment: the component's, renamed, its image set, and the
/// version label added to it, its selector and its pods.
fn versioned_copy(
    base: &Deployment,
    name: &str,
    container: &str,
    image: &str,
    version: &str,
    replicas: i32,
) -> Result<Deployment, BackendError> {
    let mut copy = Deployment {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            labels: base.metadata.labels.clone(),
            ..Default::default()
        },
        spec: base.spec.clone(),
        status: None,
    };
    copy.metadata
        .labels
        .get_or_insert_default()
        .insert(VERSION_LABEL.into(), version.into());
    let spec = copy.spec.get_or_insert_default();
    spec.replicas = Some(replicas);
    spec.paused = None;
    spec.selector
        .match_labels
        .get_or_insert_default()
        .insert(VERSION_LABEL.into(), version.into());
    spec.template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default()
        .insert(VERSION_LABEL.into(), version.into());
    let found = spec
        .template
        .spec
        .as_mut()
        .and_then(|s| s.containers.iter_mut().find(|c| c.name == container))
        .ok_or_else(|| no_container(container))?;
    found.image = Some(image.to_string());
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blue_green_names_are_kubernetes_names_and_do_not_collide() {
        assert_eq!(versioned_name("shop-web", "a1b2c3d"), "shop-web-a1b2c3d");
        let dotted = versioned_name("shop-web", "V1.2");
        let dashed = versioned_name("shop-web", "v1-2");
        assert_ne!(dotted, dashed);
        for name in [dotted, dashed, versioned_name("shop-web", &"f".repeat(63))] {
            assert!(check_object_name(&name).is_ok(), "{name}");
        }
    }

    #[test]
    fn config_mistakes_are_named_at_their_key() {
        let config: KubernetesConfig = serde_json::from_value(json!({
            "strategy": "bluegreen",
            "namespace": "Shop",
            "components": {
                "web": {"deployment": "shop_web", "image": "registry.example/shop-web:v1"},
            },
        }))
        .unwrap();
        let problems: Vec<String> = config
            .problems()
            .iter()
            .map(|f| format!("{}: {}", f.at.join("."), f.message))
            .collect();
        let expected = [
            "backend.components.web.deployment: \"shop_web\" is not a Kubernetes name",
            "backend.components.web.image: \"registry.example/shop-web:v1\": give the repository without a tag",
            "backend.components.web.service: blue-green needs the Service",
            "backend.namespace: \"Shop\" is not a Kubernetes name",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, expected) in problems.iter().zip(expected) {
            assert!(problem.starts_with(expected), "{problem}");
        }
        // A registry with a port is not a tag.
        let fine: KubernetesConfig = serde_json::from_value(json!({
            "components": {"web": {"deployment": "shop-web", "image": "registry.example:5000/shop-web"}},
        }))
        .unwrap();
        assert!(fine.problems().is_empty(), "{:?}", fine.problems());
    }

    #[test]
    fn versions_that_cannot_be_labels_are_refused() {
        assert!(check_version("a1b2c3d").is_ok());
        for bad in ["v1;id", "v1-", &"f".repeat(64)] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
