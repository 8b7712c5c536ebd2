//! Secret volumes, as the kubelet makes them: the Secret's keys (or the `items` chosen)
//! written under the pod's directory with `defaultMode` or each item's mode, swapped in
//! at once when the Secret changes (kubelet's atomic writer: a `..data` symlink to a new
//! directory, each file a symlink through it), and bind-mounted at each container's
//! `mountPath` in a mount namespace of the container's own, so that a renewed
//! certificate reaches a running process as it does in a cluster.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::process::{StartError, stored};
use super::{NodeContext, s};

/// One secret volume of a pod, and what was last written for it.
pub(super) struct SecretVolume {
    name: String,
    secret: String,
    spec: Value,
    dir: PathBuf,
    written: Option<Vec<(String, Vec<u8>, u32)>>,
    generation: u64,
}

/// The pod's secret volumes, under `<node dir>/volumes/<pod uid>/`.
pub(super) struct Volumes {
    secrets: Vec<SecretVolume>,
}

impl Volumes {
    pub(super) fn of(ctx: &NodeContext, pod: &Value) -> Self {
        let root = ctx.dir.join("volumes").join(s(pod, "/metadata/uid"));
        let secrets = pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| {
                let spec = v.get("secret")?.clone();
                let name = s(v, "/name").to_string();
                Some(SecretVolume {
                    dir: root.join(&name),
                    secret: s(&spec, "/secretName").to_string(),
                    name,
                    spec,
                    written: None,
                    generation: 0,
                })
            })
            .collect();
        Self { secrets }
    }

    /// Writes every secret volume whose Secret changed. A Secret that is missing and not
    /// `optional`, or an item whose key it lacks, keeps the containers from starting.
    pub(super) async fn sync(&mut self, ctx: &NodeContext, pod: &Value) -> Result<(), StartError> {
        let ns = s(pod, "/metadata/namespace");
        for v in &mut self.secrets {
            let object = stored(ctx, "Secret", ns, &v.secret)
                .await
                .map_err(mount_error)?;
            let files = files(&v.spec, object.as_ref(), ns).map_err(mount_error)?;
            if v.written.as_ref() == Some(&files) {
                continue;
            }
            v.generation += 1;
            let (dir, generation) = (v.dir.clone(), v.generation);
            let to_write = files.clone();
            tokio::task::spawn_blocking(move || write_atomically(&dir, generation, &to_write))
                .await
                .map_err(|e| mount_error(e.to_string()))?
                .map_err(|e| mount_error(format!("writing volume {}: {e}", v.name)))?;
            v.written = Some(files);
        }
        Ok(())
    }

    /// `(host directory, mountPath)` of each of `container`'s mounts of a secret volume.
    pub(super) fn mounts(&self, container: &Value) -> Vec<(PathBuf, PathBuf)> {
        container
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let v = self.secrets.iter().find(|v| v.name == s(m, "/name"))?;
                Some((v.dir.clone(), PathBuf::from(s(m, "/mountPath"))))
            })
            .collect()
    }

    /// Removes what was written (the pod is gone).
    pub(super) fn remove(&self) {
        for v in &self.secrets {
            let _ = std::fs::remove_dir_all(&v.dir);
        }
    }
}

fn mount_error(message: String) -> StartError {
    (
        "ContainerCreating".to_string(),
        format!("MountVolume.SetUp failed: {message}"),
    )
}

/// The files a secret volume holds: `(path, bytes, mode)`, from `items` or every key.
fn files(
    spec: &Value,
    secret: Option<&Value>,
    ns: &str,
) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    use base64::Engine as _;
    let name = s(spec, "/secretName");
    let optional = spec.get("optional").and_then(Value::as_bool) == Some(true);
    let Some(secret) = secret else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(format!("secret {ns}/{name} not found"))
        };
    };
    let mode = |v: Option<&Value>| {
        v.and_then(Value::as_u64)
            .and_then(|m| u32::try_from(m).ok())
    };
    let default_mode = mode(spec.get("defaultMode")).unwrap_or(0o644);
    let data = secret.get("data").and_then(Value::as_object);
    let decode = |key: &str| -> Result<Option<Vec<u8>>, String> {
        let Some(raw) = data.and_then(|d| d.get(key)).and_then(Value::as_str) else {
            return Ok(None);
        };
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map(Some)
            .map_err(|_| format!("key {key} of secret {ns}/{name} is not base64"))
    };
    let mut out = Vec::new();
    match spec.get("items").and_then(Value::as_array) {
        Some(items) => {
            for item in items {
                let key = s(item, "/key");
                let bytes = decode(key)?
                    .ok_or_else(|| format!("couldn't find key {key} in Secret {ns}/{name}"))?;
                let path = s(item, "/path");
                if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
                    return Err(format!(
                        "item path {path:?} of secret {name} is not relative"
                    ));
                }
                out.push((
                    path.to_string(),
                    bytes,
                    mode(item.get("mode")).unwrap_or(default_mode),
                ));
            }
        }
        None => {
            for key in data.into_iter().flat_map(|d| d.keys()) {
                if let Some(bytes) = decode(key)? {
                    out.push((key.clone(), bytes, default_mode));
                }
            }
        }
    }
    Ok(out)
}

