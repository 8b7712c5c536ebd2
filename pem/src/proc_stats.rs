//! The `process_stats` and `network_stats` tables, sampled from `/proc` every second
//! (Pixie's period), on a thread of their own: reading `/proc` for every process of a
//! node is blocking work that must not hold up the event loop or the query service.
//!
//! - `process_stats`: per process, CPU time (`/proc/PID/stat` utime and stime, clock
//!   ticks turned into ns), page faults, threads, virtual size, resident bytes (pages
//!   times the page size), and the characters and bytes it read and wrote
//!   (`/proc/PID/io`). A process whose files cannot be read gets no row, as in Pixie.
//! - `network_stats`: per pod, the counters of its network namespace's interfaces
//!   (`/proc/PID/net/dev` of its oldest process; `eth*`, `en*`, `wl*`, `ww*` summed,
//!   loopback and host-side devices left out, as Pixie does).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use px_tablestore::{ColumnSchema, DataType, RowBuilder, SemanticType, TableSchema, TableStore};

use crate::process::{ProcessInfo, ProcessTable, make_upid};

/// Name of the per-process table.
pub(crate) const PROCESS_STATS: &str = "process_stats";
/// Name of the per-pod network table.
pub(crate) const NETWORK_STATS: &str = "network_stats";
/// How often both are sampled (Pixie: 1 s).
pub(crate) const SAMPLING_PERIOD: Duration = Duration::from_secs(1);

/// Pixie's `process_stats` columns, in order.
pub(crate) fn process_stats_schema() -> TableSchema {
    use DataType::{Int64, Time64Ns, UInt128};
    use SemanticType::{Bytes, DurationNs, None as Plain, Upid};
    let col = ColumnSchema::new;
    TableSchema::new(
        PROCESS_STATS,
        "CPU, memory and IO stats for the processes of the node",
        vec![
            col("time_", Time64Ns, Plain, "When the sample was taken"),
            col("upid", UInt128, Upid, "The process"),
            col(
                "major_faults",
                Int64,
                Plain,
                "Page faults that read from disk, since it started",
            ),
            col(
                "minor_faults",
                Int64,
                Plain,
                "Page faults served from memory, since it started",
            ),
            col(
                "cpu_utime_ns",
                Int64,
                DurationNs,
                "CPU time in user mode, since it started",
            ),
            col(
                "cpu_ktime_ns",
                Int64,
                DurationNs,
                "CPU time in the kernel, since it started",
            ),
            col("num_threads", Int64, Plain, "Threads now"),
            col("vsize_bytes", Int64, Bytes, "Virtual memory size"),
            col("rss_bytes", Int64, Bytes, "Resident memory"),
            col(
                "rchar_bytes",
                Int64,
                Bytes,
                "Bytes read by read-like syscalls, since it started",
            ),
            col(
                "wchar_bytes",
                Int64,
                Bytes,
                "Bytes written by write-like syscalls, since it started",
            ),
            col(
                "read_bytes",
                Int64,
                Bytes,
                "Bytes read from storage, since it started",
            ),
            col(
                "write_bytes",
                Int64,
                Bytes,
                "Bytes written to storage, since it started",
            ),
        ],
    )
}

/// Pixie's `network_stats` columns, in order.
pub(crate) fn network_stats_schema() -> TableSchema {
    use DataType::{Int64, String, Time64Ns};
    use SemanticType::{Bytes, None as Plain};
    let col = ColumnSchema::new;
    TableSchema::new(
        NETWORK_STATS,
        "Network-layer RX/TX counters per pod, at its network interfaces (for connection-level counters, see conn_stats)",
        vec![
            col("time_", Time64Ns, Plain, "When the sample was taken"),
            col("pod_id", String, Plain, "The pod's UID"),
            col("rx_bytes", Int64, Bytes, "Bytes received"),
            col("rx_packets", Int64, Plain, "Packets received"),
            col("rx_errors", Int64, Plain, "Receive errors"),
            col("rx_drops", Int64, Plain, "Received packets dropped"),
            col("tx_bytes", Int64, Bytes, "Bytes sent"),
            col("tx_packets", Int64, Plain, "Packets sent"),
            col("tx_errors", Int64, Plain, "Send errors"),
            col("tx_drops", Int64, Plain, "Sent packets dropped"),
        ],
    )
}

