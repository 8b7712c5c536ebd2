//! One pod's worker: starts its containers, restarts them per restartPolicy with
//! back-off, runs their readiness probes, writes the pod's status, and terminates them
//! when the pod is deleted (SIGTERM, the grace period, SIGKILL), then finishes the
//! deletion.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::probe::Readiness;
use super::process::{ProcessGroup, environment, pod_cgroup, spawn};
use super::volume::Volumes;
use super::{NodeContext, s};
use crate::time::now_rfc3339;

/// First restart delay; doubled per restart up to [`MAX_BACKOFF`] (kubelet: 10 s up to
/// 5 min; shortened so tests of crash loops are quick).
const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the worker checks its processes for exits.
const POLL: Duration = Duration::from_millis(50);
/// How often the worker writes its pod's status even when it has not changed.
const RESYNC: Duration = Duration::from_secs(5);
/// How often secret volumes are brought up to date with their Secrets (the kubelet's
/// sync period is a minute; short here so that tests of renewal do not wait).
const VOLUME_SYNC: Duration = Duration::from_secs(2);

/// What a pod worker is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PodStop {
    Run,
    /// The pod is being deleted: SIGTERM, then SIGKILL after this grace period.
    Terminate(Duration),
    /// The node stops: SIGKILL now.
    Kill,
}

/// Longest grace period honoured, whatever the pod asks for, to keep tests quick.
const MAX_GRACE: Duration = Duration::from_secs(10);

/// SIGTERMs every running container, waits for them to exit within the grace period (or
/// until told to kill), then lets the drops SIGKILL what is left.
async fn terminate(
    containers: &mut [ContainerRun],
    grace: Duration,
    stop: &mut watch::Receiver<PodStop>,
) {
    for c in containers.iter() {
        if let Some(p) = &c.process {
            p.terminate();
        }
    }
    let deadline = Instant::now() + grace.min(MAX_GRACE);
    while Instant::now() < deadline && *stop.borrow() != PodStop::Kill {
        let running = containers
            .iter_mut()
            .filter_map(|c| c.process.as_mut())
            .any(|p| p.exited().is_none());
        if !running {
            break;
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    for c in containers.iter_mut() {
        c.process = None;
    }
}

struct ContainerRun {
    spec: Value,
    name: String,
    process: Option<ProcessGroup>,
    readiness: Readiness,
    started_at: String,
    restart_count: u64,
    last_terminated: Option<Value>,
    waiting: Option<(String, String)>,
    next_start: Instant,
    backoff: Duration,
    /// Whether a container that exited may start again (restartPolicy).
    done: bool,
}

impl ContainerRun {
    fn ready(&self) -> bool {
        self.process.is_some() && self.readiness.ready()
    }
}

fn container_status(c: &ContainerRun) -> Value {
    let state = match (&c.process, &c.waiting) {
        (Some(_), _) => json!({"running": {"startedAt": c.started_at}}),
        (None, Some((reason, message))) => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        (None, None) => c
            .last_terminated
            .clone()
            .map(|t| json!({"terminated": t}))
            .unwrap_or_else(|| json!({"waiting": {"reason": "ContainerCreating"}})),
    };
    let mut status = json!({
        "name": c.name,
        "image": s(&c.spec, "/image"),
        "imageID": "",
        "ready": c.ready(),
        "started": c.process.is_some(),
        "restartCount": c.restart_count,
        "state": state,
        "lastState": c.last_terminated.clone().map(|t| json!({"terminated": t})).unwrap_or_else(|| json!({})),
    });
    if let Some(p) = &c.process {
        status["containerID"] = json!(format!("containerd://{}", p.id()));
    }
    status
}

fn pod_status(
    containers: &[ContainerRun],
    started: &str,
    policy: &str,
    ip: &str,
    pod_ip: &str,
) -> Value {
    let all_ready = !containers.is_empty() && containers.iter().all(ContainerRun::ready);
    let any_running = containers.iter().any(|c| c.process.is_some());
    let all_done = containers.iter().all(|c| c.done);
    let failed = containers.iter().any(|c| {
        c.last_terminated
            .as_ref()
            .is_some_and(|t| t["exitCode"] != json!(0))
    });
    let phase = if any_running {
        "Running"
    } else if all_done && policy != "Always" {
        if failed { "Failed" } else { "Succeeded" }
    } else if containers
        .iter()
        .any(|c| c.restart_count > 0 || c.last_terminated.is_some())
    {
        "Running"
    } else {
        "Pending"
    };
    let ready = if all_ready { "True" } else { "False" };
    let condition = |kind: &str, status: &str| json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": started});
    json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ],
        "hostIP": ip,
        "hostIPs": [{"ip": ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": started,
        "containerStatuses": containers.iter().map(container_status).collect::<Vec<_>>(),
    })
}

/// Writes the status (a strategic merge: conditions others own, such as the scheduler's,
/// stay); returns false when the pod is gone or replaced (its uid differs).
async fn write_status(ctx: &NodeContext, pod: &Value, status: Value) -> bool {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), s(pod, "/metadata/namespace"));
    let patch = json!({"metadata": {"uid": s(pod, "/metadata/uid")}, "status": status});
    match api
        .patch_status(
            s(pod, "/metadata/name"),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => false,
        Err(e) => {
            tracing::warn!(pod = s(pod, "/metadata/name"), "writing pod status: {e}");
            true
        }
    }
}