/// Writes `files` into `dir/..<generation>`, points `dir/..data` at it with one rename,
/// links each file through `..data`, and removes the previous generation.
fn write_atomically(
    dir: &Path,
    generation: u64,
    files: &[(String, Vec<u8>, u32)],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let data_dir = format!("..{generation}");
    let target = dir.join(&data_dir);
    std::fs::create_dir_all(&target)?;
    for (path, bytes, mode) in files {
        let file = target.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, bytes)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&data_dir, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for (path, _, _) in files {
        let top = path.split('/').next().unwrap_or(path);
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)?;
        }
    }
    if generation > 1 {
        let _ = std::fs::remove_dir_all(dir.join(format!("..{}", generation - 1)));
    }
    Ok(())
}

/// Makes `cmd` run in a mount namespace of its own in which each `(host dir, mount
/// path)` is bind-mounted read-only, as a container sees its volumes. The mount points
/// are made on the host first (empty directories).
pub(super) fn with_mounts(
    cmd: &mut tokio::process::Command,
    mounts: Vec<(PathBuf, PathBuf)>,
) -> Result<(), StartError> {
    if mounts.is_empty() {
        return Ok(());
    }
    let mut prepared = Vec::new();
    for (source, target) in mounts {
        std::fs::create_dir_all(&target)
            .map_err(|e| mount_error(format!("creating mount point {}: {e}", target.display())))?;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| mount_error(e.to_string()))
        };
        prepared.push((c(&source)?, c(&target)?));
    }
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe system calls (unshare, mount) on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Private, so that these mounts do not propagate back to the host.
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (source, target) in &prepared {
                let bind = libc::MS_BIND;
                if libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    bind,
                    std::ptr::null(),
                ) != 0
                    || libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        bind | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn items_pick_keys_with_their_modes_and_a_missing_key_stops_the_pod() {
        let secret = json!({"data": {"a.crt": "Y2VydA==", "a.key": "a2V5", "b.key": "b3RoZXI="}});
        let spec = json!({"secretName": "px-tls", "defaultMode": 0o440, "items": [
            {"key": "a.crt", "path": "tls.crt"}, {"key": "a.key", "path": "tls.key", "mode": 0o400}]});
        let got = files(&spec, Some(&secret), "pl").unwrap();
        assert_eq!(
            got,
            [
                ("tls.crt".to_string(), b"cert".to_vec(), 0o440),
                ("tls.key".to_string(), b"key".to_vec(), 0o400)
            ]
        );
        let all = files(&json!({"secretName": "px-tls"}), Some(&secret), "pl").unwrap();
        assert_eq!(all.len(), 3);
        let missing = json!({"secretName": "px-tls", "items": [{"key": "c.crt", "path": "x"}]});
        assert!(
            files(&missing, Some(&secret), "pl")
                .unwrap_err()
                .contains("c.crt")
        );
        assert!(files(&spec, None, "pl").unwrap_err().contains("not found"));
        let escape = json!({"secretName": "px-tls", "items": [{"key": "a.crt", "path": "../x"}]});
        assert!(files(&escape, Some(&secret), "pl").is_err());
    }

    #[test]
    fn a_new_generation_replaces_the_files_behind_the_same_paths() {
        let dir = std::env::temp_dir().join(format!("px-volume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_atomically(&dir, 1, &[("tls.crt".into(), b"one".to_vec(), 0o440)]).unwrap();
        assert_eq!(std::fs::read(dir.join("tls.crt")).unwrap(), b"one");
        write_atomically(&dir, 2, &[("tls.crt".into(), b"two".to_vec(), 0o440)]).unwrap();
        assert_eq!(std::fs::read(dir.join("tls.crt")).unwrap(), b"two");
        assert!(!dir.join("..1").exists());
        let mode = std::fs::metadata(dir.join("tls.crt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o440);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
