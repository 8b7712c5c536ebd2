//! Container processes: the executable an image maps to, the environment (downward API,
//! Secret and ConfigMap keys read from the API as the node, a kubeconfig with the pod's
//! service-account token, the node's cgroup), joining the container's cgroup
//! (`<node cgroup>/pod<uid>/<container id>`, kubelet's naming with the cgroupfs driver)
//! before exec, and killing the whole process group.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::Value;
use tokio::process::{Child, Command};

use super::{NodeContext, s};

/// A process group that is SIGKILLed when dropped (pod deleted, agent aborted).
pub(super) struct ProcessGroup {
    child: Child,
    pgid: i32,
    id: String,
}

impl ProcessGroup {
    /// The container's id: 64 hex digits, as containerd's are, and the name of its cgroup.
    pub(super) fn id(&self) -> &str {
        &self.id
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
        "status.podIP" | "status.podIPs" => super::pod_ip(ctx, pod).to_string(),
        "status.hostIP" | "status.hostIPs" => ctx.ip.clone(),
        _ => return None,
    })
}

/// Why a container cannot be started: kubelet's waiting reason and message.
pub(super) type StartError = (String, String);

fn config_error(message: String) -> StartError {
    ("CreateContainerConfigError".to_string(), message)
}

/// The value of one `env[]` entry: a plain value, a downward-API field, or a key of a
/// Secret or ConfigMap of the pod's namespace. `Ok(None)` leaves the variable unset.
async fn env_value(
    ctx: &NodeContext,
    pod: &Value,
    e: &Value,
) -> Result<Option<String>, StartError> {
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
            let object = stored(ctx, kind, ns, name).await.map_err(config_error)?;
            return key_ref(kind, ns, object.as_ref(), selector).map_err(config_error);
        }
    }
    Ok(None)
}

