//! The pods the operator cares about: those with a stuck container, failed test pods, and
//! pods the scheduler cannot place.
//!
//! A rollout that does not finish is explained by its pods (CrashLoopBackOff,
//! ImagePullBackOff...), and a failed test by the end of its output (its termination
//! message). A healthy pod tells nothing the Deployment or Job does not, so instead of
//! caching every pod (a few per preview, about 2 KiB each even when pruned) this keeps only
//! those and forgets a pod as soon as it is seen healthy or deleted. The readers that tell
//! what a kept pod says ([`pod_problem`], [`unschedulable`], [`test_output`]) live here too:
//! they decide what is kept, and the observe step asks them why a rollout is stuck.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::cached::CachedPod;
use crate::api::Reason;
use crate::naming::SHA;

type Key = (String, String);

/// Stuck pods by namespace and name, filled by [`StuckPods::stream`].
#[derive(Clone)]
pub struct StuckPods {
    pods: Arc<RwLock<HashMap<Key, Arc<Pod>>>>,
    ready: watch::Receiver<bool>,
    ready_tx: Arc<watch::Sender<bool>>,
}

impl Default for StuckPods {
    fn default() -> Self {
        let (ready_tx, ready) = watch::channel(false);
        Self {
            pods: Arc::default(),
            ready,
            ready_tx: Arc::new(ready_tx),
        }
    }
}

