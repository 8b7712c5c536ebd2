//! cgroup v2 directories for simulated nodes: one per node, under one per cluster,
//! killed and removed when the cluster stops.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Error;

/// The cgroup v2 mount point from `/proc/mounts`, if any.
fn find_cgroup2() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// The cluster's cgroup directory and, when it had to mount cgroup2 itself, the mount.
#[derive(Debug)]
pub(crate) struct ClusterCgroup {
    dir: PathBuf,
    own_mount: Option<PathBuf>,
    nodes: Vec<PathBuf>,
}

impl ClusterCgroup {
    /// Creates `<cgroup2>/<name>`, mounting cgroup2 under `scratch` if none is mounted.
    pub(crate) fn create(name: &str, scratch: &Path) -> Result<Self, Error> {
        let (root, own_mount) = match find_cgroup2() {
            Some(root) => (root, None),
            None => {
                let mount_point = scratch.join("cgroup2");
                let err = |source| Error::Cgroup {
                    path: mount_point.clone(),
                    source,
                };
                std::fs::create_dir_all(&mount_point).map_err(err)?;
                let status = std::process::Command::new("mount")
                    .args(["-t", "cgroup2", "none"])
                    .arg(&mount_point)
                    .status()
                    .map_err(err)?;
                if !status.success() {
                    return Err(err(std::io::Error::other(format!(
                        "mount exited with {status}"
                    ))));
                }
                (mount_point.clone(), Some(mount_point))
            }
        };
        sweep_stale(&root);
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Cgroup {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            own_mount,
            nodes: Vec::new(),
        })
    }

    /// Creates the directory of one node and returns its absolute path.
    pub(crate) fn add_node(&mut self, node: &str) -> Result<PathBuf, Error> {
        let dir = self.dir.join(node);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Cgroup {
            path: dir.clone(),
            source,
        })?;
        self.nodes.push(dir.clone());
        Ok(dir)
    }

    /// Kills every process left in the node cgroups, then removes the directories and
    /// any mount this created. Safe to call twice.
    pub(crate) fn remove(&mut self) {
        for node in self.nodes.drain(..) {
            kill_and_remove(&node);
        }
        if self.dir.exists() {
            kill_and_remove(&self.dir);
        }
        if let Some(mount) = self.own_mount.take() {
            let _ = std::process::Command::new("umount").arg(&mount).status();
            let _ = std::fs::remove_dir(&mount);
        }
    }
}

impl Drop for ClusterCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes cluster cgroups (`px-e2e-<pid>-...`) left by a test process that no longer
/// exists (killed before it could clean up), with whatever still runs in them.
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("px-e2e-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        if let Ok(nodes) = std::fs::read_dir(&dir) {
            for node in nodes.filter_map(Result::ok).filter(|n| n.path().is_dir()) {
                kill_and_remove(&node.path());
            }
        }
        kill_and_remove(&dir);
    }
}

/// The pids in a cgroup directory and the cgroups below it (a node's pods).
pub(crate) fn pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for child in children(dir) {
        pids.extend(self::pids(&child));
    }
    pids
}

/// The cgroup directories directly below `dir`.
fn children(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills everything in `dir` and below (`cgroup.kill` is recursive), then removes the
/// directories, deepest first.
pub(crate) fn kill_and_remove(dir: &Path) {
    // `cgroup.kill` (Linux 5.14+) SIGKILLs every process in the cgroup at once.
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pids(dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for child in children(dir) {
        kill_and_remove(&child);
    }
    // rmdir fails while the kernel still tears processes down; retry briefly.
    while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}
