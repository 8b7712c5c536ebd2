//! Simulated nodes: a Node object and an agent that plays the kubelet's part, running
//! each pod's containers as local processes in the node's cgroup and writing back the
//! pod's status. An exited container is restarted with back-off (restartPolicy Always
//! or OnFailure), as a kubelet would.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::server::Shared;
use crate::store::WriteOptions;
use crate::time::now_rfc3339;

/// The address every pod and node reports: everything runs on this machine.
const LOCAL_IP: &str = "127.0.0.1";
/// First restart delay; doubled per restart up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the agent checks its processes for exits.
const POLL: Duration = Duration::from_millis(50);

/// A simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node name (also its `kubernetes.io/hostname` label).
    pub name: String,
    /// Extra labels, for DaemonSet node selectors.
    pub labels: BTreeMap<String, String>,
}

impl NodeSpec {
    /// A node with just the standard labels.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            labels: BTreeMap::new(),
        }
    }
}

/// What every pod worker of a node needs.
pub(crate) struct NodeContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: String,
    /// Absolute path of the node's cgroup v2 directory.
    pub(crate) cgroup: PathBuf,
    /// Image name (with or without tag) to local executable.
    pub(crate) images: Arc<HashMap<String, PathBuf>>,
    pub(crate) kubeconfig: PathBuf,
    /// Where container output and working directories go.
    pub(crate) dir: PathBuf,
}

/// A running node agent; dropping it kills its pods' processes.
pub(crate) struct NodeAgent {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl NodeAgent {
    /// Registers the Node object and starts the agent.
    pub(crate) fn start(ctx: NodeContext, spec: &NodeSpec) -> Result<Self, crate::Error> {
        register(&ctx, spec)?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(Arc::new(ctx), stop_rx));
        Ok(Self { stop, task })
    }