/// The fields of `/proc/PID/stat` the table reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stat {
    minor_faults: i64,
    major_faults: i64,
    utime_ticks: i64,
    stime_ticks: i64,
    num_threads: i64,
    start_ticks: u64,
    vsize_bytes: i64,
    rss_pages: i64,
}

/// Parses `/proc/PID/stat`; the command name may hold spaces and parentheses.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    // Field N of proc(5) (1-based) is fields[N - 3]: the list starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
    Some(Stat {
        minor_faults: field(10)?,
        major_faults: field(12)?,
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        num_threads: field(20)?,
        start_ticks: u64::try_from(field(22)?).ok()?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The four counters of `/proc/PID/io` the table reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Io {
    rchar: i64,
    wchar: i64,
    read_bytes: i64,
    write_bytes: i64,
}

/// Parses `/proc/PID/io`.
pub(crate) fn parse_io(text: &str) -> Option<Io> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    Some(Io {
        rchar: value("rchar")?,
        wchar: value("wchar")?,
        read_bytes: value("read_bytes")?,
        write_bytes: value("write_bytes")?,
    })
}

/// The counters `network_stats` sums over a namespace's interfaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NetDev {
    rx: [i64; 4],
    tx: [i64; 4],
}

/// Interfaces whose counters are a pod's traffic (Pixie's prefixes).
const INTERFACE_PREFIXES: [&str; 5] = ["eth", "en", "wlan", "wl", "ww"];

/// Parses `/proc/PID/net/dev`, summing the interfaces of [`INTERFACE_PREFIXES`].
pub(crate) fn parse_net_dev(text: &str) -> Option<NetDev> {
    let mut sum = NetDev::default();
    for line in text.lines().skip(2) {
        let (name, counters) = line.split_once(':')?;
        if !INTERFACE_PREFIXES
            .iter()
            .any(|p| name.trim().starts_with(p))
        {
            continue;
        }
        let values: Vec<i64> = counters
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        if values.len() < 16 {
            return None;
        }
        for i in 0..4 {
            // Receive: bytes, packets, errs, drop; transmit starts at the ninth.
            sum.rx[i] += values[i];
            sum.tx[i] += values[8 + i];
        }
    }
    Some(sum)
}

/// What decides which processes are sampled.
#[derive(Clone, Debug)]
pub(crate) struct SamplerSettings {
    pub(crate) asid: u32,
    /// Only the processes in this cgroup and below it (a simulated node's); `None`:
    /// every process of the host.
    pub(crate) scope: Option<PathBuf>,
    /// Only processes of pods (a node of a cluster); otherwise the host's too.
    pub(crate) pods_only: bool,
}

/// Samples `/proc` into the two tables.
pub(crate) struct Sampler {
    settings: SamplerSettings,
    processes: Arc<ProcessTable>,
    tick_ns: i64,
    page_bytes: i64,
    /// The processes of the previous sample, to mark those gone as ended.
    previous: HashSet<u128>,
    warned_unreadable: bool,
}

impl Sampler {
    pub(crate) fn new(settings: SamplerSettings, processes: Arc<ProcessTable>) -> Self {
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Self {
            settings,
            processes,
            tick_ns: 1_000_000_000 / i64::from(ticks.max(1) as i32),
            page_bytes: i64::from(page.max(1) as i32),
            previous: HashSet::new(),
            warned_unreadable: false,
        }
    }

    /// The PIDs to sample.
    fn pids(&self) -> Vec<u32> {
        match &self.settings.scope {
            Some(dir) => cgroup_pids(dir),
            None => std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect(),
        }
    }