/// The last step of a graceful deletion, once the pod's processes are gone: the kubelet
/// deletes the pod with no grace period left, and the API server removes it.
pub(super) async fn finish_deletion(ctx: &NodeContext, pod: &Pod) {
    let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return;
    };
    let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, "finishing the pod's deletion: {e}"),
    }
}

/// Runs one pod's containers until told to stop, removes the pod's cgroup (with
/// anything a container left running in it) and, when the pod was deleted, finishes
/// its deletion.
pub(super) async fn run_pod(ctx: Arc<NodeContext>, mut pod: Value, stop: watch::Receiver<PodStop>) {
    let cgroup = pod_cgroup(&ctx, &pod);
    let host_network = pod
        .pointer("/spec/hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let lease = (!host_network).then(|| ctx.pod_ips.lease(s(&pod, "/metadata/uid")));
    if let Some(ip) = lease.as_ref().and_then(|l| l.ip()) {
        pod["status"]["podIP"] = json!(ip);
    }
    let deleted = run_containers(&ctx, &pod, stop).await;
    drop(lease);
    let _ = tokio::task::spawn_blocking(move || crate::cgroup::kill_and_remove(&cgroup)).await;
    if deleted && let Ok(pod) = serde_json::from_value::<Pod>(pod) {
        finish_deletion(&ctx, &pod).await;
    }
}

/// Runs one pod's containers until told to stop; restarts exits per restartPolicy.
/// Returns whether the pod was deleted (rather than the node stopped).
async fn run_containers(
    ctx: &NodeContext,
    pod: &Value,
    mut stop: watch::Receiver<PodStop>,
) -> bool {
    let policy = match s(pod, "/spec/restartPolicy") {
        "" => "Always".to_string(),
        p => p.to_string(),
    };
    let started = now_rfc3339();
    let mut containers: Vec<ContainerRun> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| ContainerRun {
            spec: c.clone(),
            name: s(c, "/name").to_string(),
            process: None,
            readiness: Readiness::new(c.get("readinessProbe")),
            started_at: String::new(),
            restart_count: 0,
            last_terminated: None,
            waiting: None,
            next_start: Instant::now(),
            backoff: BASE_BACKOFF,
            done: false,
        })
        .collect();
    let mut last_written = Value::Null;
    let mut written_at = Instant::now();
    let mut volumes = Volumes::of(ctx, pod);
    let mut volumes_synced: Option<Instant> = None;
    let deleted = loop {
        // Secret volumes follow their Secrets, as the kubelet's periodic sync does.
        let mounted = if volumes_synced.is_none_or(|t| t.elapsed() >= VOLUME_SYNC) {
            let synced = volumes.sync(ctx, pod).await;
            if synced.is_ok() {
                volumes_synced = Some(Instant::now());
            }
            synced
        } else {
            Ok(())
        };
        for c in containers.iter_mut() {
            if c.process.is_none() && !c.done && Instant::now() >= c.next_start {
                let started = match (&mounted, environment(ctx, pod, &c.spec).await) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(()), Ok(env)) => spawn(ctx, pod, &c.spec, env, volumes.mounts(&c.spec)),
                    (Ok(()), Err(e)) => Err(e),
                };
                match started {
                    Ok(p) => {
                        if c.last_terminated.is_some() {
                            c.restart_count += 1;
                        }
                        c.process = Some(p);
                        c.readiness.restart();
                        c.started_at = now_rfc3339();
                        c.waiting = None;
                    }
                    Err((reason, message)) => {
                        c.waiting = Some((reason, message));
                        c.next_start = Instant::now() + c.backoff;
                        c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
        for c in containers.iter_mut() {
            if c.process.is_some() {
                c.readiness.probe(ctx, pod, &c.spec).await;
            }
        }
        let status = pod_status(
            &containers,
            &started,
            &policy,
            &ctx.ip,
            super::pod_ip(ctx, pod),
        );
        // Also every few seconds: others write pod status too (the node lifecycle
        // controller marks the pods of a silent node not ready), and the kubelet's view
        // must win back once it reports again. An unchanged patch changes nothing.
        let online = *ctx.online.borrow();
        if online && (status != last_written || written_at.elapsed() >= RESYNC) {
            if !write_status(ctx, pod, status.clone()).await {
                // The pod is gone or replaced: nothing is left to report to.
                terminate(&mut containers, Duration::ZERO, &mut stop).await;
                break false;
            }
            last_written = status;
            written_at = Instant::now();
        }
        tokio::select! {
            _ = stop.changed() => {
                let order = *stop.borrow();
                match order {
                    PodStop::Terminate(grace) => {
                        terminate(&mut containers, grace, &mut stop).await;
                        break true;
                    }
                    PodStop::Kill => break false,
                    PodStop::Run => {}
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
        for c in containers.iter_mut() {
            let Some(exit) = c.process.as_mut().and_then(ProcessGroup::exited) else {
                continue;
            };
            let code = exit
                .code()
                .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&exit).unwrap_or(0));
            c.process = None;
            c.last_terminated = Some(json!({
                "exitCode": code,
                "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": c.started_at,
                "finishedAt": now_rfc3339(),
            }));
            let restart = match policy.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            if restart {
                c.waiting = Some((
                    "CrashLoopBackOff".to_string(),
                    format!(
                        "back-off {:?} restarting failed container={} pod={}",
                        c.backoff,
                        c.name,
                        s(pod, "/metadata/name")
                    ),
                ));
                c.next_start = Instant::now() + c.backoff;
                c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
            } else {
                c.done = true;
            }
        }
    };
    drop(containers);
    volumes.remove();
    deleted
}
