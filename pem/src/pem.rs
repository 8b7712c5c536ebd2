//! The running PEM: reads kernel events, tracks connections, fills the tables.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use px_ebpf::socket_trace::ConnInfo;
use px_tablestore::TableStore;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval};

use crate::clock;
use crate::config::PemConfig;
use crate::conn_stats;
use crate::error::Error;
use crate::events;
use crate::loader::SocketTracer;
use crate::probes::{ProbeManager, ProbeSettings};
use crate::process::ProcessTable;
use crate::protocols::{ParserLimits, REGISTRY};
use crate::tracker::{KernelConns, Tracker, TrackerCounters, TrackerSettings};

/// Ring buffer records handled before the loop lets the timers run.
const EVENTS_PER_TURN: usize = 4096;

/// What the PEM has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PemStatus {
    /// Records read from the kernel.
    pub events_received: u64,
    /// Records that could not be decoded.
    pub decode_errors: u64,
    /// Records the kernel dropped because the ring buffer was full (the PEM fell behind).
    pub kernel_drops: u64,
    /// Connection tracking counters.
    pub tracker: TrackerCounters,
}

/// A running PEM. Dropping it without [`Pem::stop`] detaches the probes too, but
/// loses the rows not yet flushed.
pub struct Pem {
    store: Arc<TableStore>,
    probes: Arc<ProbeManager>,
    probe_reader: JoinHandle<()>,
    processes: Arc<ProcessTable>,
    /// Samples `process_stats` and `network_stats`; stops when dropped.
    proc_stats: crate::proc_stats::SamplerThread,
    status: Arc<Mutex<PemStatus>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl Pem {
    /// Loads the socket tracer and starts filling the tables. Call from a Tokio runtime.
    ///
    /// # Errors
    /// Invalid settings, missing privileges or tracefs, or a kernel that refuses the
    /// programs: each with a message that says what to do.
    pub fn start(config: PemConfig) -> Result<Self, Error> {
        config.validate()?;
        let store = Arc::new(TableStore::new(config.budgets.clone())?);
        store.set_data_access(config.data_access);
        for entry in REGISTRY {
            store.create_table((entry.table)())?;
        }
        store.create_table(conn_stats::schema())?;
        store.create_table(crate::proc_stats::process_stats_schema())?;
        store.create_table(crate::proc_stats::network_stats_schema())?;

        let tracer = SocketTracer::load(&config)?;
        fit_tables_to_memory_limit(&store, &config)?;
        let status = Arc::new(Mutex::new(PemStatus::default()));
        let processes = Arc::new(ProcessTable::new());
        let probes = ProbeManager::new(
            Arc::clone(&store),
            Arc::clone(&processes),
            probe_settings(&config)?,
        );
        let probe_reader = crate::probes::spawn_reader(&probes);
        let sampler = crate::proc_stats::Sampler::new(
            crate::proc_stats::SamplerSettings {
                asid: config.asid,
                scope: config.cgroup.clone(),
                pods_only: config.stats_pods_only,
            },
            Arc::clone(&processes),
        );
        let proc_stats = crate::proc_stats::SamplerThread::spawn(sampler, Arc::clone(&store))
            .map_err(|source| Error::SamplerThread { source })?;
        let (shutdown, stopped) = oneshot::channel();
        let tracker = Tracker::new(
            tracker_settings(&config),
            Arc::clone(&processes),
            clock::boot_to_epoch_ns(),
        );
        let task = tokio::spawn(run(
            tracer,
            tracker,
            config,
            Arc::clone(&store),
            Arc::clone(&status),
            stopped,
        ));
        Ok(Self {
            store,
            probes,
            probe_reader,
            processes,
            proc_stats,
            status,
            shutdown: Some(shutdown),
            task,
        })
    }

    /// The node's tables.
    #[must_use]
    pub fn store(&self) -> Arc<TableStore> {
        Arc::clone(&self.store)
    }

    /// The node's dynamic probes.
    #[must_use]
    pub fn probes(&self) -> Arc<ProbeManager> {
        Arc::clone(&self.probes)
    }

    /// The processes seen on traced connections, by UPID.
    #[must_use]
    pub fn processes(&self) -> Arc<ProcessTable> {
        Arc::clone(&self.processes)
    }

    /// Counters, refreshed at every flush.
    #[must_use]
    pub fn status(&self) -> PemStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Drains and flushes what was captured, detaches the probes and stops; returns
    /// the final counters.
    ///
    /// # Errors
    /// The error that stopped the event loop, if it stopped by itself.
    pub async fn stop(mut self) -> Result<PemStatus, Error> {
        self.probe_reader.abort();
        self.proc_stats.stop();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result.map(|()| self.status()),
            Err(join) => Err(Error::RingBufferPoll {
                source: std::io::Error::other(join.to_string()),
            }),
        }
    }
}

