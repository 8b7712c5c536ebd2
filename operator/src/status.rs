//! A Vizier's status from what its DaemonSet, Deployment and PEM pods say. Pure.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use px_crds::{PemCounts, ReconciliationPhase, Vizier, VizierPhase, VizierStatus, set_condition};

use crate::desired::PEM_CHECKSUM_ANNOTATION;

/// The phase of a Vizier and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Healthy, Updating, Degraded or Unhealthy.
    pub phase: VizierPhase,
    /// Pixie's `vizierReason`: empty when healthy.
    pub reason: String,
    /// For humans.
    pub message: String,
    /// PEM counts from the DaemonSet.
    pub pems: PemCounts,
}

/// Why a PEM pod is failing, if it is: a container waiting in an error state, or one that
/// restarted and is not ready. `Some(true)` when it was killed for running out of memory.
fn failing(pod: &Pod) -> Option<bool> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let mut failing = None;
    for s in statuses {
        let waiting = s
            .state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .and_then(|w| w.reason.as_deref());
        let bad_wait = matches!(
            waiting,
            Some(
                "CrashLoopBackOff"
                    | "ErrImagePull"
                    | "ImagePullBackOff"
                    | "CreateContainerError"
                    | "CreateContainerConfigError"
            )
        );
        if bad_wait || (s.restart_count > 0 && !s.ready) {
            let oom = s
                .last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .and_then(|t| t.reason.as_deref())
                == Some("OOMKilled");
            failing = Some(failing.unwrap_or(false) || oom);
        }
    }
    failing
}

/// The node of a PEM pod that the node lifecycle controller marked not ready because its
/// node stopped reporting: the pod's Ready condition is False while every container
/// still says ready (a kubelet that saw its container fail would say so in the
/// container's status). `None` for any other pod.
fn on_lost_node(pod: &Pod) -> Option<&str> {
    let status = pod.status.as_ref()?;
    let pod_ready = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    let containers = status.container_statuses.as_ref()?;
    (pod_ready.status == "False" && !containers.is_empty() && containers.iter().all(|c| c.ready))
        .then(|| pod.spec.as_ref()?.node_name.as_deref())
        .flatten()
}

/// The Vizier's health from its PEM DaemonSet, Kelvin Deployment and PEM pods (as read
/// from the API; `None` when not there yet).
pub fn health(ds: Option<&DaemonSet>, kelvin: Option<&Deployment>, pem_pods: &[Pod]) -> Health {
    let updating = |message: &str, pems: PemCounts| Health {
        phase: VizierPhase::Updating,
        reason: String::new(),
        message: message.to_string(),
        pems,
    };
    let Some((ds, ds_status)) = ds.and_then(|d| Some((d, d.status.as_ref()?))) else {
        return updating("creating the PEM DaemonSet", PemCounts::default());
    };
    let pems = PemCounts {
        desired: ds_status.desired_number_scheduled,
        updated: ds_status.updated_number_scheduled.unwrap_or(0),
        ready: ds_status.number_ready,
    };
    let ds_current = ds_status.observed_generation >= ds.metadata.generation;
    let failures: Vec<bool> = pem_pods.iter().filter_map(failing).collect();
    let failing = i32::try_from(failures.len()).unwrap_or(i32::MAX);
    if ds_current && pems.desired == 0 {
        return Health {
            phase: VizierPhase::Unhealthy,
            reason: "NoNodesSelected".to_string(),
            message: "no node matches the PEMs' nodeSelector and tolerations".to_string(),
            pems,
        };
    }
    if failing > 0 && failing >= pems.desired {
        return Health {
            phase: VizierPhase::Unhealthy,
            reason: "PEMsAllFailing".to_string(),
            message: format!("all {} PEMs are failing", pems.desired),
            pems,
        };
    }
    if failing > 0 {
        let oom = failures.iter().any(|o| *o);
        return Health {
            phase: VizierPhase::Degraded,
            reason: if oom {
                "PEMsSomeInsufficientMemory"
            } else {
                "PEMsHighFailureRate"
            }
            .to_string(),
            message: format!(
                "{failing} of {} PEMs are failing{}",
                pems.desired,
                if oom {
                    " (killed for lack of memory: raise pemMemoryLimit)"
                } else {
                    ""
                }
            ),
            pems,
        };
    }
    let mut lost: Vec<&str> = pem_pods.iter().filter_map(on_lost_node).collect();
    if !lost.is_empty() {
        lost.sort_unstable();
        return Health {
            phase: VizierPhase::Degraded,
            reason: "PEMsNodeNotReady".to_string(),
            // Counted over the pods: the DaemonSet stops counting an unreachable node
            // as desired, though its PEM stays.
            message: format!(
                "{} of {} PEMs are on nodes that stopped reporting: {}",
                lost.len(),
                pem_pods.len(),
                lost.join(", ")
            ),
            pems,
        };
    }
    if !ds_current || pems.updated < pems.desired || pems.ready < pems.desired {
        return updating(
            &format!(
                "PEMs rolling: {} of {} updated, {} ready",
                pems.updated, pems.desired, pems.ready
            ),
            pems,
        );
    }
    let kelvin_ready = kelvin.and_then(|d| {
        let want = d.spec.replicas.unwrap_or(1);
        let status = d.status.as_ref()?;
        let current = status.observed_generation >= d.metadata.generation;
        Some(want > 0 && current && status.ready_replicas.unwrap_or(0) >= want)
    });
    if kelvin_ready != Some(true) {
        return updating("waiting for Kelvin", pems);
    }
    Health {
        phase: VizierPhase::Healthy,
        reason: String::new(),
        message: format!("{} PEMs and Kelvin ready", pems.ready),
        pems,
    }
}