    /// One sample of both tables, at `now_ns`, appended to `store`.
    pub(crate) fn sample(&mut self, store: &TableStore, now_ns: i64) {
        let mut process_rows = RowBuilder::new(&process_stats_schema());
        let mut network_rows = RowBuilder::new(&network_stats_schema());
        let mut current = HashSet::new();
        // Pod uid to its oldest process (start ticks, pid).
        let mut pods: HashMap<String, (u64, u32)> = HashMap::new();
        let mut unreadable = 0usize;
        for pid in self.pids() {
            let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| parse_stat(&t))
            else {
                continue; // Gone since it was listed.
            };
            let upid = make_upid(self.settings.asid, pid, stat.start_ticks);
            let info = match self.processes.get(upid) {
                Some(info) => info,
                None => {
                    let info = ProcessInfo::read(upid, pid);
                    self.processes.insert(info.clone());
                    info
                }
            };
            if self.settings.pods_only && info.pod_uid.is_empty() {
                continue;
            }
            let Some(io) = std::fs::read_to_string(format!("/proc/{pid}/io"))
                .ok()
                .and_then(|t| parse_io(&t))
            else {
                unreadable += 1;
                continue;
            };
            current.insert(upid);
            if !info.pod_uid.is_empty() {
                let oldest = pods
                    .entry(info.pod_uid.clone())
                    .or_insert((stat.start_ticks, pid));
                if stat.start_ticks < oldest.0 {
                    *oldest = (stat.start_ticks, pid);
                }
            }
            process_rows.append_time(now_ns);
            process_rows.append_u128(upid);
            process_rows.append_i64(stat.major_faults);
            process_rows.append_i64(stat.minor_faults);
            process_rows.append_i64(stat.utime_ticks.saturating_mul(self.tick_ns));
            process_rows.append_i64(stat.stime_ticks.saturating_mul(self.tick_ns));
            process_rows.append_i64(stat.num_threads);
            process_rows.append_i64(stat.vsize_bytes);
            process_rows.append_i64(stat.rss_pages.saturating_mul(self.page_bytes));
            process_rows.append_i64(io.rchar);
            process_rows.append_i64(io.wchar);
            process_rows.append_i64(io.read_bytes);
            process_rows.append_i64(io.write_bytes);
            process_rows.finish_row();
        }
        if unreadable > 0 && !self.warned_unreadable {
            self.warned_unreadable = true;
            tracing::warn!(
                processes = unreadable,
                "process_stats: /proc/PID/io is unreadable for some processes (reading another user's needs CAP_SYS_PTRACE); they get no row"
            );
        }
        for (pod, (_, pid)) in &pods {
            let Some(net) = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                .ok()
                .and_then(|t| parse_net_dev(&t))
            else {
                continue;
            };
            network_rows.append_time(now_ns);
            network_rows.append_str(pod);
            for v in net.rx.iter().chain(&net.tx) {
                network_rows.append_i64(*v);
            }
            network_rows.finish_row();
        }
        for gone in self.previous.difference(&current) {
            self.processes.mark_exited(*gone);
        }
        self.previous = current;
        for (table, mut rows) in [(PROCESS_STATS, process_rows), (NETWORK_STATS, network_rows)] {
            if rows.rows() > 0
                && let Some(t) = store.table(table)
                && let Err(error) = t.append(rows.finish())
            {
                tracing::warn!(table, %error, "dropped a sample");
            }
        }
    }
}

/// Every PID in `dir`'s cgroup and below it.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    pids
}

