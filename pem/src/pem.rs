//! The running PEM: reads kernel events, tracks connections, fills the tables.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use px_tablestore::TableStore;

use crate::clock;
use crate::config::PemConfig;
use crate::conn_stats;
use crate::error::Error;
use crate::event_loop::{EventLoop, Intervals};
use crate::loader::SocketTracer;
use crate::probes::{ProbeManager, ProbeSettings};
use crate::process::ProcessTable;
use crate::protocols::{ParserLimits, REGISTRY};
use crate::tracker::{Tracker, TrackerCounters, TrackerSettings};

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
    /// Reads the dynamic probes' events; stops when dropped.
    probe_reader: crate::probes::ReaderThread,
    processes: Arc<ProcessTable>,
    /// Samples `process_stats` and `network_stats`; stops when dropped.
    proc_stats: crate::proc_stats::SamplerThread,
    status: Arc<Mutex<PemStatus>>,
    /// The socket tracer's thread.
    event_loop: EventLoop,
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
        let probe_reader =
            crate::probes::ReaderThread::spawn(&probes).map_err(|source| Error::EventThread {
                thread: "probe reader",
                source,
            })?;
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
        let tracker = Tracker::new(
            tracker_settings(&config),
            Arc::clone(&processes),
            clock::boot_to_epoch_ns(),
        );
        let event_loop = EventLoop::spawn(
            tracer,
            tracker,
            Intervals {
                poll: config.poll_interval,
                flush: config.flush_interval,
                conn_stats: config.conn_stats_interval,
            },
            Arc::clone(&store),
            Arc::clone(&status),
        )?;
        Ok(Self {
            store,
            probes,
            probe_reader,
            processes,
            proc_stats,
            status,
            event_loop,
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
    pub async fn stop(self) -> Result<PemStatus, Error> {
        let Self {
            mut probe_reader,
            mut proc_stats,
            status,
            event_loop,
            ..
        } = self;
        // The joins block: the reader and the sampler within one short sleep, the event
        // loop within its bounded final drain (event_loop::SHUTDOWN_DRAIN_LIMIT).
        let stopped = tokio::task::spawn_blocking(move || {
            probe_reader.stop();
            proc_stats.stop();
            event_loop.stop()
        })
        .await;
        match stopped {
            Ok(result) => result.map(|()| {
                status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            }),
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

pub(crate) fn tracker_settings(config: &PemConfig) -> TrackerSettings {
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
