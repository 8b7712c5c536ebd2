//! Which processes a probe traces on this node: the whole host, or the processes in
//! the cgroups of the target pods (found by kubelet's `pod<uid>` naming).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use px_api::pem::ProbeSpec;

use super::state::ProbeFailure;

/// kubelet nests pods at most this deep (kubepods/burstable/pod<uid>/<container>).
const MAX_DEPTH: usize = 6;

/// The processes a probe may trace.
#[derive(Clone, Debug, Default)]
pub(crate) struct Target {
    /// Filesystem root through which the spec's binary path is first resolved.
    pub(crate) root: PathBuf,
    /// Roots of every target process (their mount namespaces may differ).
    pub(crate) roots: Vec<PathBuf>,
    /// cgroup ids of the target pods; empty for a host target.
    pub(crate) cgroups: Vec<u64>,
    /// The levels of those cgroups.
    pub(crate) levels: Vec<u8>,
}

impl Target {
    /// The binary as seen through each target root, one path per distinct file.
    pub(crate) fn binaries(&self, binary: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let mut paths = Vec::new();
        for root in std::iter::once(&self.root).chain(&self.roots) {
            let Ok(path) = resolve_in_root(root, binary) else {
                continue;
            };
            if let Ok(m) = std::fs::metadata(&path)
                && !seen.contains(&(m.dev(), m.ino()))
            {
                seen.push((m.dev(), m.ino()));
                paths.push(path.to_string_lossy().into_owned());
            }
        }
        paths
    }
}

/// Symbolic links followed while resolving one path, as the kernel allows.
const MAX_LINKS: usize = 40;

/// `path`, as a process whose root is `root` sees it, as a path this process can open:
/// symbolic links are followed inside `root` (an absolute link starts again at `root`,
/// not at this process's root), so a container's `/usr/bin/app -> /etc/shadow` names the
/// container's file, never the node's. A link that climbs above `root` is refused.
///
/// # Errors
/// A message when a link leads above `root` or there are too many links.
pub(crate) fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, String> {
    let parts = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(str::to_owned)
            .collect()
    };
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: std::collections::VecDeque<String> = parts(path).into();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if resolved.pop().is_none() {
                return Err(format!("{path} leads above the target's root"));
            }
            continue;
        }
        let here: PathBuf = std::iter::once(root.to_path_buf())
            .chain(resolved.iter().map(PathBuf::from))
            .chain(std::iter::once(PathBuf::from(&part)))
            .collect();
        let is_link = std::fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            resolved.push(part);
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(format!("{path} has more than {MAX_LINKS} symbolic links"));
        }
        let target = std::fs::read_link(&here).map_err(|e| format!("{path}: {e}"))?;
        let target = target.to_string_lossy();
        if target.starts_with('/') {
            resolved.clear();
        }
        let mut next: std::collections::VecDeque<String> = parts(&target).into();
        next.extend(pending.drain(..));
        pending = next;
    }
    Ok(std::iter::once(root.to_path_buf())
        .chain(resolved.iter().map(PathBuf::from))
        .collect())
}

/// The target of `spec` on this node; `None` while none of its pods has a process here.
pub(crate) fn resolve(spec: &ProbeSpec) -> Result<Option<Target>, ProbeFailure> {
    let target = resolve_cgroups(spec)?;
    if spec.pod_target && target.roots.is_empty() {
        return Ok(None);
    }
    Ok(Some(target))
}

/// The target of `spec`, with or without processes in its pods yet.
pub(crate) fn resolve_cgroups(spec: &ProbeSpec) -> Result<Target, ProbeFailure> {
    if !spec.pod_target {
        let host = Path::new("/proc/1/root");
        let root = if host.exists() { host } else { Path::new("/") };
        return Ok(Target {
            root: root.to_path_buf(),
            ..Target::default()
        });
    }
    let mut target = Target::default();
    let mounts = crate::cgroup::cgroup2_mount_points();
    for pod in &spec.pods {
        for dir in mounts.iter().flat_map(|m| pod_cgroups(m, &pod.uid)) {
            let Ok(scope) = crate::cgroup::CgroupScope::resolve(&dir) else {
                continue;
            };
            target.cgroups.push(scope.id);
            let level = u8::try_from(scope.level).unwrap_or(u8::MAX);
            if !target.levels.contains(&level) {
                target.levels.push(level);
            }
            target.roots.extend(process_roots(&dir));
        }
    }
    if target.levels.len() > px_ebpf::dynamic_probe::CGROUP_LEVELS {
        return Err(ProbeFailure::new(
            "UnsupportedTarget",
            "the target pods' cgroups sit at more than 4 different depths",
        ));
    }
    if let Some(first) = target.roots.first() {
        target.root = first.clone();
    }
    Ok(target)
}

/// Cgroup directories named for the pod (`pod<uid>`, or `pod<uid_with_underscores>`
/// under the systemd driver), searched breadth-first under `root`.
fn pod_cgroups(root: &Path, uid: &str) -> Vec<PathBuf> {
    let names = [format!("pod{uid}"), format!("pod{}", uid.replace('-', "_"))];
    let mut found = Vec::new();
    let mut level = vec![root.to_path_buf()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for dir in level {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if names.iter().any(|n| name.contains(n.as_str())) {
                    found.push(entry.path());
                } else {
                    next.push(entry.path());
                }
            }
        }
        level = next;
    }
    found
}

/// `/proc/<pid>/root` of every process in `dir` and below it.
fn process_roots(dir: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            roots.extend(
                procs
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok())
                    .map(|pid| PathBuf::from(format!("/proc/{pid}/root"))),
            );
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    roots
}
