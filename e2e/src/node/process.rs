//! Container processes: the executable an image maps to, the environment (downward API,
//! kubeconfig, the node's cgroup), joining the pod's cgroup (`<node cgroup>/pod<uid>`,
//! kubelet's naming) before exec, and killing
//! the whole process group.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::process::{Child, Command};

use super::{NodeContext, s};

/// A process group that is SIGKILLed when dropped (pod deleted, agent aborted).
pub(super) struct ProcessGroup {
    child: Child,
    pgid: i32,
}

impl ProcessGroup {
    /// The group's id (the container's first process).
    pub(super) fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Asks every process of the group to stop (SIGTERM).
    pub(super) fn terminate(&self) {
        // SAFETY: kill(2) on the process group this agent created; no memory involved.
        unsafe {
            libc::kill(-self.pgid, libc::SIGTERM);
        }
    }

    /// The exit status of the container's first process, once it has exited.
    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
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

fn image_path(images: &HashMap<String, PathBuf>, image: &str) -> Option<PathBuf> {
    images
        .get(image)
        .or_else(|| images.get(image.split(':').next().unwrap_or(image)))
        .cloned()
}

/// `valueFrom.fieldRef` values the downward API offers.
fn field_ref(pod: &Value, ctx: &NodeContext, path: &str) -> Option<String> {
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
        "spec.nodeName" => ctx.name.clone(),
        "spec.serviceAccountName" => s(pod, "/spec/serviceAccountName").to_string(),
        "status.podIP" | "status.hostIP" | "status.podIPs" | "status.hostIPs" => ctx.ip.clone(),
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
            field_ref(pod, ctx, path)
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

/// The pod's cgroup under its node's: `pod<uid>`, as kubelet names it (cgroupfs driver),
/// so a PEM can find a pod's processes from its uid.
pub(super) fn pod_cgroup(ctx: &NodeContext, pod: &Value) -> PathBuf {
    ctx.cgroup.join(format!("pod{}", s(pod, "/metadata/uid")))
}

pub(super) fn spawn(
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
    let pod_cgroup = pod_cgroup(ctx, pod);
    std::fs::create_dir_all(&pod_cgroup).map_err(|e| {
        (
            "RunContainerError".to_string(),
            format!("creating {}: {e}", pod_cgroup.display()),
        )
    })?;
    let procs = std::ffi::CString::new(pod_cgroup.join("cgroup.procs").as_os_str().as_bytes())
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
            // Joins the pod's cgroup before exec, so every process the container
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
