//! Scoping the tracer to one cgroup v2: a PEM told to watch a cgroup sees only the
//! processes under it. On a real node the PEM watches the whole host; where several
//! simulated nodes share one machine, each node's PEM watches its node's cgroup.
//!
//! The kernel compares the cgroup id (the inode number of the cgroup's directory) of
//! the calling task's ancestor at the scope's depth with the scope's id, so processes
//! in child cgroups (a node's pods) are in scope too.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::error::Error;

/// `statfs` magic of the cgroup v2 file system.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A cgroup v2 as the kernel programs check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CgroupScope {
    /// The cgroup's id.
    pub(crate) id: u64,
    /// Its depth below the hierarchy's root (the root is 0).
    pub(crate) level: u32,
}

impl CgroupScope {
    /// Resolves a cgroup v2 directory, e.g. `/sys/fs/cgroup/unified/node-a`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the path is not a directory of a mounted cgroup v2.
    pub(crate) fn resolve(path: &Path) -> Result<Self, Error> {
        let invalid = |why: String| Error::InvalidConfig {
            reason: format!("cgroup {}: {why}", path.display()),
        };
        let path = path
            .canonicalize()
            .map_err(|e| invalid(format!("{e}; give the directory of an existing cgroup v2")))?;
        if !is_cgroup2(&path) {
            return Err(invalid(
                "not on a cgroup v2 file system; give a directory under the cgroup2 mount (see `grep cgroup2 /proc/mounts`)".to_owned(),
            ));
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| invalid(format!("cannot read /proc/self/mountinfo: {e}")))?;
        let (mount_point, mount_root) = cgroup2_mount_containing(&mountinfo, &path)
            .ok_or_else(|| invalid("no cgroup2 mount contains it".to_owned()))?;
        let below_mount = path.strip_prefix(&mount_point).unwrap_or(Path::new(""));
        let level = depth(&mount_root) + depth(below_mount);
        let id = std::fs::metadata(&path)
            .map_err(|e| invalid(e.to_string()))?
            .ino();
        Ok(Self {
            id,
            level: u32::try_from(level).unwrap_or(u32::MAX),
        })
    }
}

/// Mount points of cgroup v2 on this host (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// beside v1).
pub(crate) fn cgroup2_mount_points() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            rest.starts_with("cgroup2 ")
                .then(|| fields.split(' ').nth(4).map(PathBuf::from))
                .flatten()
        })
        .collect()
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and stat is a valid, writable statfs.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &raw mut stat) };
    // f_type is an i64 here, an i32 or u32 on some other targets.
    #[allow(clippy::useless_conversion)]
    let f_type = i64::from(stat.f_type);
    rc == 0 && f_type == CGROUP2_SUPER_MAGIC
}

/// The deepest cgroup2 mount whose mount point contains `path`: (mount point, root of
/// the mount within the hierarchy). Fields of a mountinfo line are described in
/// proc(5): the 4th is the root, the 5th the mount point, the type follows " - ".
fn cgroup2_mount_containing(mountinfo: &str, path: &Path) -> Option<(PathBuf, PathBuf)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            if !rest.starts_with("cgroup2 ") {
                return None;
            }
            let mut fields = fields.split(' ');
            let root = fields.nth(3)?;
            let mount_point = fields.next()?;
            Some((PathBuf::from(mount_point), PathBuf::from(root)))
        })
        .filter(|(mount_point, _)| path.starts_with(mount_point))
        .max_by_key(|(mount_point, _)| depth(mount_point))
}

fn depth(path: &Path) -> usize {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
36 25 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
";

    #[test]
    fn the_mount_and_depth_of_a_cgroup() {
        let path = Path::new("/sys/fs/cgroup/unified/nodes/node-a");
        let (mount_point, root) = cgroup2_mount_containing(MOUNTINFO, path).unwrap();
        assert_eq!(mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            depth(&root) + depth(path.strip_prefix(&mount_point).unwrap()),
            2
        );
        assert!(cgroup2_mount_containing(MOUNTINFO, Path::new("/sys/fs/cgroup/cpu/x")).is_none());
    }

    #[test]
    fn a_path_that_is_not_a_cgroup_is_refused_with_its_name() {
        let err = CgroupScope::resolve(Path::new("/tmp"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/tmp") && err.contains("cgroup v2"), "{err}");
        let err = CgroupScope::resolve(Path::new("/no/such/dir"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/dir"), "{err}");
    }
}