/// The sampling thread; stopped and joined on drop.
pub(crate) struct SamplerThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SamplerThread {
    /// Samples into `store` every [`SAMPLING_PERIOD`] until dropped.
    pub(crate) fn spawn(mut sampler: Sampler, store: Arc<TableStore>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("proc-stats".to_owned())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    sampler.sample(&store, crate::clock::epoch_ns());
                    // Short sleeps, so a stop is seen within 100 ms.
                    for _ in 0..10 {
                        if stopping.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(SAMPLING_PERIOD / 10);
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl SamplerThread {
    /// Stops sampling and waits for the thread (within one short sleep).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SamplerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn stat_fields_by_position_whatever_the_command_name() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 5 7 0 30 20 0 0 20 0 3 0 987654 1048576 256 18446744073709551615";
        let s = parse_stat(stat).unwrap();
        assert_eq!((s.minor_faults, s.major_faults), (100, 7));
        assert_eq!((s.utime_ticks, s.stime_ticks), (30, 20));
        assert_eq!((s.num_threads, s.start_ticks), (3, 987_654));
        assert_eq!((s.vsize_bytes, s.rss_pages), (1_048_576, 256));
        assert_eq!(parse_stat("42 (x) S 1"), None);
    }

    #[test]
    fn io_and_net_dev() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(
            parse_io(io),
            Some(Io {
                rchar: 10,
                wchar: 20,
                read_bytes: 4096,
                write_bytes: 8192
            })
        );
        let dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 999 9 0 0 0 0 0 0 999 9 0 0 0 0 0 0\n  eth0: 100 2 1 0 0 0 0 0 300 4 0 1 0 0 0 0\n  eth1: 10 1 0 0 0 0 0 0 30 1 0 0 0 0 0 0\nveth12: 5 5 5 5 0 0 0 0 5 5 5 5 0 0 0 0\n";
        let sum = parse_net_dev(dev).unwrap();
        assert_eq!(sum.rx, [110, 3, 1, 0]);
        assert_eq!(sum.tx, [330, 5, 0, 1]);
    }

    #[test]
    fn this_process_is_sampled_as_proc_says() {
        let store =
            TableStore::new(px_tablestore::BudgetConfig::for_memory_limit(64 << 20)).unwrap();
        store.create_table(process_stats_schema()).unwrap();
        store.create_table(network_stats_schema()).unwrap();
        let processes = Arc::new(ProcessTable::new());
        let mut sampler = Sampler::new(
            SamplerSettings {
                asid: 3,
                scope: None,
                pods_only: false,
            },
            Arc::clone(&processes),
        );
        // Some CPU time of this process's own, so its counters are not all zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let pid = std::process::id();
        let before =
            parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap()).unwrap();
        sampler.sample(&store, 1);
        let after =
            parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap()).unwrap();
        let upid = make_upid(3, pid, before.start_ticks);
        assert!(
            processes.get(upid).is_some(),
            "the sampler names the processes it samples"
        );
        let batches = store.table(PROCESS_STATS).unwrap().snapshot();
        let column = |b: &arrow_array::RecordBatch, name: &str| {
            b.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap()
                .clone()
        };
        let mut found = false;
        for batch in &batches {
            let upids = batch
                .column_by_name("upid")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::FixedSizeBinaryArray>()
                .unwrap();
            for row in 0..batch.num_rows() {
                if upids.value(row) != upid.to_be_bytes() {
                    continue;
                }
                found = true;
                // What /proc said just before and just after the sample brackets it.
                let tick = sampler.tick_ns;
                let utime = column(batch, "cpu_utime_ns").value(row);
                assert!(utime > 0 && utime % tick == 0, "{utime}");
                assert!((before.utime_ticks * tick..=after.utime_ticks * tick).contains(&utime));
                let rss = column(batch, "rss_bytes").value(row);
                let (low, high) = (
                    before.rss_pages.min(after.rss_pages),
                    before.rss_pages.max(after.rss_pages),
                );
                assert!(
                    (low * sampler.page_bytes..=high * sampler.page_bytes).contains(&rss),
                    "{rss}"
                );
                assert!(column(batch, "num_threads").value(row) >= 1);
                assert!(
                    column(batch, "rchar_bytes").value(row) > 0,
                    "it read its own /proc files"
                );
            }
        }
        assert!(found, "no row for this process");
    }

    /// A pod in a network namespace of its own (a veth pair, `eth0` inside) sends 200
    /// datagrams of 1,000 bytes: its network_stats row counts them. Needs root (network
    /// namespaces, cgroups); runs, never skips, under `CI=true`.
    #[test]
    fn network_stats_count_what_a_pod_sent() {
        use std::io::BufRead as _;
        use std::process::{Command, Stdio};

        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: must run as root"
            );
            return;
        }
        let id = std::process::id();
        let netns = format!("px-net-{id}");
        let host_side = format!("pxh{}", id % 100_000);
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {args:?}: {status}");
        };
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let cgroup2 = mounts
            .lines()
            .find_map(|l| {
                let mut f = l.split(' ');
                let point = f.nth(1)?;
                (f.next()? == "cgroup2").then(|| PathBuf::from(point))
            })
            .expect("a cgroup2 mount");
        let uid = format!("0000{id:04x}-aaaa-4bbb-8ccc-000000000001");
        let pod_dir = cgroup2.join(format!("kubepods/besteffort/pod{uid}"));
        let container_dir = pod_dir.join(format!("{:064x}", u64::from(id)));

        struct Cleanup(String, Vec<PathBuf>, Option<std::process::Child>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                if let Some(child) = &mut self.2 {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
                for dir in self.1.iter().rev() {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
        let mut cleanup = Cleanup(netns.clone(), Vec::new(), None);
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&["addr", "add", "10.231.7.1/30", "dev", &host_side]);
        ip(&["link", "set", &host_side, "up"]);
        ip(&["-n", &netns, "addr", "add", "10.231.7.2/30", "dev", "eth0"]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        for dir in [
            cgroup2.join("kubepods"),
            cgroup2.join("kubepods/besteffort"),
            pod_dir.clone(),
            container_dir.clone(),
        ] {
            if std::fs::create_dir(&dir).is_ok() {
                cleanup.1.push(dir);
            }
        }
        let send = "import socket, sys, time\n\
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                    for _ in range(200): s.sendto(b'x' * 1000, ('10.231.7.1', 9))\n\
                    print('sent', flush=True)\n\
                    time.sleep(60)\n";
        let procs = container_dir.join("cgroup.procs");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec ip netns exec {netns} python3 -c \"$0\"",
                procs.display()
            ))
            .arg(send)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        cleanup.2 = Some(child);
        assert_eq!(line.trim(), "sent");

        let store =
            TableStore::new(px_tablestore::BudgetConfig::for_memory_limit(64 << 20)).unwrap();
        store.create_table(process_stats_schema()).unwrap();
        store.create_table(network_stats_schema()).unwrap();
        let mut sampler = Sampler::new(
            SamplerSettings {
                asid: 3,
                scope: Some(pod_dir.clone()),
                pods_only: true,
            },
            Arc::new(ProcessTable::new()),
        );
        sampler.sample(&store, 1);
        let batches = store.table(NETWORK_STATS).unwrap().snapshot();
        let batch = batches.first().expect("a network_stats row");
        let int = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap()
                .value(0)
        };
        let pod = batch
            .column_by_name("pod_id")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap()
            .value(0)
            .to_owned();
        assert_eq!(pod, uid);
        // 1,000 bytes of payload, 8 of UDP, 20 of IP and 14 of Ethernet per datagram; a
        // few packets more (ARP, IPv6 neighbour discovery) may go out too.
        let (tx_bytes, tx_packets) = (int("tx_bytes"), int("tx_packets"));
        assert!(
            (200 * 1042..200 * 1042 + 4096).contains(&tx_bytes),
            "{tx_bytes}"
        );
        assert!((200..220).contains(&tx_packets), "{tx_packets}");
        assert!(
            int("rx_bytes") < 200 * 1042,
            "what came back is ICMP and ARP"
        );
    }
}
