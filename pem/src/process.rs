//! Process identity: Pixie's UPID (ASID, PID, start time), read from /proc.

use std::collections::{HashMap, VecDeque};

use foldhash::HashMapExt as _;
use std::fs;
use std::sync::{Arc, PoisonError, RwLock};

/// Builds Pixie's 128-bit UPID: ASID in bits 96..128, PID in 64..96, and the process
/// start time (clock ticks since boot, as /proc reports it) in the low 64 bits.
pub(crate) fn make_upid(asid: u32, pid: u32, start_time_ticks: u64) -> u128 {
    (u128::from(asid) << 96) | (u128::from(pid) << 64) | u128::from(start_time_ticks)
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
fn read_start_time_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip to its end.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on; field 22 is the 20th of them.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// What the PEM knows of a process it has seen on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Pixie's UPID of the process.
    pub upid: u128,
    /// Process id.
    pub pid: u32,
    /// Command name (`/proc/PID/comm`).
    pub comm: String,
    /// Command line, arguments separated by spaces (`/proc/PID/cmdline`).
    pub cmdline: String,
    /// Whether the process has ended.
    pub exited: bool,
    /// The UID of its pod, from its cgroup; empty for a process of the host.
    pub pod_uid: String,
    /// Its container's id, from its cgroup; empty outside a container.
    pub container_id: String,
}

impl ProcessInfo {
    /// What `/proc` says of process `pid`: its names, and its pod and container from its
    /// cgroup.
    pub(crate) fn read(upid: u128, pid: u32) -> Self {
        let container = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| crate::container::from_proc_cgroup(&text))
            .unwrap_or_default();
        Self {
            upid,
            pid,
            comm: read_proc_text(pid, "comm"),
            cmdline: read_proc_text(pid, "cmdline"),
            exited: false,
            pod_uid: container.pod_uid,
            container_id: container.container_id,
        }
    }
}

/// Processes seen by the PEM, by UPID: the answer to "which program was that?" after
/// the program has ended. Ended processes are kept up to a bound, oldest forgotten first.
pub struct ProcessTable {
    inner: RwLock<ProcessTableInner>,
}

#[derive(Default)]
struct ProcessTableInner {
    /// Each process with the version of its last change.
    by_upid: HashMap<u128, (u64, ProcessInfo)>,
    exited: VecDeque<u128>,
    /// Bumped by every change, so a reader can ask for what changed since it last read.
    version: u64,
}

/// Ended processes remembered.
const MAX_EXITED: usize = 4096;

impl ProcessTable {
    pub(crate) fn new() -> Self {
        Self {
            inner: RwLock::new(ProcessTableInner::default()),
        }
    }

    /// The process with this UPID, if the PEM has seen it.
    #[must_use]
    pub fn get(&self, upid: u128) -> Option<ProcessInfo> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.by_upid.get(&upid).map(|(_, p)| p.clone())
    }

    /// Every process known, running or recently ended.
    #[must_use]
    pub fn all(&self) -> Vec<ProcessInfo> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.by_upid.values().map(|(_, p)| p.clone()).collect()
    }

    /// The processes that changed (appeared or ended) after `version`, and the version
    /// they bring a reader to. A reader that starts from 0 gets every process known.
    #[must_use]
    pub fn changed_since(&self, version: u64) -> (Vec<ProcessInfo>, u64) {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let changed = inner
            .by_upid
            .values()
            .filter(|(v, _)| *v > version)
            .map(|(_, p)| p.clone())
            .collect();
        (changed, inner.version)
    }

    pub(crate) fn insert(&self, info: ProcessInfo) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.version += 1;
        let version = inner.version;
        inner.by_upid.insert(info.upid, (version, info));
    }

    pub(crate) fn mark_exited(&self, upid: u128) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let version = inner.version + 1;
        let Some((changed, info)) = inner.by_upid.get_mut(&upid) else {
            return;
        };
        info.exited = true;
        *changed = version;
        inner.version = version;
        inner.exited.push_back(upid);
        while inner.exited.len() > MAX_EXITED {
            if let Some(old) = inner.exited.pop_front() {
                inner.by_upid.remove(&old);
            }
        }
    }
}

fn read_proc_text(pid: u32, file: &str) -> String {
    let bytes = fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
    let text: Vec<u8> = bytes
        .iter()
        .map(|b| if *b == 0 { b' ' } else { *b })
        .collect();
    String::from_utf8_lossy(&text).trim().to_owned()
}

/// UPIDs of the processes seen, so a UPID costs one set of /proc reads per process.
pub(crate) struct ProcessCache {
    asid: u32,
    upids: foldhash::HashMap<u32, u128>,
    table: Arc<ProcessTable>,
}

impl ProcessCache {
    pub(crate) fn new(asid: u32, table: Arc<ProcessTable>) -> Self {
        Self {
            asid,
            upids: foldhash::HashMap::new(),
            table,
        }
    }

    /// The UPID of a live process (start time 0 if it is already gone), recording it.
    pub(crate) fn upid(&mut self, pid: u32) -> u128 {
        if let Some(upid) = self.upids.get(&pid) {
            return *upid;
        }
        let upid = make_upid(self.asid, pid, read_start_time_ticks(pid).unwrap_or(0));
        self.upids.insert(pid, upid);
        self.table.insert(ProcessInfo::read(upid, pid));
        upid
    }

    /// A process ended (its PID may be reused).
    pub(crate) fn forget(&mut self, pid: u32) {
        if let Some(upid) = self.upids.remove(&pid) {
            self.table.mark_exited(upid);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn upid_layout_matches_pixie() {
        let upid = make_upid(3, 0x0023_9267, 0x08e6_0831);
        let text = format!("{upid:032x}");
        // Printed as a UUID by Pixie's tools: 00000003-0023-9267-0000-000008e60831.
        assert_eq!(text, "00000003002392670000000008e60831");
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987_654));
    }

    #[test]
    fn own_process_is_recorded() {
        let table = Arc::new(ProcessTable::new());
        let mut cache = ProcessCache::new(1, Arc::clone(&table));
        let upid = cache.upid(std::process::id());
        assert_eq!((upid >> 96) as u32, 1);
        assert_eq!((upid >> 64) as u32, std::process::id());
        assert!(upid as u64 > 0);
        let info = table.get(upid).unwrap();
        assert!(!info.comm.is_empty());
        assert!(info.cmdline.contains("vizier_pem"), "{}", info.cmdline);
        let (all, version) = table.changed_since(0);
        assert_eq!(all.len(), 1);
        assert_eq!(table.changed_since(version).0, Vec::new());
        cache.forget(std::process::id());
        assert!(table.get(upid).unwrap().exited);
        let (ended, _) = table.changed_since(version);
        assert!(ended.len() == 1 && ended[0].exited, "{ended:?}");
    }

    #[test]
    fn ended_processes_are_remembered_within_a_bound() {
        let table = ProcessTable::new();
        for pid in 0..(MAX_EXITED as u32 + 10) {
            let upid = make_upid(0, pid, 1);
            table.insert(ProcessInfo {
                upid,
                pid,
                comm: String::new(),
                cmdline: String::new(),
                exited: false,
                pod_uid: String::new(),
                container_id: String::new(),
            });
            table.mark_exited(upid);
        }
        assert_eq!(table.all().len(), MAX_EXITED);
        assert!(table.get(make_upid(0, 0, 1)).is_none());
    }
}