/// The dynamic probes' settings from the PEM's.
fn probe_settings(config: &PemConfig) -> Result<ProbeSettings, Error> {
    let scope = config
        .cgroup
        .as_deref()
        .map(crate::cgroup::CgroupScope::resolve)
        .transpose()?;
    Ok(ProbeSettings {
        max_probes: config.max_probes,
        rate_per_sec: config.probe_rate_per_sec,
        scope: scope.map(|s| (s.level, s.id)),
        asid: config.asid,
        ..ProbeSettings::default()
    })
}

/// Share of the memory limit kept free for parser buffers, row builders and query work.
const HEADROOM_PERCENT: u64 = 10;
/// Below this, tables could not hold enough to be useful.
const MIN_TABLE_BYTES: u64 = 4 << 20;

/// Pixie's 60% rule assumes the rest of the PEM fits in the other 40%. Check it against
/// what this process really uses once the programs and the ring buffer are loaded (a
/// debug build with a query engine linked in is far larger than a release build), and
/// shrink the tables' share when it would not fit, so resident memory stays under the limit.
fn fit_tables_to_memory_limit(store: &TableStore, config: &PemConfig) -> Result<(), Error> {
    let limit = config.budgets.memory_limit_bytes;
    let Some(baseline) = resident_bytes() else {
        return Ok(());
    };
    let ring = u64::from(config.ring_buffer_bytes);
    let headroom = limit / 100 * HEADROOM_PERCENT;
    let available = limit.saturating_sub(baseline + ring + headroom);
    if available < MIN_TABLE_BYTES {
        return Err(Error::InvalidConfig {
            reason: format!(
                "a memory limit of {limit} bytes is too small: the PEM itself already uses                  {baseline} bytes, the ring buffer {ring}; raise the limit"
            ),
        });
    }
    let mut budgets = store.budgets();
    if budgets.total_bytes() > available {
        tracing::warn!(
            limit,
            baseline,
            tables = available,
            "the PEM's own footprint leaves less than the usual 60% for tables"
        );
        budgets.table_store_bytes = Some(available);
        let fixed: u64 = budgets.table_bytes.values().sum();
        if fixed > available {
            budgets.table_bytes.clear();
        }
        store.set_budgets(budgets)?;
    }
    Ok(())
}

/// This process's resident memory (VmRSS), in bytes.
pub(crate) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

struct Conns<'a>(&'a BpfHashMap<MapData, u64, ConnInfo>);

impl KernelConns for Conns<'_> {
    fn lookup(&self, key: u64) -> Option<ConnInfo> {
        self.0.get(&key, 0).ok()
    }
}

fn tracker_settings(config: &PemConfig) -> TrackerSettings {
    TrackerSettings {
        asid: config.asid,
        limits: ParserLimits {
            max_body_bytes: config.max_body_bytes,
            max_header_bytes: config.datastream_buffer_bytes,
            redact_credentials: !config.keep_credential_headers,
            ..ParserLimits::default()
        },
        idle_timeout_ns: duration_ns(config.idle_timeout),
        max_connections: config.max_connections,
    }
}