    /// Stops every pod (killing its processes) and waits for the agent to finish.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

fn register(ctx: &NodeContext, spec: &NodeSpec) -> Result<(), crate::Error> {
    let now = now_rfc3339();
    let mut labels = json!({
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": std::env::consts::ARCH,
    });
    for (k, v) in &spec.labels {
        labels[k] = json!(v);
    }
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": LOCAL_IP}, {"type": "Hostname", "address": spec.name}],
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "nodeInfo": {"kubeletVersion": "v1.32.0-px-e2e", "containerRuntimeVersion": "px-e2e://processes", "operatingSystem": "linux", "architecture": std::env::consts::ARCH},
        },
    });
    let mut store = ctx.shared.lock();
    let res = store
        .resource("", "v1", "nodes")
        .ok_or_else(|| crate::Error::Refused {
            what: "node".into(),
            message: "nodes are not served".into(),
        })?;
    store
        .create(&res, None, node, &WriteOptions::internal("kubelet"))
        .map(|_| ())
        .map_err(|e| crate::Error::Refused {
            what: format!("node {}", spec.name),
            message: e.message,
        })
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// The agent: one worker per pod bound to this node, stopped when the pod goes.
async fn run(ctx: Arc<NodeContext>, mut stop: watch::Receiver<bool>) {
    let mut events = ctx.shared.lock().subscribe();
    let mut workers: HashMap<String, (watch::Sender<PodStop>, JoinHandle<()>)> = HashMap::new();
    // Pods whose processes were asked to terminate and may still be exiting.
    let mut terminating: Vec<(watch::Sender<PodStop>, JoinHandle<()>)> = Vec::new();
    loop {
        let pods: Vec<Value> = {
            let store = ctx.shared.lock();
            let Some(res) = store.resource("", "v1", "pods") else {
                return;
            };
            let on_node =
                crate::selectors::FieldSelector::parse(&format!("spec.nodeName={}", ctx.name))
                    .unwrap_or_default();
            store.list(
                &res,
                "v1",
                None,
                &crate::selectors::LabelSelector::default(),
                &on_node,
            )
        };
        let wanted: HashMap<String, Value> = pods
            .into_iter()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .map(|p| (s(&p, "/metadata/uid").to_string(), p))
            .collect();
        let gone: Vec<String> = workers
            .keys()
            .filter(|uid| !wanted.contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some((stop_pod, handle)) = workers.remove(&uid) {
                let _ = stop_pod.send(PodStop::Terminate);
                terminating.push((stop_pod, handle));
            }
        }
        terminating.retain(|(_, h)| !h.is_finished());
        for (uid, pod) in wanted {
            workers.entry(uid).or_insert_with(|| {
                let (tx, rx) = watch::channel(PodStop::Run);
                (tx, tokio::spawn(run_pod(Arc::clone(&ctx), pod, rx)))
            });
        }
        tokio::select! {
            _ = stop.changed() => break,
            e = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = e {
                    break;
                }
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    // The node is going away: no grace.
    for (stop_pod, handle) in workers.into_values().chain(terminating) {
        let _ = stop_pod.send(PodStop::Kill);
        let _ = handle.await;
    }
}

/// What a pod worker is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodStop {
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
            // SAFETY: kill(2) on the process group this worker created; no memory involved.
            unsafe {
                libc::kill(-p.pgid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + grace.min(MAX_GRACE);
    while Instant::now() < deadline && *stop.borrow() != PodStop::Kill {
        let running = containers
            .iter_mut()
            .filter_map(|c| c.process.as_mut())
            .any(|p| matches!(p.child.try_wait(), Ok(None)));
        if !running {
            return;
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// A process group that is SIGKILLed when dropped (pod deleted, agent aborted).
struct ProcessGroup {
    child: Child,
    pgid: i32,
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the process group we created with
        // process_group(0); it touches no memory of ours.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
        let _ = self.child.start_kill();
    }
}

struct ContainerRun {
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

fn image_path(images: &HashMap<String, PathBuf>, image: &str) -> Option<PathBuf> {
    images
        .get(image)
        .or_else(|| images.get(image.split(':').next().unwrap_or(image)))
        .cloned()
}

/// `valueFrom.fieldRef` values the downward API offers.
fn field_ref(pod: &Value, node: &str, path: &str) -> Option<String> {
    if let Some(key) = path
        .strip_prefix("metadata.labels['")
        .and_then(|k| k.strip_suffix("']"))
    {
        return pod
            .pointer("/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
            .map(String::from);
    }
    if let Some(key) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|k| k.strip_suffix("']"))
    {
        return pod
            .pointer("/metadata/annotations")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
            .map(String::from);
    }
    Some(match path {
        "metadata.name" => s(pod, "/metadata/name").to_string(),
        "metadata.namespace" => s(pod, "/metadata/namespace").to_string(),
        "metadata.uid" => s(pod, "/metadata/uid").to_string(),
        "spec.nodeName" => node.to_string(),
        "spec.serviceAccountName" => s(pod, "/spec/serviceAccountName").to_string(),
        "status.podIP" | "status.hostIP" => LOCAL_IP.to_string(),
        _ => return None,
    })
}

/// The container's environment: PATH, the pod's env (plain values and field refs), the
/// kubeconfig in place of in-cluster credentials, and the node's cgroup for the PEM.
fn environment(ctx: &NodeContext, pod: &Value, container: &Value) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOSTNAME".to_string(), s(pod, "/metadata/name").to_string()),
        (
            "KUBECONFIG".to_string(),
            ctx.kubeconfig.display().to_string(),
        ),
    ];
    for e in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(e, "/name").to_string();
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            Some(v.to_string())
        } else if let Some(path) = e
            .pointer("/valueFrom/fieldRef/fieldPath")
            .and_then(Value::as_str)
        {
            field_ref(pod, &ctx.name, path)
        } else {
            None
        };
        if let Some(v) = value {
            let v = expand(&v, &env);
            env.retain(|(k, _)| *k != name);
            env.push((name, v));
        }
    }
    env.push((
        "PX_PEM_CGROUP".to_string(),
        ctx.cgroup.display().to_string(),
    ));
    env
}

/// `$(VAR)` references in args and env, expanded as Kubernetes does.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

fn spawn(
    ctx: &NodeContext,
    pod: &Value,
    container: &Value,
) -> Result<ProcessGroup, (String, String)> {
    let image = s(container, "/image");
    let exe = image_path(&ctx.images, image).ok_or_else(|| {
        (
            "ErrImagePull".to_string(),
            format!("image {image:?} is not mapped to a local executable"),
        )
    })?;
    let env = environment(ctx, pod, container);
    let strings = |key: &str| -> Vec<String> {
        container
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|x| expand(x, &env))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The mapped executable stands in for the image's entrypoint and for command[0].
    let mut argv: Vec<String> = strings("command").into_iter().skip(1).collect();
    argv.extend(strings("args"));
    let container_name = s(container, "/name");
    let log_path = ctx.dir.join(format!(
        "{}_{}_{container_name}.log",
        s(pod, "/metadata/namespace"),
        s(pod, "/metadata/name")
    ));
    ctx.shared.set_log_path(
        (
            s(pod, "/metadata/namespace").to_string(),
            s(pod, "/metadata/name").to_string(),
            container_name.to_string(),
        ),
        log_path.clone(),
    );
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| ("RunContainerError".to_string(), e.to_string()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| ("RunContainerError".to_string(), e.to_string()))?;
    let workdir = match s(container, "/workingDir") {
        "" => ctx.dir.clone(),
        w => PathBuf::from(w),
    };
    let procs = std::ffi::CString::new(ctx.cgroup.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|e| ("RunContainerError".to_string(), e.to_string()))?;
    let mut cmd = Command::new(&exe);
    cmd.args(&argv)
        .env_clear()
        .envs(env)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (open, write, close) on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            // Joins the node's cgroup before exec, so every process the container
            // starts is in it; "0" means the writing process.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        (
            "RunContainerError".to_string(),
            format!("starting {}: {e}", exe.display()),
        )
    })?;
    let pgid = child.id().map(|p| p as i32).ok_or_else(|| {
        (
            "RunContainerError".to_string(),
            "process exited at once".to_string(),
        )
    })?;
    Ok(ProcessGroup { child, pgid })
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
        status["containerID"] = json!(format!("px-e2e://{}", p.pgid));
    }
    status
}

fn pod_status(containers: &[ContainerRun], started: &str, policy: &str) -> Value {
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
        "hostIP": LOCAL_IP,
        "hostIPs": [{"ip": LOCAL_IP}],
        "podIP": LOCAL_IP,
        "podIPs": [{"ip": LOCAL_IP}],
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

/// Runs one pod's containers until told to stop; restarts exits per restartPolicy.
async fn run_pod(ctx: Arc<NodeContext>, pod: Value, mut stop: watch::Receiver<PodStop>) {
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
        let status = pod_status(&containers, &started, &policy);
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
            let exited = match c.process.as_mut().map(|p| p.child.try_wait()) {
                Some(Ok(Some(status))) => Some(status),
                Some(Err(_)) => None,
                _ => None,
            };
            let Some(exit) = exited else { continue };
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
