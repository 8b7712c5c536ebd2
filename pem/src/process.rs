//! Process identity: Pixie's UPID (ASID, PID, start time), read from /proc.

use std::collections::HashMap;
use std::fs;

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

/// Start times of the processes seen, so a UPID costs one /proc read per process.
#[derive(Default)]
pub(crate) struct ProcessCache {
    start_times: HashMap<u32, u64>,
}

impl ProcessCache {
    /// The UPID of a live process; its start time is 0 if it is already gone.
    pub(crate) fn upid(&mut self, asid: u32, pid: u32) -> u128 {
        let start = *self
            .start_times
            .entry(pid)
            .or_insert_with(|| read_start_time_ticks(pid).unwrap_or(0));
        make_upid(asid, pid, start)
    }

    /// Forgets a process that ended (its PID may be reused).
    pub(crate) fn forget(&mut self, pid: u32) {
        self.start_times.remove(&pid);
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
    fn own_start_time_is_read() {
        let mut cache = ProcessCache::default();
        let upid = cache.upid(1, std::process::id());
        assert_eq!((upid >> 96) as u32, 1);
        assert_eq!((upid >> 64) as u32, std::process::id());
        assert!(upid as u64 > 0);
    }
}