async fn run(
    tracer: SocketTracer,
    mut tracker: Tracker,
    config: PemConfig,
    store: Arc<TableStore>,
    status: Arc<Mutex<PemStatus>>,
    mut stopped: oneshot::Receiver<()>,
) -> Result<(), Error> {
    let SocketTracer {
        ebpf,
        events,
        mut conns,
        mut muted,
        ringbuf_drops,
    } = tracer;
    // SAFETY: the RingBuf owns its map fd; it stays open and unchanged until the
    // AsyncFd (which owns the RingBuf) is dropped.
    let mut ring: AsyncFd<RingBuf<MapData>> = unsafe {
        AsyncFd::register_with_interest(events, Interest::READABLE)
    }
    .map_err(|e| Error::RingBufferPoll {
        source: e.into_parts().1,
    })?;
    let mut poll = interval(config.poll_interval);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut flush = interval(config.flush_interval);
    flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sample = interval(config.conn_stats_interval);
    sample.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut local = PemStatus::default();

    loop {
        tokio::select! {
            _ = &mut stopped => break,
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|source| Error::RingBufferPoll { source })?;
                let handled = drain(guard.get_inner_mut(), &mut tracker, &conns, &mut local);
                if handled < EVENTS_PER_TURN {
                    guard.clear_ready();
                }
                apply_kernel_updates(&mut tracker, &mut conns, &mut muted);
            }
            _ = poll.tick() => {
                while drain(ring.get_mut(), &mut tracker, &conns, &mut local) == EVENTS_PER_TURN {
                    tokio::task::yield_now().await;
                }
                apply_kernel_updates(&mut tracker, &mut conns, &mut muted);
            }
            _ = flush.tick() => {
                tracker.set_boot_to_epoch_ns(clock::boot_to_epoch_ns());
                tracker.drain_records();
                tracker.flush(&store);
                tracker.release_idle(clock::monotonic_ns());
                publish(&mut local, &tracker, &ringbuf_drops, &status);
            }
            _ = sample.tick() => {
                tracker.sample_conn_stats(&Conns(&conns), clock::epoch_ns());
            }
        }
    }
    // Everything the kernel queued before the stop becomes rows, however far behind.
    while drain(ring.get_mut(), &mut tracker, &conns, &mut local) == EVENTS_PER_TURN {}
    tracker.drain_records();
    tracker.sample_conn_stats(&Conns(&conns), clock::epoch_ns());
    tracker.flush(&store);
    publish(&mut local, &tracker, &ringbuf_drops, &status);
    drop(ebpf);
    Ok(())
}

/// Refreshes the counters readers see.
fn publish(
    local: &mut PemStatus,
    tracker: &Tracker,
    ringbuf_drops: &PerCpuArray<MapData, u64>,
    status: &Mutex<PemStatus>,
) {
    local.tracker = tracker.counters();
    local.kernel_drops = ringbuf_drops
        .get(&0, 0)
        .map_or(local.kernel_drops, |per_cpu| per_cpu.iter().sum());
    *status.lock().unwrap_or_else(PoisonError::into_inner) = local.clone();
}

/// Handles up to [`EVENTS_PER_TURN`] ring buffer records; returns how many there were.
fn drain(
    ring: &mut RingBuf<MapData>,
    tracker: &mut Tracker,
    conns: &BpfHashMap<MapData, u64, ConnInfo>,
    status: &mut PemStatus,
) -> usize {
    let mut handled = 0;
    while handled < EVENTS_PER_TURN {
        let Some(item) = ring.next() else { break };
        handled += 1;
        match events::decode(&item) {
            Ok(event) => tracker.handle(event, &Conns(conns)),
            Err(_) => status.decode_errors += 1,
        }
    }
    status.events_received += handled as u64;
    handled
}

fn apply_kernel_updates(
    tracker: &mut Tracker,
    conns: &mut BpfHashMap<MapData, u64, ConnInfo>,
    muted: &mut BpfHashMap<MapData, u64, u64>,
) {
    for (key, generation) in tracker.take_mutes() {
        // Failure only means the kernel keeps copying this connection's bytes.
        let _ = muted.insert(key, generation, 0);
    }
    for key in tracker.take_forgets() {
        let _ = conns.remove(&key);
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        pem: crate::args::PemArgs,
    }

    #[test]
    fn the_datastream_buffer_bounds_each_parser() {
        let flags = Flags::try_parse_from(["pem", "--datastream-buffer", "64Ki"]).unwrap();
        let config = flags.pem.to_config().unwrap();
        assert_eq!(config.datastream_buffer_bytes, 64 << 10);
        assert_eq!(tracker_settings(&config).limits.max_header_bytes, 64 << 10);
        let default = Flags::try_parse_from(["pem"])
            .unwrap()
            .pem
            .to_config()
            .unwrap();
        assert_eq!(tracker_settings(&default).limits.max_header_bytes, 8 << 10);
        let mut huge = default;
        huge.datastream_buffer_bytes = 4 << 20;
        let error = huge.validate().unwrap_err().to_string();
        assert!(error.contains("between 1Ki and 1Mi"), "{error}");
    }
}
