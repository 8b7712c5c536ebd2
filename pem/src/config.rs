//! The PEM's settings, with Pixie's defaults.

use std::time::Duration;

use px_tablestore::BudgetConfig;

use crate::error::Error;

/// Everything the PEM can be told. `main` builds it (from flags, or from what the
/// operator hands the DaemonSet); the library reads nothing else.
#[derive(Clone, Debug)]
pub struct PemConfig {
    /// Memory budgets of the tables (derived from the PEM's memory limit).
    pub budgets: BudgetConfig,
    /// Payload bytes copied from the kernel per syscall (at most 8 KiB). Larger
    /// messages are still counted in full; their bodies are kept truncated.
    pub chunk_limit: u32,
    /// Bytes a parser buffers per connection and direction while a message's head is
    /// incomplete (Pixie's `datastream_buffer_size`, for this PEM's parsers).
    pub datastream_buffer_bytes: usize,
    /// Size of the kernel-to-PEM ring buffer in bytes (a power of two).
    pub ring_buffer_bytes: u32,
    /// Body bytes kept per HTTP message (Pixie: 512); the real size is kept too.
    pub max_body_bytes: usize,
    /// Keep the values of credential headers (`Authorization`, `Cookie`, `Set-Cookie`,
    /// `Proxy-Authorization`, `X-Api-Key`) in `http_events`; by default they are
    /// recorded as present and redacted.
    pub keep_credential_headers: bool,
    /// What the tables' sensitive columns (bodies, headers) keep: the Vizier's
    /// `dataAccess`, applied as rows enter the store, so no query sees more.
    pub data_access: px_tablestore::DataAccess,
    /// This agent's short id, the high 32 bits of every UPID it writes.
    pub asid: u32,
    /// How often `conn_stats` is sampled (Pixie: 5 s).
    pub conn_stats_interval: Duration,
    /// How often the ring buffer is drained (the kernel also wakes the PEM early when it
    /// fills up faster than that).
    pub poll_interval: Duration,
    /// How often parsed records are moved into the tables.
    pub flush_interval: Duration,
    /// A connection with no traffic for this long has its parser state released.
    pub idle_timeout: Duration,
    /// Connections tracked at once; beyond it the least recently active are released.
    pub max_connections: usize,
    /// Trace only the processes in this cgroup v2 directory and below it (a node's
    /// cgroup where several simulated nodes share a machine); `None` traces the host.
    pub cgroup: Option<std::path::PathBuf>,
    /// Dynamic probes loaded at once (at most 64).
    pub max_probes: usize,
    /// Events per second one dynamic probe records; more are counted as dropped.
    pub probe_rate_per_sec: u32,
    /// `process_stats` samples only the processes of pods (a node of a cluster), not
    /// the host's own (`px local` samples every process).
    pub stats_pods_only: bool,
}

impl PemConfig {
    /// Pixie's defaults for a PEM with this memory limit.
    #[must_use]
    pub fn for_memory_limit(memory_limit_bytes: u64) -> Self {
        Self {
            budgets: BudgetConfig::for_memory_limit(memory_limit_bytes),
            chunk_limit: 8192,
            ring_buffer_bytes: 8 << 20,
            datastream_buffer_bytes: 8 << 10,
            max_body_bytes: 512,
            keep_credential_headers: false,
            data_access: px_tablestore::DataAccess::Full,
            asid: 0,
            conn_stats_interval: Duration::from_secs(5),
            poll_interval: Duration::from_millis(20),
            flush_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(120),
            max_connections: 65_536,
            cgroup: None,
            max_probes: 32,
            probe_rate_per_sec: 100_000,
            stats_pods_only: false,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the setting and the values it accepts.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::InvalidConfig { reason });
        if !(1 << 10..=1 << 20).contains(&self.datastream_buffer_bytes) {
            return invalid(format!(
                "the datastream buffer ({} bytes) must be between 1Ki and 1Mi: it is held per connection and direction",
                self.datastream_buffer_bytes
            ));
        }
        if self.chunk_limit == 0 || self.chunk_limit > px_ebpf::socket_trace::MAX_CHUNK {
            return invalid(format!(
                "chunk limit {} must be between 1 and {} bytes",
                self.chunk_limit,
                px_ebpf::socket_trace::MAX_CHUNK
            ));
        }
        if !self.ring_buffer_bytes.is_power_of_two() || self.ring_buffer_bytes < 4096 {
            return invalid(format!(
                "ring buffer size {} must be a power of two of at least 4096 bytes",
                self.ring_buffer_bytes
            ));
        }
        let fixed = u64::from(self.ring_buffer_bytes) + self.budgets.total_bytes();
        if fixed > self.budgets.memory_limit_bytes {
            return invalid(format!(
                "tables ({} bytes) and the ring buffer ({} bytes) do not fit the memory limit of {} bytes; raise the limit",
                self.budgets.total_bytes(),
                self.ring_buffer_bytes,
                self.budgets.memory_limit_bytes
            ));
        }
        self.budgets.validate().map_err(Error::from)
    }
}
