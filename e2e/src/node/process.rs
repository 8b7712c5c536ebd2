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

/// Why a container cannot be started: kubelet's waiting reason and message.
type StartError = (String, String);

fn config_error(message: String) -> StartError {
    ("CreateContainerConfigError".to_string(), message)
}

/// The value of one `env[]` entry: a plain value, a downward-API field, or a key of a
/// Secret or ConfigMap of the pod's namespace. `Ok(None)` leaves the variable unset.
fn env_value(ctx: &NodeContext, pod: &Value, e: &Value) -> Result<Option<String>, StartError> {
    if let Some(v) = e.get("value").and_then(Value::as_str) {
        return Ok(Some(v.to_string()));
    }
    let Some(from) = e.get("valueFrom") else {
        return Ok(None);
    };
    if let Some(path) = from.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
        return Ok(field_ref(pod, ctx, path));
    }
    let ns = s(pod, "/metadata/namespace");
    for (field, kind) in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")] {
        if let Some(selector) = from.get(field) {
            let name = s(selector, "/name");
            let object = stored(ctx, kind, ns, name);
            return key_ref(kind, ns, object.as_ref(), selector).map_err(config_error);
        }
    }
    Ok(None)
}

/// The Secret or ConfigMap `namespace/name`, as stored, if it exists.
fn stored(ctx: &NodeContext, kind: &str, namespace: &str, name: &str) -> Option<Value> {
    let plural = if kind == "Secret" {
        "secrets"
    } else {
        "configmaps"
    };
    let store = ctx.shared.lock();
    let res = store.resource("", "v1", plural)?;
    store.get(&res, "v1", namespace, name).ok()
}

/// The value `selector` (`{name, key, optional}`) picks from `object`, a Secret
/// (`data`, base64) or ConfigMap (`data`), with kubelet's messages when the object or
/// the key is missing and not `optional` (then the container is not started).
fn key_ref(
    kind: &str,
    namespace: &str,
    object: Option<&Value>,
    selector: &Value,
) -> Result<Option<String>, String> {
    let (name, key) = (s(selector, "/name"), s(selector, "/key"));
    let optional = selector.get("optional").and_then(Value::as_bool) == Some(true);
    let Some(object) = object else {
        return missing(
            optional,
            format!("{} {name:?} not found", kind.to_lowercase()),
        );
    };
    let Some(raw) = object
        .get("data")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)
    else {
        return missing(
            optional,
            format!("couldn't find key {key} in {kind} {namespace}/{name}"),
        );
    };
    if kind != "Secret" {
        return Ok(Some(raw.to_string()));
    }
    let bytes = crate::defaults::base64_decode(raw)
        .ok_or_else(|| format!("key {key} of {kind} {namespace}/{name} is not base64"))?;
    // The environment is kept as strings here; a key that is not UTF-8 is mangled
    // rather than refused (kubelet would pass the bytes).
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Something `key_ref` looked for is missing: unset if `optional`, else `message`.
fn missing(optional: bool, message: String) -> Result<Option<String>, String> {
    if optional { Ok(None) } else { Err(message) }
}

/// The container's environment: PATH, the pod's env (plain values, field refs, Secret
/// and ConfigMap keys), the kubeconfig in place of in-cluster credentials, and the
/// node's cgroup for the PEM. A Secret or ConfigMap key that cannot be read is kubelet's
/// `CreateContainerConfigError`: the container is not started, and retried.
fn environment(
    ctx: &NodeContext,
    pod: &Value,
    container: &Value,
) -> Result<Vec<(String, String)>, StartError> {
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
        if let Some(v) = env_value(ctx, pod, e)? {
            let v = expand(&v, &env);
            env.retain(|(k, _)| *k != name);
            env.push((name, v));
        }
    }
    env.push((
        "PX_PEM_CGROUP".to_string(),
        ctx.cgroup.display().to_string(),
    ));
    Ok(env)
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
) -> Result<ProcessGroup, StartError> {
    let image = s(container, "/image");
    let exe = image_path(&ctx.images, image).ok_or_else(|| {
        (
            "ErrImagePull".to_string(),
            format!("image {image:?} is not mapped to a local executable"),
        )
    })?;
    let env = environment(ctx, pod, container)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn selector(name: &str, key: &str, optional: bool) -> Value {
        json!({"name": name, "key": key, "optional": optional})
    }

    #[test]
    fn secret_keys_are_decoded_and_config_map_keys_taken_as_they_are() {
        let secret = json!({"data": {"key": "czNjcjN0"}});
        assert_eq!(
            key_ref("Secret", "pl", Some(&secret), &selector("k", "key", false)),
            Ok(Some("s3cr3t".to_string()))
        );
        let cm = json!({"data": {"mode": "fast"}});
        assert_eq!(
            key_ref("ConfigMap", "pl", Some(&cm), &selector("c", "mode", false)),
            Ok(Some("fast".to_string()))
        );
    }

    #[test]
    fn a_missing_secret_or_key_is_kubelets_error_unless_optional() {
        assert_eq!(
            key_ref(
                "Secret",
                "pl",
                None,
                &selector("pixie-api-key", "key", false)
            ),
            Err("secret \"pixie-api-key\" not found".to_string())
        );
        let secret = json!({"data": {"other": "eA=="}});
        assert_eq!(
            key_ref("Secret", "pl", Some(&secret), &selector("s", "key", false)),
            Err("couldn't find key key in Secret pl/s".to_string())
        );
        assert_eq!(
            key_ref("Secret", "pl", Some(&secret), &selector("s", "key", true)),
            Ok(None)
        );
        assert_eq!(
            key_ref("ConfigMap", "pl", None, &selector("c", "k", true)),
            Ok(None)
        );
        assert!(
            key_ref(
                "Secret",
                "pl",
                Some(&json!({"data": {"key": "*"}})),
                &selector("s", "key", false)
            )
            .is_err()
        );
    }
}