/// The status to write for `vz` given its `health`: the old status with Pixie's fields,
/// the counts and the conditions brought up to date. Equal to the old status when
/// nothing changed (so the reconcile writes nothing).
pub fn status(vz: &Vizier, ds: Option<&DaemonSet>, health: &Health, now: &Time) -> VizierStatus {
    let old = vz.status.clone().unwrap_or_default();
    let mut new = old.clone();
    let generation = vz.metadata.generation;
    new.observed_generation = generation;
    new.version = Some(crate::desired::version(vz));
    new.vizier_phase = Some(health.phase);
    new.vizier_reason = (!health.reason.is_empty()).then(|| health.reason.clone());
    new.message = (!health.message.is_empty()).then(|| health.message.clone());
    new.operator_version = Some(env!("CARGO_PKG_VERSION").to_string());
    new.pems = Some(health.pems);
    new.pems_ready = Some(health.pems.summary());
    new.checksum = ds
        .and_then(|d| d.spec.template.metadata.as_ref()?.annotations.as_ref())
        .and_then(|a| a.get(PEM_CHECKSUM_ANNOTATION).cloned());
    let reconciliation = match health.phase {
        VizierPhase::Healthy | VizierPhase::Degraded => ReconciliationPhase::Ready,
        VizierPhase::Updating => ReconciliationPhase::Updating,
        VizierPhase::Unhealthy | VizierPhase::Disconnected => ReconciliationPhase::Failed,
    };
    if old.reconciliation_phase != Some(reconciliation) {
        new.reconciliation_phase = Some(reconciliation);
        new.last_reconciliation_phase_time =
            k8s_openapi::jiff::Timestamp::from_second(now.0.as_second())
                .ok()
                .map(Time);
    }
    let mut conditions = health.phase.conditions(&health.reason, &health.message);
    conditions.push(vz.spec.ignored_fields_condition());
    for c in conditions {
        set_condition(&mut new.conditions, c, generation, now);
    }
    new
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use k8s_openapi::api::apps::v1::{DaemonSetStatus, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use px_crds::{VizierSpec, find_condition, is_true};

    fn ds(generation: i64, observed: i64, desired: i32, updated: i32, ready: i32) -> DaemonSet {
        let mut d = DaemonSet::default();
        d.metadata.generation = Some(generation);
        d.status = Some(DaemonSetStatus {
            observed_generation: Some(observed),
            desired_number_scheduled: desired,
            updated_number_scheduled: Some(updated),
            number_ready: ready,
            ..DaemonSetStatus::default()
        });
        d
    }

    fn kelvin(replicas: i32, ready: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(1);
        d.spec = DeploymentSpec {
            replicas: Some(replicas),
            ..DeploymentSpec::default()
        };
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            ready_replicas: Some(ready),
            ..DeploymentStatus::default()
        });
        d
    }

    fn pod(waiting: Option<&str>, restarts: i32, ready: bool, last: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "pem".into(),
                    ready,
                    restart_count: restarts,
                    state: Some(ContainerState {
                        waiting: waiting.map(|r| ContainerStateWaiting {
                            reason: Some(r.into()),
                            ..ContainerStateWaiting::default()
                        }),
                        ..ContainerState::default()
                    }),
                    last_state: last.map(|r| ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            reason: Some(r.into()),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn healthy_pod() -> Pod {
        pod(None, 0, true, None)
    }

    type Case = (
        &'static str,
        Option<DaemonSet>,
        Option<Deployment>,
        Vec<Pod>,
        VizierPhase,
        &'static str,
    );

    #[test]
    fn phases_follow_the_daemonset_and_deployment() {
        let k = kelvin(1, 1);
        let ok = [healthy_pod(), healthy_pod()];
        let table: Vec<Case> = vec![
            ("nothing yet", None, None, vec![], VizierPhase::Updating, ""),
            (
                "ds not observed",
                Some(ds(2, 1, 2, 2, 2)),
                Some(k.clone()),
                ok.to_vec(),
                VizierPhase::Updating,
                "",
            ),
            (
                "rolling",
                Some(ds(2, 2, 2, 1, 2)),
                Some(k.clone()),
                ok.to_vec(),
                VizierPhase::Updating,
                "",
            ),
            (
                "not all ready",
                Some(ds(1, 1, 2, 2, 1)),
                Some(k.clone()),
                ok.to_vec(),
                VizierPhase::Updating,
                "",
            ),
            (
                "kelvin not ready",
                Some(ds(1, 1, 2, 2, 2)),
                Some(kelvin(1, 0)),
                ok.to_vec(),
                VizierPhase::Updating,
                "",
            ),
            (
                "kelvin missing",
                Some(ds(1, 1, 2, 2, 2)),
                None,
                ok.to_vec(),
                VizierPhase::Updating,
                "",
            ),
            (
                "all ready",
                Some(ds(1, 1, 2, 2, 2)),
                Some(k.clone()),
                ok.to_vec(),
                VizierPhase::Healthy,
                "",
            ),
            (
                "one crashing",
                Some(ds(1, 1, 2, 2, 1)),
                Some(k.clone()),
                vec![
                    healthy_pod(),
                    pod(Some("CrashLoopBackOff"), 3, false, Some("Error")),
                ],
                VizierPhase::Degraded,
                "PEMsHighFailureRate",
            ),
            (
                "one out of memory",
                Some(ds(1, 1, 2, 2, 1)),
                Some(k.clone()),
                vec![healthy_pod(), pod(None, 1, false, Some("OOMKilled"))],
                VizierPhase::Degraded,
                "PEMsSomeInsufficientMemory",
            ),
            (
                "all failing",
                Some(ds(1, 1, 2, 2, 0)),
                Some(k.clone()),
                vec![
                    pod(Some("ErrImagePull"), 0, false, None),
                    pod(Some("CrashLoopBackOff"), 1, false, None),
                ],
                VizierPhase::Unhealthy,
                "PEMsAllFailing",
            ),
            (
                "no node selected",
                Some(ds(1, 1, 0, 0, 0)),
                Some(k.clone()),
                vec![],
                VizierPhase::Unhealthy,
                "NoNodesSelected",
            ),
        ];
        for (what, d, k, pods, phase, reason) in table {
            let h = health(d.as_ref(), k.as_ref(), &pods);
            assert_eq!(
                (h.phase, h.reason.as_str()),
                (phase, reason),
                "{what}: {h:?}"
            );
        }
    }

    #[test]
    fn pems_on_a_node_that_stopped_reporting_degrade_the_vizier() {
        use k8s_openapi::api::core::v1::{PodCondition, PodSpec};
        let on = |node: &str, pod_ready: &str| {
            let mut p = healthy_pod();
            p.spec = Some(PodSpec {
                node_name: Some(node.into()),
                ..PodSpec::default()
            });
            p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
                type_: "Ready".into(),
                status: pod_ready.into(),
                ..PodCondition::default()
            }]);
            p
        };
        // The node lifecycle controller marked node-b's PEM not ready; its kubelet, silent,
        // last said the container was ready.
        let h = health(
            Some(&ds(1, 1, 2, 2, 1)),
            Some(&kelvin(1, 1)),
            &[on("node-a", "True"), on("node-b", "False")],
        );
        assert_eq!(h.phase, VizierPhase::Degraded);
        assert_eq!(h.reason, "PEMsNodeNotReady");
        assert_eq!(
            h.message,
            "1 of 2 PEMs are on nodes that stopped reporting: node-b"
        );
        // A PEM not ready because its container is not ready is rolling, not lost.
        let mut starting = on("node-b", "False");
        starting
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .ready = false;
        let h = health(
            Some(&ds(1, 1, 2, 2, 1)),
            Some(&kelvin(1, 1)),
            &[on("node-a", "True"), starting],
        );
        assert_eq!(h.phase, VizierPhase::Updating);
    }

    #[test]
    fn a_restarted_pod_that_is_ready_again_is_not_failing() {
        let h = health(
            Some(&ds(1, 1, 2, 2, 2)),
            Some(&kelvin(1, 1)),
            &[healthy_pod(), pod(None, 2, true, Some("Error"))],
        );
        assert_eq!(h.phase, VizierPhase::Healthy);
    }

    fn vizier() -> Vizier {
        let mut vz = Vizier::new(
            "pixie",
            VizierSpec {
                version: Some("1.2.3".into()),
                deploy_key: Some("px-dep".into()),
                ..VizierSpec::default()
            },
        );
        vz.metadata.generation = Some(4);
        vz
    }

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn status_carries_pixie_fields_counts_and_conditions() {
        let vz = vizier();
        let d = ds(1, 1, 2, 2, 1);
        let h = health(Some(&d), Some(&kelvin(1, 1)), &[]);
        let s = status(&vz, Some(&d), &h, &at(100));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.vizier_phase, Some(VizierPhase::Updating));
        assert_eq!(s.reconciliation_phase, Some(ReconciliationPhase::Updating));
        assert_eq!(s.pems_ready.as_deref(), Some("1/2"));
        assert_eq!(s.version.as_deref(), Some("1.2.3"));
        assert!(is_true(&s.conditions, px_crds::RECONCILING));
        assert!(!is_true(&s.conditions, px_crds::READY));
        let ignored = find_condition(&s.conditions, px_crds::IGNORED_FIELDS).unwrap();
        assert_eq!(ignored.status, "True");
        assert!(ignored.message.contains("deployKey"), "{}", ignored.message);
    }

    #[test]
    fn the_same_observation_later_gives_the_same_status() {
        let mut vz = vizier();
        let d = ds(1, 1, 2, 2, 2);
        let h = health(Some(&d), Some(&kelvin(1, 1)), &[]);
        let first = status(&vz, Some(&d), &h, &at(100));
        vz.status = Some(first.clone());
        let second = status(&vz, Some(&d), &h, &at(500));
        assert_eq!(first, second, "a second pass must not write");
        assert!(is_true(&second.conditions, px_crds::READY));
        assert_eq!(second.last_reconciliation_phase_time, Some(at(100)));
    }

    #[test]
    fn the_reconciliation_time_moves_when_the_phase_does() {
        let mut vz = vizier();
        let d = ds(1, 1, 2, 2, 1);
        let k = kelvin(1, 1);
        vz.status = Some(status(
            &vz,
            Some(&d),
            &health(Some(&d), Some(&k), &[]),
            &at(100),
        ));
        let d = ds(1, 1, 2, 2, 2);
        let s = status(&vz, Some(&d), &health(Some(&d), Some(&k), &[]), &at(200));
        assert_eq!(s.reconciliation_phase, Some(ReconciliationPhase::Ready));
        assert_eq!(s.last_reconciliation_phase_time, Some(at(200)));
        let ready = find_condition(&s.conditions, px_crds::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("True", at(200))
        );
    }
}