/// Runs `call` again while the API server answers 403 Forbidden, for up to 5 s: the
/// Node authorizer learns that a pod bound to this node refers to a Secret, ConfigMap or
/// ServiceAccount from its own watch, a moment after the kubelet sees the pod.
async fn until_authorized<T, F, Fut>(mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match call().await {
            Err(kube::Error::Api(e)) if e.code == 403 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// The Secret or ConfigMap `namespace/name` if it exists, read as the node (the Node
/// authorizer lets a node read only what the pods bound to it refer to).
pub(super) async fn stored(
    ctx: &NodeContext,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, String> {
    let object = until_authorized(|| async {
        if kind == "Secret" {
            Api::<Secret>::namespaced(ctx.client.clone(), namespace)
                .get_opt(name)
                .await
                .map(|o| o.and_then(|o| serde_json::to_value(o).ok()))
        } else {
            Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
                .get_opt(name)
                .await
                .map(|o| o.and_then(|o| serde_json::to_value(o).ok()))
        }
    })
    .await;
    object.map_err(|e| format!("reading {kind} {namespace}/{name}: {e}"))
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
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| format!("key {key} of {kind} {namespace}/{name} is not base64"))?;
    // The environment is kept as strings here; a key that is not UTF-8 is mangled
    // rather than refused (kubelet would pass the bytes).
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Something `key_ref` looked for is missing: unset if `optional`, else `message`.
fn missing(optional: bool, message: String) -> Result<Option<String>, String> {
    if optional { Ok(None) } else { Err(message) }
}

/// The container's environment: PATH, the pod's env (plain values, field refs, Secret
/// and ConfigMap keys), a kubeconfig with the pod's service-account token in place of
/// the in-cluster mount, and the node's cgroup for the PEM. A Secret or ConfigMap key
/// that cannot be read is kubelet's `CreateContainerConfigError`: the container is not
/// started, and retried.
pub(super) async fn environment(
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
    ];
    if let Some(kubeconfig) = pod_kubeconfig(ctx, pod).await? {
        env.push(("KUBECONFIG".to_string(), kubeconfig.display().to_string()));
    }
    for e in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(e, "/name").to_string();
        if let Some(v) = env_value(ctx, pod, e).await? {
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

/// A kubeconfig holding a token of the pod's ServiceAccount, bound to the pod (what a
/// kubelet projects into `/var/run/secrets/kubernetes.io/serviceaccount`), unless the
/// pod opts out with `automountServiceAccountToken: false`.
async fn pod_kubeconfig(ctx: &NodeContext, pod: &Value) -> Result<Option<PathBuf>, StartError> {
    if pod.pointer("/spec/automountServiceAccountToken") == Some(&Value::Bool(false)) {
        return Ok(None);
    }
    let ns = s(pod, "/metadata/namespace");
    let account = match s(pod, "/spec/serviceAccountName") {
        "" => "default",
        a => a,
    };
    let request = token_request(Some(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "name": s(pod, "/metadata/name"),
        "uid": s(pod, "/metadata/uid"),
    })));
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), ns);
    let params = PostParams::default();
    let token = until_authorized(|| accounts.create_token_request(account, &params, &request))
        .await
        .map_err(|e| {
            config_error(format!(
                "requesting a token for service account {ns}/{account}: {e}"
            ))
        })?
        .status
        .and_then(|s| s.token)
        .unwrap_or_default();
    let dir = ctx.dir.join("pods").join(s(pod, "/metadata/uid"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| config_error(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join("kubeconfig");
    crate::control_plane::write_kubeconfig(
        &path,
        &ctx.server,
        &ctx.ca_pem,
        account,
        crate::control_plane::Credentials::Token(&token),
    )
    .map_err(|e| config_error(e.to_string()))?;
    Ok(Some(path))
}

/// A TokenRequest for an hour's token, bound to `bound` (an object reference) if given.
pub(crate) fn token_request(bound: Option<Value>) -> TokenRequest {
    let mut spec = serde_json::json!({"expirationSeconds": 3600});
    if let Some(bound) = bound {
        spec["boundObjectRef"] = bound;
    }
    serde_json::from_value(serde_json::json!({"spec": spec})).unwrap_or_default()
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
    env: Vec<(String, String)>,
    mounts: Vec<(PathBuf, PathBuf)>,
) -> Result<ProcessGroup, StartError> {
    let image = s(container, "/image");
    let exe = image_path(&ctx.images, image).ok_or_else(|| {
        (
            "ErrImagePull".to_string(),
            format!("image {image:?} is not mapped to a local executable"),
        )
    })?;
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
    let id = container_id(pod, container_name);
    in_pod_cgroup(&mut cmd, &pod_cgroup(ctx, pod).join(&id))?;
    super::volume::with_mounts(&mut cmd, mounts)?;
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
    Ok(ProcessGroup { child, pgid, id })
}

/// A new container id for a container of `pod`: 64 hex digits, unique per start.
fn container_id(pod: &Value, name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per instance: four of them make 256 fresh bits.
    (0..4)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write(s(pod, "/metadata/uid").as_bytes());
            h.write(name.as_bytes());
            h.write_u32(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// Makes `cmd` join the pod's cgroup (created if need be) before it executes, so every
/// process it starts is in it.
fn in_pod_cgroup(cmd: &mut Command, cgroup: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(cgroup).map_err(|e| {
        (
            "RunContainerError".to_string(),
            format!("creating {}: {e}", cgroup.display()),
        )
    })?;
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|e| ("RunContainerError".to_string(), e.to_string()))?;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (open, write, close) on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            // "0" means the writing process.
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
    Ok(())
}

/// Runs an `exec` probe's command in the pod's cgroup with the container's environment;
/// passes when it exits 0. The command is killed if the probe times out (the future is
/// dropped).
pub(super) async fn exec_probe(
    ctx: &NodeContext,
    pod: &Value,
    command: &[String],
    env: Vec<(String, String)>,
) -> bool {
    let Some((program, args)) = command.split_first() else {
        return false;
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .current_dir(&ctx.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if in_pod_cgroup(&mut cmd, &pod_cgroup(ctx, pod)).is_err() {
        return false;
    }
    matches!(cmd.status().await, Ok(status) if status.success())
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