fn key(pod: &Pod) -> Key {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

impl StuckPods {
    /// The stuck pods of one namespace.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.read()
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, pod)| pod.clone())
            .collect()
    }

    /// How many pods are held.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once the first list of pods has been taken in.
    pub async fn wait_until_ready(&self) -> bool {
        self.ready.clone().wait_for(|r| *r).await.is_ok()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Arc<Pod>>> {
        crate::sync::read(&self.pods)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Arc<Pod>>> {
        crate::sync::write(&self.pods)
    }

    /// Takes in one pod: kept, pruned, when stuck; forgotten otherwise. Returns it when stuck.
    fn observe(&self, mut pod: Pod) -> Option<Pod> {
        if pod_problem([&pod]).is_none()
            && test_output([&pod]).is_none()
            && unschedulable([&pod]).is_none()
        {
            self.write().remove(&key(&pod));
            return None;
        }
        prune(&mut pod);
        self.write().insert(key(&pod), Arc::new(pod.clone()));
        Some(pod)
    }

    /// Applies one watch event; yields the stuck pods it touched, which wake their preview.
    /// A relist (`Init` … `InitDone`) replaces the whole map, so pods deleted while the watch
    /// was down are not kept.
    fn apply(&self, event: watcher::Event<Pod>, relisted: &mut Option<HashSet<Key>>) -> Vec<Pod> {
        match event {
            watcher::Event::Init => {
                *relisted = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(pod) => {
                if let Some(seen) = relisted.as_mut() {
                    seen.insert(key(&pod));
                }
                self.observe(pod).into_iter().collect()
            }
            watcher::Event::InitDone => {
                if let Some(seen) = relisted.take() {
                    self.write().retain(|k, _| seen.contains(k));
                }
                self.ready_tx.send_replace(true);
                Vec::new()
            }
            watcher::Event::Apply(pod) => self.observe(pod).into_iter().collect(),
            watcher::Event::Delete(pod) => {
                self.write().remove(&key(&pod));
                Vec::new()
            }
        }
    }

    /// Watches pods matching `config` and keeps the map current; the stream yields every
    /// stuck pod seen, for the controller to wake its preview.
    pub fn stream(
        &self,
        client: &Client,
        config: watcher::Config,
    ) -> impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static {
        let this = self.clone();
        let mut relisted = None;
        watcher(Api::<CachedPod>::all(client.clone()), config)
            .default_backoff()
            .map_ok(move |event| {
                let event = as_pod(event);
                futures::stream::iter(this.apply(event, &mut relisted).into_iter().map(Ok))
            })
            .try_flatten()
            .boxed()
    }
}

/// A pod event as the readers here take it (they read no spec).
fn as_pod(event: watcher::Event<CachedPod>) -> watcher::Event<Pod> {
    match event {
        watcher::Event::Apply(pod) => watcher::Event::Apply(pod.into()),
        watcher::Event::Delete(pod) => watcher::Event::Delete(pod.into()),
        watcher::Event::InitApply(pod) => watcher::Event::InitApply(pod.into()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// A kept pod is read for its namespace, labels, sha annotation, the waiting state of its
/// containers and the exit code and message of a terminated one; everything else is dropped.
pub fn prune(pod: &mut Pod) {
    pod.spec = None;
    pod.metadata.owner_references = None;
    pod.metadata.managed_fields = None;
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.retain(|k, _| k == SHA);
    }
    if let Some(status) = pod.status.take() {
        let container_statuses = status.container_statuses.map(|statuses| {
            statuses
                .into_iter()
                .map(|cs| ContainerStatus {
                    name: cs.name,
                    state: cs.state.map(|state| ContainerState {
                        waiting: state.waiting,
                        terminated: state.terminated.map(|t| ContainerStateTerminated {
                            exit_code: t.exit_code,
                            message: t.message,
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                })
                .collect()
        });
        // The scheduler's verdict, when it could not place the pod.
        let conditions = status.conditions.map(|cs| {
            cs.into_iter()
                .filter(|c| c.type_ == "PodScheduled" && c.status == "False")
                .collect::<Vec<_>>()
        });
        pod.status = Some(PodStatus {
            container_statuses,
            conditions: conditions.filter(|c| !c.is_empty()),
            ..PodStatus::default()
        });
    }
}

/// A service's pods are stuck for a reason a developer must fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    pub reason: Reason,
    pub message: String,
}

/// The first stuck container among a service's pods, if any.
pub fn pod_problem<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<PodProblem> {
    pods.into_iter().find_map(|pod| {
        let name = pod.name_any();
        let ns = pod.namespace().unwrap_or_default();
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|cs| {
            let waiting = cs.state.as_ref()?.waiting.as_ref()?;
            let reason = Reason::parse(waiting.reason.as_deref()?)
                .filter(|r| Reason::STUCK_CONTAINER.contains(r))?;
            let said = waiting.message.as_deref().unwrap_or_default();
            let said = if said.is_empty() { "" } else { ": " };
            Some(PodProblem {
                message: format!(
                    "container {} of pod {name} in namespace {ns} is in {}{said}{}; {}",
                    cs.name,
                    reason.as_str(),
                    waiting.message.as_deref().unwrap_or_default(),
                    where_to_look(reason, &ns, &name, &cs.name),
                ),
                reason,
            })
        })
    })
}

/// The command that shows why a container is stuck: the previous run's log of one that keeps
/// exiting, the pod's events otherwise (pull errors, bad references, config errors).
fn where_to_look(reason: Reason, ns: &str, pod: &str, container: &str) -> String {
    match reason {
        Reason::CrashLoopBackOff => {
            format!("`kubectl logs -n {ns} {pod} -c {container} --previous` shows why it exited")
        }
        _ => format!("`kubectl describe pod -n {ns} {pod}` shows the kubelet's events"),
    }
}

/// Why a pod cannot be scheduled, as the scheduler says (for example a PersistentVolumeClaim
/// no StorageClass binds, or no node with room): not a failure (an autoscaler or a
/// provisioner may still fix it), but what a developer needs to know while waiting.
pub fn unschedulable<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<String> {
    pods.into_iter().find_map(|pod| {
        let conditions = pod.status.as_ref()?.conditions.as_ref()?;
        let c = conditions.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })?;
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        Some(format!(
            "pod {name} in namespace {ns} cannot be scheduled: {} (`kubectl describe pod -n {ns} \
             {name}` shows the scheduler's events)",
            c.message.clone().unwrap_or_default()
        ))
    })
}

/// Lines of a failed test's output kept in its status (the end, where the failure is).
const OUTPUT_LINES: usize = 10;
/// Characters of a failed test's output kept in its status.
const OUTPUT_CHARS: usize = 800;

/// The end of what a failed test printed: the termination message of its failed container
/// (with `FallbackToLogsOnError`, the end of its log when it wrote no message).
pub fn test_output<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<String> {
    let message = pods.into_iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|cs| {
            let terminated = cs.state.as_ref()?.terminated.as_ref()?;
            (terminated.exit_code != 0).then_some(())?;
            terminated.message.clone().filter(|m| !m.trim().is_empty())
        })
    })?;
    let lines: Vec<&str> = message.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(OUTPUT_LINES)..].join("\n");
    let skip = tail.chars().count().saturating_sub(OUTPUT_CHARS);
    Some(tail.chars().skip(skip).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, waiting: Option<&str>) -> Pod {
        let state = match waiting {
            Some(reason) => {
                serde_json::json!({"waiting": {"reason": reason, "message": "back-off"}})
            }
            None => serde_json::json!({"running": {}}),
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": "pr-x",
                "labels": {"preview.dev/name": "web"},
                "annotations": {"preview.dev/sha": "abcdef0", "other": "dropped"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u"}],
            },
            "spec": {"containers": [{"name": "web", "image": "w"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "web", "image": "w", "imageID": "sha256:1", "ready": false,
                    "restartCount": 5, "lastState": {"terminated": {"exitCode": 1}}, "state": state}]
            }
        }))
        .expect("pod fixture")
    }

    #[test]
    fn a_pruned_pod_still_tells_why_it_is_stuck() {
        let mut p = pod("web-1", Some("CrashLoopBackOff"));
        prune(&mut p);
        assert!(p.spec.is_none());
        assert_eq!(
            p.annotations().keys().collect::<Vec<_>>(),
            vec!["preview.dev/sha"]
        );
        assert_eq!(
            p.labels().get("preview.dev/name").map(String::as_str),
            Some("web")
        );
        let status = p.status.as_ref().expect("status kept");
        assert!(status.conditions.is_none());
        let problem = pod_problem([&p]).expect("still stuck");
        assert_eq!(problem.reason, crate::api::Reason::CrashLoopBackOff);
        assert!(problem.message.contains("web-1"), "{}", problem.message);
        assert!(
            (problem.message).contains("`kubectl logs -n pr-x web-1 -c web --previous`"),
            "names the namespace and the command: {}",
            problem.message
        );
    }

    #[test]
    fn only_stuck_pods_are_kept_and_a_relist_drops_the_vanished() {
        let stuck = StuckPods::default();
        let mut relisted = None;
        let woke = stuck.apply(
            watcher::Event::Apply(pod("a", Some("CrashLoopBackOff"))),
            &mut relisted,
        );
        assert_eq!(woke.len(), 1, "a stuck pod wakes its preview");
        assert!(
            stuck
                .apply(watcher::Event::Apply(pod("b", None)), &mut relisted)
                .is_empty()
        );
        assert_eq!(stuck.len(), 1, "a healthy pod is not kept");
        stuck.apply(watcher::Event::Apply(pod("a", None)), &mut relisted);
        assert!(stuck.is_empty(), "a pod that recovered is forgotten");

        stuck.apply(
            watcher::Event::Apply(pod("c", Some("ImagePullBackOff"))),
            &mut relisted,
        );
        stuck.apply(
            watcher::Event::Apply(pod("d", Some("ImagePullBackOff"))),
            &mut relisted,
        );
        // The watch restarts; "c" was deleted meanwhile and is not in the new list.
        stuck.apply(watcher::Event::Init, &mut relisted);
        stuck.apply(
            watcher::Event::InitApply(pod("d", Some("ImagePullBackOff"))),
            &mut relisted,
        );
        assert!(!*stuck.ready.borrow());
        stuck.apply(watcher::Event::InitDone, &mut relisted);
        assert!(*stuck.ready.borrow());
        let left: Vec<String> = stuck
            .in_namespace("pr-x")
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(left, vec!["d".to_string()]);
        assert!(stuck.in_namespace("pr-other").is_empty());
    }

    #[test]
    fn a_failed_tests_output_is_cut_to_its_last_lines() {
        let lines: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "t0-abcdef0-x"},
            "status": {"containerStatuses": [{"name": "t0", "image": "t", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 1, "message": lines.join("\n")}}}]}
        }))
        .expect("pod fixture");
        let output = test_output([&pod]).expect("output");
        assert!(
            output.starts_with("line 21\n") && output.ends_with("line 30"),
            "{output}"
        );
        let mut passed = pod.clone();
        if let Some(cs) = passed
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
        {
            cs[0]
                .state
                .as_mut()
                .and_then(|s| s.terminated.as_mut())
                .expect("terminated")
                .exit_code = 0;
        }
        assert_eq!(
            test_output([&passed]),
            None,
            "a passing container says nothing"
        );
    }

    #[test]
    fn an_unplaceable_pod_says_what_the_scheduler_said() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "pr-x"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable",
                "message": "pod has unbound immediate PersistentVolumeClaims"}]}
        }))
        .expect("pod");
        assert_eq!(
            unschedulable([&pod]).as_deref(),
            Some(
                "pod db-0 in namespace pr-x cannot be scheduled: pod has unbound immediate \
                 PersistentVolumeClaims (`kubectl describe pod -n pr-x db-0` shows the \
                 scheduler's events)"
            )
        );
        let mut kept = pod.clone();
        prune(&mut kept);
        assert!(
            unschedulable([&kept]).is_some(),
            "the cache keeps what says it"
        );
    }
}
