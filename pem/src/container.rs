//! Which pod and container a process runs in, from its cgroup, as kubelet names them.
//!
//! kubelet puts every pod in a cgroup named after the pod's UID and every container in
//! one below it named after the container's id, the same with every runtime:
//!
//! - cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>` (`kubepods/pod<uid>/...` for
//!   Guaranteed pods);
//! - systemd driver: `/kubepods.slice/kubepods-burstable.slice/`
//!   `kubepods-burstable-pod<uid with _ for ->.slice/cri-containerd-<id>.scope`
//!   (`crio-<id>.scope` for CRI-O, `docker-<id>.scope` for Docker).
//!
//! A process in no such cgroup is the host's.

/// The pod and container of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerRef {
    /// The pod's UID, with dashes (`metadata.uid`).
    pub pod_uid: String,
    /// The container's id as the runtime reports it in `status.containerStatuses`
    /// (without the `containerd://` prefix); empty for a process in the pod's cgroup
    /// but no container's (CRI-O's `conmon`, for one).
    pub container_id: String,
}

/// The pod and container of the process whose `/proc/PID/cgroup` reads `text`: the
/// first hierarchy whose path names a pod (cgroup v2 has one line, v1 one per
/// controller).
#[must_use]
pub fn from_proc_cgroup(text: &str) -> Option<ContainerRef> {
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find_map(from_cgroup_path)
}

/// The pod and container a cgroup path names, if it names a pod.
#[must_use]
pub fn from_cgroup_path(path: &str) -> Option<ContainerRef> {
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    while let Some(part) = parts.next() {
        if let Some(pod_uid) = pod_uid(part) {
            let container_id = parts.next().and_then(container_id).unwrap_or_default();
            return Some(ContainerRef {
                pod_uid,
                container_id,
            });
        }
    }
    None
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let uid = if let Some(slice) = part.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        uid.replace('_', "-")
    } else {
        part.strip_prefix("pod")?.to_owned()
    };
    is_uid(&uid).then_some(uid)
}

/// A UID: hex digits in groups of 8-4-4-4-12.
fn is_uid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The container id in `<id>`, `cri-containerd-<id>.scope`, `crio-<id>.scope` or
/// `docker-<id>.scope`; `None` for anything else (`crio-conmon-<id>.scope` is the
/// runtime's monitor, not the container).
fn container_id(part: &str) -> Option<String> {
    let id = match part.strip_suffix(".scope") {
        Some(scope) => ["cri-containerd-", "crio-", "docker-", "containerd-"]
            .iter()
            .find_map(|prefix| scope.strip_prefix(prefix))?,
        None => part,
    };
    (id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn both(pod_uid: &str, container_id: &str) -> Option<ContainerRef> {
        Some(ContainerRef {
            pod_uid: pod_uid.to_owned(),
            container_id: container_id.to_owned(),
        })
    }

    #[test]
    fn cgroupfs_driver_every_qos_class() {
        for qos in ["kubepods/burstable", "kubepods/besteffort", "kubepods"] {
            let path = format!("/{qos}/pod{UID}/{ID}");
            assert_eq!(from_cgroup_path(&path), both(UID, ID), "{path}");
        }
    }

    #[test]
    fn systemd_driver_containerd_crio_and_docker() {
        let slice = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        );
        for scope in ["cri-containerd", "crio", "docker"] {
            let path = format!("{slice}/{scope}-{ID}.scope");
            assert_eq!(from_cgroup_path(&path), both(UID, ID), "{path}");
        }
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(from_cgroup_path(&guaranteed), both(UID, ID));
        // CRI-O's monitor runs in the pod's cgroup, outside every container.
        let conmon = format!("{slice}/crio-conmon-{ID}.scope");
        assert_eq!(from_cgroup_path(&conmon), both(UID, ""));
    }

    #[test]
    fn host_processes_and_lookalikes_name_no_pod() {
        for path in [
            "/",
            "/system.slice/containerd.service",
            "/user.slice/user-0.slice/session-3.scope",
            "/kubepods/burstable/podnot-a-uid/abc",
            "/kubepods.slice/kubepods-burstable.slice",
        ] {
            assert_eq!(from_cgroup_path(path), None, "{path}");
        }
    }

    #[test]
    fn proc_cgroup_v2_and_v1_lines() {
        let v2 = format!("0::/kubepods/besteffort/pod{UID}/{ID}\n");
        assert_eq!(from_proc_cgroup(&v2), both(UID, ID));
        let v1 = format!(
            "12:pids:/kubepods/pod{UID}/{ID}\n11:cpu,cpuacct:/kubepods/pod{UID}/{ID}\n0::/\n"
        );
        assert_eq!(from_proc_cgroup(&v1), both(UID, ID));
        assert_eq!(from_proc_cgroup("0::/init.scope\n"), None);
        // The e2e nodes nest kubelet's naming under a node's own cgroup.
        let nested = format!("0::/px-e2e-1/node-a/pod{UID}/{ID}");
        assert_eq!(from_proc_cgroup(&nested), both(UID, ID));
    }
}
