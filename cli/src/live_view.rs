//! Formats `http_events` rows as the aligned lines `px local` prints.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampNanosecondType};
use arrow_array::{Array, RecordBatch};
use px_tablestore::u128_from_bytes;
use vizier_pem::ProcessTable;

/// The header line, aligned with [`HttpRowFormatter::lines`].
pub(crate) fn header() -> String {
    format!(
        "{:<12} {:<24} {:<6} {:<7} {:<40} {:>6} {:>10}",
        "TIME", "PROCESS", "ROLE", "METHOD", "PATH", "STATUS", "LATENCY"
    )
}

/// Turns rows into lines, naming processes by their command (`curl[1234]`), even
/// after they ended, from what the PEM recorded when it first saw them.
pub(crate) struct HttpRowFormatter {
    processes: Arc<ProcessTable>,
    process_names: HashMap<u128, String>,
}

impl HttpRowFormatter {
    pub(crate) fn new(processes: Arc<ProcessTable>) -> Self {
        Self {
            processes,
            process_names: HashMap::new(),
        }
    }

    /// One line per row of an `http_events` batch.
    pub(crate) fn lines(&mut self, batch: &RecordBatch) -> Vec<String> {
        let column = |name: &str| batch.column_by_name(name);
        let (
            Some(time),
            Some(upid),
            Some(role),
            Some(method),
            Some(path),
            Some(status),
            Some(latency),
        ) = (
            column("time_").and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>()),
            column("upid").and_then(|c| c.as_fixed_size_binary_opt()),
            column("trace_role").and_then(|c| c.as_primitive_opt::<Int64Type>()),
            column("req_method").and_then(|c| c.as_string_opt::<i32>()),
            column("req_path").and_then(|c| c.as_string_opt::<i32>()),
            column("resp_status").and_then(|c| c.as_primitive_opt::<Int64Type>()),
            column("latency").and_then(|c| c.as_primitive_opt::<Int64Type>()),
        )
        else {
            return Vec::new();
        };
        (0..batch.num_rows())
            .map(|i| {
                let upid = u128_from_bytes(upid.value(i)).unwrap_or(0);
                format!(
                    "{:<12} {:<24} {:<6} {:<7} {:<40} {:>6} {:>10}",
                    time_of_day(time.value(i)),
                    truncate(&self.process_name(upid), 24),
                    if role.value(i) == 2 {
                        "server"
                    } else {
                        "client"
                    },
                    truncate(method.value(i), 7),
                    truncate(path.value(i), 40),
                    if status.is_null(i) {
                        0
                    } else {
                        status.value(i)
                    },
                    human_duration(latency.value(i)),
                )
            })
            .collect()
    }

    fn process_name(&mut self, upid: u128) -> String {
        let processes = &self.processes;
        self.process_names
            .entry(upid)
            .or_insert_with(|| {
                let pid = (upid >> 64) as u32;
                match processes.get(upid) {
                    Some(info) if !info.comm.is_empty() => format!("{}[{pid}]", info.comm),
                    _ => format!("[{pid}]"),
                }
            })
            .clone()
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `HH:MM:SS.mmm` in the machine's local time zone.
fn time_of_day(epoch_ns: i64) -> String {
    let secs = epoch_ns.div_euclid(1_000_000_000);
    let millis = epoch_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    let t: libc::time_t = secs;
    // SAFETY: localtime_r reads one time_t and writes one tm through valid pointers.
    let ok = unsafe { !libc::localtime_r(&t, tm.as_mut_ptr()).is_null() };
    if !ok {
        return format!("{secs}.{millis:03}");
    }
    // SAFETY: localtime_r succeeded and filled the struct.
    let tm = unsafe { tm.assume_init() };
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

/// `850µs`, `12.3ms`, `2.10s`.
pub(crate) fn human_duration(ns: i64) -> String {
    let ns = ns.max(0) as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.0}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(850_000), "850µs");
        assert_eq!(human_duration(12_340_000), "12.3ms");
        assert_eq!(human_duration(2_100_000_000), "2.10s");
    }

    #[test]
    fn long_paths_are_cut_with_an_ellipsis() {
        assert_eq!(truncate("/short", 10), "/short");
        assert_eq!(truncate("/a/very/long/path", 8), "/a/very…");
    }
}
