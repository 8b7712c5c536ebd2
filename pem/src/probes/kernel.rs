//! The generic probe programs in the kernel: loaded once, attached and detached per
//! probe, told what to capture through their maps.

use std::os::fd::AsFd as _;
use std::path::Path;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::programs::{ProgramError, TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use px_ebpf::dynamic_probe::{
    MAX_PROBES, ProbeCgroupKey, ProbeConfig, ProbeCounters, ProbeGlobals,
};

use super::format;
use super::state::ProbeFailure;

const ENTRY: &str = "probe_entry";
const RETURN: &str = "probe_return";
const TRACEPOINT: &str = "probe_tracepoint";

/// What one probe holds in the kernel; detach with [`ProbeKernel::detach`].
#[derive(Debug, Default)]
pub(crate) struct Attachments {
    entries: Vec<UProbeLinkId>,
    returns: Vec<UProbeLinkId>,
    tracepoint: Option<super::perf_link::PerfLink>,
}

impl Attachments {
    pub(crate) fn count(&self) -> u32 {
        let n = self.entries.len() + self.returns.len() + usize::from(self.tracepoint.is_some());
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// How a probe sees its function return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Returns {
    /// It does not need to.
    None,
    /// A uretprobe (C, C++, Rust).
    Uretprobe,
    /// A uprobe on each return instruction (Go: a uretprobe's trampoline address on a
    /// goroutine stack breaks the runtime when it copies or scans the stack).
    AtReturnInstructions,
}

/// The loaded object. Dropping it detaches everything.
pub(crate) struct ProbeKernel {
    ebpf: Ebpf,
    configs: Array<MapData, ProbeConfig>,
    counters: Array<MapData, ProbeCounters>,
    cgroups: BpfHashMap<MapData, ProbeCgroupKey, u8>,
}

fn map_failure(what: &str, e: impl std::fmt::Display) -> ProbeFailure {
    ProbeFailure::new("InternalError", format!("{what}: {e}"))
}

/// A load error with the verifier's own words.
fn load_failure(e: ProgramError) -> ProbeFailure {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => ProbeFailure::new(
            "VerifierRejected",
            format!("the kernel refused the probe program ({io_error}); verifier: {verifier_log}"),
        ),
        other => ProbeFailure::new("VerifierRejected", other.to_string()),
    }
}

impl ProbeKernel {
    /// Loads the programs; returns them with the ring buffer the events arrive in.
    pub(crate) fn load(
        ring_bytes: u32,
        globals: ProbeGlobals,
    ) -> Result<(Self, RingBuf<MapData>), ProbeFailure> {
        Self::load_object(px_ebpf::dynamic_probe_object(), ring_bytes, globals)
    }

    fn load_object(
        object: &[u8],
        ring_bytes: u32,
        globals: ProbeGlobals,
    ) -> Result<(Self, RingBuf<MapData>), ProbeFailure> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("probe_events", ring_bytes)
            .load(object)
            .map_err(|e| {
                ProbeFailure::new("VerifierRejected", format!("loading the probe object: {e}"))
            })?;
        for (name, uprobe) in [(ENTRY, true), (RETURN, true), (TRACEPOINT, false)] {
            let program = ebpf
                .program_mut(name)
                .ok_or_else(|| map_failure("program", name))?;
            let loaded = if uprobe {
                <&mut UProbe>::try_from(program)
                    .map_err(|e| map_failure(name, e))?
                    .load()
            } else {
                <&mut TracePoint>::try_from(program)
                    .map_err(|e| map_failure(name, e))?
                    .load()
            };
            loaded.map_err(load_failure)?;
        }
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| map_failure("map", name));
        let mut globals_map: Array<MapData, ProbeGlobals> =
            Array::try_from(take("probe_globals")?).map_err(|e| map_failure("probe_globals", e))?;
        globals_map
            .set(0, globals, 0)
            .map_err(|e| map_failure("probe_globals", e))?;
        let configs =
            Array::try_from(take("probe_configs")?).map_err(|e| map_failure("probe_configs", e))?;
        let counters = Array::try_from(take("probe_counters")?)
            .map_err(|e| map_failure("probe_counters", e))?;
        let cgroups = BpfHashMap::try_from(take("probe_cgroups")?)
            .map_err(|e| map_failure("probe_cgroups", e))?;
        let events =
            RingBuf::try_from(take("probe_events")?).map_err(|e| map_failure("probe_events", e))?;
        Ok((
            Self {
                ebpf,
                configs,
                counters,
                cgroups,
            },
            events,
        ))
    }

    /// Writes what side `side` (0 entry, 1 return) of `probe` captures.
    pub(crate) fn configure(
        &mut self,
        probe: u32,
        side: u32,
        config: ProbeConfig,
    ) -> Result<(), ProbeFailure> {
        self.configs
            .set(probe * 2 + side, config, 0)
            .map_err(|e| map_failure("probe_configs", e))?;
        if side == 0 {
            self.counters
                .set(probe, ProbeCounters::default(), 0)
                .map_err(|e| map_failure("probe_counters", e))?;
        }
        Ok(())
    }

    /// Lets `probe` trace processes in `cgroup_id` (and, through the levels in its
    /// config, in the cgroups below it).
    pub(crate) fn allow_cgroup(&mut self, probe: u32, cgroup_id: u64) -> Result<(), ProbeFailure> {
        let key = ProbeCgroupKey {
            probe,
            pad: 0,
            cgroup_id,
        };
        self.cgroups
            .insert(key, 1, 0)
            .map_err(|e| map_failure("probe_cgroups", e))
    }

    /// Replaces the cgroups `probe` may trace.
    pub(crate) fn set_cgroups(&mut self, probe: u32, cgroups: &[u64]) -> Result<(), ProbeFailure> {
        self.clear_cgroups(probe);
        for cgroup in cgroups {
            self.allow_cgroup(probe, *cgroup)?;
        }
        Ok(())
    }

    fn clear_cgroups(&mut self, probe: u32) {
        let stale: Vec<ProbeCgroupKey> = self
            .cgroups
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.probe == probe)
            .collect();
        for key in stale {
            let _ = self.cgroups.remove(&key);
        }
    }

    /// Events dropped by `probe` so far.
    pub(crate) fn dropped(&self, probe: u32) -> u64 {
        self.counters.get(&probe, 0).map_or(0, |c| c.dropped)
    }

    /// Attaches `probe` to `symbol` in each binary: at entry, and at return when asked,
    /// with a uretprobe or (`returns_at_ret`, for Go) a uprobe on each return instruction.
    pub(crate) fn attach_uprobe(
        &mut self,
        probe: u32,
        binaries: &[String],
        symbol: &str,
        returns: Returns,
    ) -> Result<Attachments, ProbeFailure> {
        let mut attached = Attachments::default();
        let result = self.attach_all(probe, binaries, symbol, returns, &mut attached);
        if let Err(e) = result {
            self.detach(probe, &mut attached);
            return Err(e);
        }
        Ok(attached)
    }

    fn attach_all(
        &mut self,
        probe: u32,
        binaries: &[String],
        symbol: &str,
        returns: Returns,
        attached: &mut Attachments,
    ) -> Result<(), ProbeFailure> {
        for binary in binaries {
            let entry = UProbeAttachLocation::Symbol(symbol);
            attached
                .entries
                .push(self.attach_one(ENTRY, probe * 2, binary, symbol, entry)?);
            match returns {
                Returns::None => {}
                Returns::Uretprobe => {
                    let at = UProbeAttachLocation::Symbol(symbol);
                    attached.returns.push(self.attach_one(
                        RETURN,
                        probe * 2 + 1,
                        binary,
                        symbol,
                        at,
                    )?);
                }
                Returns::AtReturnInstructions => {
                    for offset in super::elf::return_offsets(Path::new(binary), symbol)? {
                        let at = UProbeAttachLocation::AbsoluteOffset(offset);
                        attached.entries.push(self.attach_one(
                            ENTRY,
                            probe * 2 + 1,
                            binary,
                            symbol,
                            at,
                        )?);
                    }
                }
            }
        }
        Ok(())
    }

    fn attach_one(
        &mut self,
        program: &str,
        cookie: u32,
        binary: &str,
        symbol: &str,
        location: UProbeAttachLocation<'_>,
    ) -> Result<UProbeLinkId, ProbeFailure> {
        let uprobe: &mut UProbe = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| map_failure("program", program))?
            .try_into()
            .map_err(|e| map_failure(program, e))?;
        let point = UProbeAttachPoint {
            location,
            cookie: Some(u64::from(cookie)),
        };
        uprobe
            .attach(point, Path::new(binary), UProbeScope::AllProcesses)
            .map_err(|e| uprobe_failure(e, binary, symbol))
    }

    /// Attaches `probe` to a kernel tracepoint, with the probe in the attach cookie.
    pub(crate) fn attach_tracepoint(
        &mut self,
        probe: u32,
        tracefs: &Path,
        category: &str,
        name: &str,
    ) -> Result<Attachments, ProbeFailure> {
        let event_id = format::event_id(tracefs, category, name).ok_or_else(|| {
            ProbeFailure::new(
                "TracepointNotFound",
                format!("no kernel tracepoint {category}/{name}"),
            )
        })?;
        let program: &mut TracePoint = self
            .ebpf
            .program_mut(TRACEPOINT)
            .ok_or_else(|| map_failure("program", TRACEPOINT))?
            .try_into()
            .map_err(|e| map_failure(TRACEPOINT, e))?;
        let fd = program.fd().map_err(|e| map_failure(TRACEPOINT, e))?;
        let link =
            super::perf_link::attach(fd.as_fd(), event_id, u64::from(probe * 2)).map_err(|e| {
                ProbeFailure::new(
                    "AttachFailed",
                    format!("attaching to {category}/{name}: {e}"),
                )
            })?;
        Ok(Attachments {
            tracepoint: Some(link),
            ..Attachments::default()
        })
    }

    /// Detaches everything of `probe` and clears its config and cgroups.
    pub(crate) fn detach(&mut self, probe: u32, attached: &mut Attachments) {
        for (program, links) in [
            (ENTRY, &mut attached.entries),
            (RETURN, &mut attached.returns),
        ] {
            let Some(Ok(uprobe)) = self.ebpf.program_mut(program).map(<&mut UProbe>::try_from)
            else {
                continue;
            };
            for link in links.drain(..) {
                if let Err(e) = uprobe.detach(link) {
                    tracing::warn!(probe, error = %e, "detaching a uprobe");
                }
            }
        }
        // Closing the perf event and link descriptors detaches the tracepoint.
        attached.tracepoint = None;
        for side in 0..2 {
            let _ = self
                .configs
                .set(probe * 2 + side, ProbeConfig::default(), 0);
        }
        self.clear_cgroups(probe);
    }
}

