//! One pod's worker: starts its containers, restarts them per restartPolicy with
//! back-off, writes the pod's status, and terminates them when the pod goes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::process::{ProcessGroup, pod_cgroup, spawn};
use super::{NodeContext, s};
use crate::store::WriteOptions;
use crate::time::now_rfc3339;

/// First restart delay; doubled per restart up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the worker checks its processes for exits.
pub(super) const POLL: Duration = Duration::from_millis(50);

/// What a pod worker is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PodStop {
    Run,
    /// The pod was deleted: SIGTERM, then SIGKILL after the grace period.
    Terminate,
    /// The node stops: SIGKILL now.
    Kill,
}

/// Longest grace period honoured, whatever the pod asks for, to keep tests quick.
const MAX_GRACE: Duration = Duration::from_secs(10);

/// SIGTERMs every running container, waits for them to exit within the pod's grace
/// period (or until told to kill), then lets the drops SIGKILL what is left.
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
            return;
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

pub(super) struct ContainerRun {
    spec: Value,
    name: String,
    process: Option<ProcessGroup>,
    started_at: String,
    restart_count: u64,
    last_terminated: Option<Value>,
    waiting: Option<(String, String)>,
    next_start: Instant,
    backoff: Duration,
    /// Whether a container that exited may start again (restartPolicy).
    done: bool,
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
        "ready": c.process.is_some(),
        "started": c.process.is_some(),
        "restartCount": c.restart_count,
        "state": state,
        "lastState": c.last_terminated.clone().map(|t| json!({"terminated": t})).unwrap_or_else(|| json!({})),
    });
    if let Some(p) = &c.process {
        status["containerID"] = json!(format!("px-e2e://{}", p.pgid()));
    }
    status
}

fn pod_status(containers: &[ContainerRun], started: &str, policy: &str, ip: &str) -> Value {
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.process.is_some());
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
    json!({
        "phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
            {"type": "Initialized", "status": "True", "lastTransitionTime": started},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": started},
            {"type": "Ready", "status": ready, "lastTransitionTime": started},
        ],
        "hostIP": ip,
        "hostIPs": [{"ip": ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started,
        "qosClass": "BestEffort",
        "containerStatuses": containers.iter().map(container_status).collect::<Vec<_>>(),
    })
}

/// Writes the status unless the pod is gone or replaced; returns false when it is.
fn write_status(ctx: &NodeContext, pod: &Value, status: Value) -> bool {
    let mut store = ctx.shared.lock();
    let Some(res) = store.resource("", "v1", "pods") else {
        return false;
    };
    let Ok(mut current) = store.get(
        &res,
        "v1",
        s(pod, "/metadata/namespace"),
        s(pod, "/metadata/name"),
    ) else {
        return false;
    };
    if s(&current, "/metadata/uid") != s(pod, "/metadata/uid") {
        return false;
    }
    if current.get("status") == Some(&status) {
        return true;
    }
    current["status"] = status;
    let (ns, name) = (
        s(pod, "/metadata/namespace").to_string(),
        s(pod, "/metadata/name").to_string(),
    );
    store
        .update(
            &res,
            "v1",
            &ns,
            &name,
            current,
            &WriteOptions::internal("kubelet").status(),
        )
        .is_ok()
}

/// Runs one pod's containers until told to stop, then removes the pod's cgroup (with
/// anything a container left running in it).
pub(super) async fn run_pod(ctx: Arc<NodeContext>, pod: Value, stop: watch::Receiver<PodStop>) {
    let cgroup = pod_cgroup(&ctx, &pod);
    run_containers(ctx, pod, stop).await;
    let _ = tokio::task::spawn_blocking(move || crate::cgroup::kill_and_remove(&cgroup)).await;
}

/// Runs one pod's containers until told to stop; restarts exits per restartPolicy.
async fn run_containers(ctx: Arc<NodeContext>, pod: Value, mut stop: watch::Receiver<PodStop>) {
    let grace = Duration::from_secs(
        pod.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(30),
    );
    let policy = match s(&pod, "/spec/restartPolicy") {
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
    loop {
        for c in containers.iter_mut() {
            if c.process.is_none() && !c.done && Instant::now() >= c.next_start {
                match spawn(&ctx, &pod, &c.spec) {
                    Ok(p) => {
                        if c.last_terminated.is_some() {
                            c.restart_count += 1;
                        }
                        c.process = Some(p);
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
        let status = pod_status(&containers, &started, &policy, &ctx.ip);
        if status != last_written {
            if !write_status(&ctx, &pod, status.clone()) {
                // The pod is gone (deleted or replaced).
                terminate(&mut containers, grace, &mut stop).await;
                return;
            }
            last_written = status;
        }
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() == PodStop::Terminate {
                    terminate(&mut containers, grace, &mut stop).await;
                }
                return;
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
                        s(&pod, "/metadata/name")
                    ),
                ));
                c.next_start = Instant::now() + c.backoff;
                c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
            } else {
                c.done = true;
            }
        }
    }
}
