//! The processes behind every PEM's UPIDs, kept in step with each PEM by asking it
//! what changed since the last query (`ListProcesses`): a query costs what changed.

use std::collections::{HashMap, VecDeque};

use px_api::pem::ListProcessesResponse;

/// Ended processes remembered per PEM (their rows outlive them).
const MAX_EXITED_PER_PEM: usize = 4096;

/// One process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessEntry {
    /// Its command line.
    pub cmdline: Box<str>,
    /// Its pod's uid; empty on the host.
    pub pod_uid: Box<str>,
    /// Its container's id; empty outside a container.
    pub container_id: Box<str>,
}

/// What Kelvin has of one PEM's process table.
#[derive(Debug, Default)]
struct PemProcesses {
    epoch: String,
    version: u64,
    asid: u32,
    node: String,
    processes: HashMap<u128, ProcessEntry>,
    exited: VecDeque<u128>,
}

/// Every PEM's processes, by UPID.
#[derive(Debug, Default)]
pub struct ProcessDirectory {
    pems: HashMap<String, PemProcesses>,
    /// ASID to the PEM that writes it.
    by_asid: HashMap<u32, String>,
}

impl ProcessDirectory {
    /// Where PEM `pem`'s copy stands: its epoch and version, for the next request.
    #[must_use]
    pub fn position(&self, pem: &str) -> (String, u64) {
        self.pems
            .get(pem)
            .map(|p| (p.epoch.clone(), p.version))
            .unwrap_or_default()
    }

    /// Applies what PEM `pem` answered.
    pub fn apply(&mut self, pem: &str, response: ListProcessesResponse) {
        let copy = self.pems.entry(pem.to_owned()).or_default();
        if copy.asid != response.asid {
            // A PEM that moved (a new pod, a new address) writes a new ASID.
            self.by_asid.remove(&copy.asid);
        }
        if response.full {
            copy.processes.clear();
            copy.exited.clear();
        }
        copy.epoch = response.epoch;
        copy.version = response.version;
        copy.asid = response.asid;
        copy.node = if response.node.is_empty() {
            pem.to_owned()
        } else {
            response.node
        };
        for p in response.processes {
            let Ok(upid) = <[u8; 16]>::try_from(p.upid.as_slice()) else {
                continue;
            };
            let upid = u128::from_be_bytes(upid);
            if p.exited && !copy.exited.contains(&upid) {
                copy.exited.push_back(upid);
            }
            copy.processes.insert(
                upid,
                ProcessEntry {
                    cmdline: p.cmdline.into(),
                    pod_uid: p.pod_uid.into(),
                    container_id: p.container_id.into(),
                },
            );
        }
        while copy.exited.len() > MAX_EXITED_PER_PEM {
            if let Some(old) = copy.exited.pop_front() {
                copy.processes.remove(&old);
            }
        }
        self.by_asid.insert(copy.asid, pem.to_owned());
    }

    /// Forgets the PEMs for which `keep` is false (they left the cluster).
    pub fn retain_pems(&mut self, keep: impl Fn(&str) -> bool) {
        self.pems.retain(|name, _| keep(name));
        self.by_asid.retain(|_, name| keep(name));
    }

    /// The process with this UPID (its ASID says which PEM's).
    #[must_use]
    pub fn process(&self, upid: u128) -> Option<&ProcessEntry> {
        let pem = self.by_asid.get(&asid_of(upid))?;
        self.pems.get(pem)?.processes.get(&upid)
    }

    /// PEM `pem`'s ASID and the UPIDs Kelvin knows of it; `None` for a PEM never heard.
    #[must_use]
    pub fn pem_upids(&self, pem: &str) -> Option<(u32, Vec<u128>)> {
        let copy = self.pems.get(pem)?;
        Some((copy.asid, copy.processes.keys().copied().collect()))
    }

    /// The node of the PEM that writes `asid`.
    #[must_use]
    pub fn asid_node(&self, asid: u32) -> Option<String> {
        let pem = self.by_asid.get(&asid)?;
        self.pems.get(pem).map(|p| p.node.clone())
    }

    /// Each PEM's ASID and node, by PEM name.
    #[must_use]
    pub fn pems(&self) -> Vec<(String, u32, String)> {
        self.pems
            .iter()
            .map(|(name, p)| (name.clone(), p.asid, p.node.clone()))
            .collect()
    }
}

fn asid_of(upid: u128) -> u32 {
    // Bits 96..128: the truncation keeps exactly them.
    (upid >> 96) as u32
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use px_api::pem::ProcessEntry as Wire;

    use super::*;

    fn upid(asid: u32, pid: u32) -> u128 {
        (u128::from(asid) << 96) | (u128::from(pid) << 64) | 7
    }

    fn wire(upid: u128, pod: &str, exited: bool) -> Wire {
        Wire {
            upid: upid.to_be_bytes().to_vec(),
            cmdline: format!("app {}", (upid >> 64) as u32),
            pod_uid: pod.to_owned(),
            container_id: String::new(),
            exited,
        }
    }

    #[test]
    fn changes_apply_in_step_and_a_restarted_pem_replaces_its_copy() {
        let mut dir = ProcessDirectory::default();
        dir.apply(
            "node-a",
            ListProcessesResponse {
                epoch: "e1".into(),
                version: 2,
                full: true,
                processes: vec![wire(upid(5, 10), "p1", false), wire(upid(5, 11), "", false)],
                asid: 5,
                node: "node-a".into(),
            },
        );
        assert_eq!(&*dir.process(upid(5, 10)).unwrap().pod_uid, "p1");
        assert_eq!(dir.process(upid(6, 10)), None, "another PEM's ASID");
        assert_eq!(dir.position("node-a"), ("e1".to_owned(), 2));
        assert_eq!(dir.asid_node(5).as_deref(), Some("node-a"));
        dir.apply(
            "node-a",
            ListProcessesResponse {
                epoch: "e2".into(),
                version: 1,
                full: true,
                processes: vec![wire(upid(5, 12), "p2", false)],
                asid: 5,
                node: "node-a".into(),
            },
        );
        assert_eq!(dir.process(upid(5, 10)), None);
        assert_eq!(&*dir.process(upid(5, 12)).unwrap().pod_uid, "p2");
    }

    #[test]
    fn ended_processes_are_kept_within_a_bound() {
        let mut dir = ProcessDirectory::default();
        let ended: Vec<Wire> = (0..MAX_EXITED_PER_PEM as u32 + 5)
            .map(|pid| wire(upid(1, pid), "", true))
            .collect();
        dir.apply(
            "n",
            ListProcessesResponse {
                epoch: "e".into(),
                version: 1,
                full: true,
                processes: ended,
                asid: 1,
                node: String::new(),
            },
        );
        assert!(dir.process(upid(1, 0)).is_none());
        assert!(
            dir.process(upid(1, MAX_EXITED_PER_PEM as u32 + 4))
                .is_some()
        );
        assert_eq!(dir.asid_node(1).as_deref(), Some("n"));
    }
}