/// Symbol errors as SymbolNotFound; the rest as what they are.
fn uprobe_failure(e: ProgramError, binary: &str, symbol: &str) -> ProbeFailure {
    use aya::programs::uprobe::UProbeError;
    match e {
        ProgramError::UProbeError(UProbeError::SymbolError { error, .. }) => ProbeFailure::new(
            "SymbolNotFound",
            format!(
                "symbol {symbol} not found in {binary} ({error}); check the name with \
                 `nm -D {binary}` or `go tool nm`, and that the binary is not stripped"
            ),
        ),
        ProgramError::UProbeError(UProbeError::FileError { filename, io_error }) => {
            ProbeFailure::new(
                "BinaryNotFound",
                format!("cannot read {}: {io_error}", filename.display()),
            )
        }
        other => ProbeFailure::new(
            "AttachFailed",
            format!("attaching to {symbol} in {binary}: {other}"),
        ),
    }
}

/// Probe numbers handed out to probes, at most [`MAX_PROBES`].
#[derive(Debug, Default)]
pub(crate) struct Slots {
    used: Vec<bool>,
}

impl Slots {
    pub(crate) fn take(&mut self) -> Option<u32> {
        if self.used.is_empty() {
            self.used = vec![false; MAX_PROBES as usize];
        }
        let free = self.used.iter().position(|u| !u)?;
        self.used[free] = true;
        u32::try_from(free).ok()
    }

    pub(crate) fn give_back(&mut self, slot: u32) {
        if let Some(u) = self.used.get_mut(slot as usize) {
            *u = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program the verifier refuses is reported with the verifier's own words. Loads
    /// into the kernel: needs root, and runs (never skips) under `CI=true`.
    #[test]
    fn a_refused_program_is_reported_with_the_verifiers_message() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: must run as root"
            );
            return;
        }
        let refused = ProbeKernel::load_object(
            px_ebpf::dynamic_probe_rejected_object(),
            1 << 16,
            ProbeGlobals::default(),
        );
        let Err(failure) = refused else {
            panic!("the kernel accepted a program reading past a map value");
        };
        assert_eq!(failure.reason, "VerifierRejected");
        assert!(failure.message.contains("verifier"), "{}", failure.message);
        assert!(
            failure.message.contains("invalid access to map value")
                || failure.message.contains("min value is outside")
                || failure.message.contains("unbounded memory access"),
            "the verifier's own words: {}",
            failure.message
        );
    }
}
