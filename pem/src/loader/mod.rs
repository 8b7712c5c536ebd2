//! Loads the kernel programs and hands out the maps the PEM reads and writes.
//!
//! One file per hook kind: syscall tracepoints now; uprobes come with dynamic probes.

mod tracepoint;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::{Ebpf, EbpfLoader};
use px_ebpf::socket_trace::{Config, ConnInfo};

use crate::cgroup::CgroupScope;
use crate::config::PemConfig;
use crate::error::Error;
use crate::privileges;

/// The socket tracer, loaded and attached. Dropping it detaches every program.
pub(crate) struct SocketTracer {
    /// Owns the programs: dropping it detaches them.
    pub(crate) ebpf: Ebpf,
    /// Events from the kernel.
    pub(crate) events: RingBuf<MapData>,
    /// Connections and their byte counters, keyed by `tgid << 32 | fd`.
    pub(crate) conns: HashMap<MapData, u64, ConnInfo>,
    /// Connections whose payload the PEM does not want, keyed like `conns`.
    pub(crate) muted: HashMap<MapData, u64, u64>,
    /// Records the kernel could not queue because the ring buffer was full, per CPU.
    pub(crate) ringbuf_drops: PerCpuArray<MapData, u64>,
}

impl SocketTracer {
    /// Checks privileges, loads the object and attaches every syscall tracepoint.
    ///
    /// # Minimum kernel version
    /// 5.15 (ring buffer, atomic fetch-and-add in BPF, `bpf_task_pt_regs` for the syscall
    /// arguments at exit), with BTF for the CO-RE socket reads.
    pub(crate) fn load(config: &PemConfig) -> Result<Self, Error> {
        let scope = config
            .cgroup
            .as_deref()
            .map(CgroupScope::resolve)
            .transpose()?;
        privileges::check_capabilities()?;
        privileges::ensure_tracefs()?;
        raise_memlock_limit();

        let mut ebpf = EbpfLoader::new()
            .map_max_entries("events", config.ring_buffer_bytes)
            .load(px_ebpf::socket_trace_object())
            .map_err(|source| Error::LoadObject { source })?;

        let mut settings: Array<_, Config> =
            Array::try_from(take(&mut ebpf, "config")?).map_err(|source| Error::Map {
                map: "config",
                source,
            })?;
        settings
            .set(
                0,
                Config {
                    self_tgid: std::process::id(),
                    chunk_limit: config.chunk_limit,
                    // An eighth full: the poll timer normally drains long before that.
                    wakeup_bytes: config.ring_buffer_bytes / 8,
                    cgroup_level: scope.map_or(0, |s| s.level),
                    cgroup_id: scope.map_or(0, |s| s.id),
                },
                0,
            )
            .map_err(|source| Error::Map {
                map: "config",
                source,
            })?;

        let events =
            RingBuf::try_from(take(&mut ebpf, "events")?).map_err(|source| Error::Map {
                map: "events",
                source,
            })?;
        let conns = HashMap::try_from(take(&mut ebpf, "conns")?).map_err(|source| Error::Map {
            map: "conns",
            source,
        })?;
        let muted = HashMap::try_from(take(&mut ebpf, "muted")?).map_err(|source| Error::Map {
            map: "muted",
            source,
        })?;

        let ringbuf_drops =
            PerCpuArray::try_from(take(&mut ebpf, "ringbuf_drops")?).map_err(|source| {
                Error::Map {
                    map: "ringbuf_drops",
                    source,
                }
            })?;

        tracepoint::attach_all(&mut ebpf)?;
        Ok(Self {
            ebpf,
            events,
            conns,
            muted,
            ringbuf_drops,
        })
    }
}

fn take(ebpf: &mut Ebpf, map: &'static str) -> Result<aya::maps::Map, Error> {
    ebpf.take_map(map).ok_or(Error::Map {
        map,
        source: aya::maps::MapError::InvalidName {
            name: map.to_owned(),
        },
    })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it where allowed.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; failure is harmless on newer kernels.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if rc != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on Linux 5.11 and later");
    }
}
