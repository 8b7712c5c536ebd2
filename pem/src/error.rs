//! Errors of the PEM.

use std::io;

/// What stopped the PEM from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process lacks capabilities needed to load and attach eBPF programs.
    #[error(
        "missing privileges: {missing}. The PEM loads eBPF programs into the kernel: run it as \
         root (sudo), or grant the capabilities to the binary: \
         sudo setcap cap_bpf,cap_perfmon+ep <path to the binary>"
    )]
    MissingPrivileges {
        /// The capabilities that are missing, by name.
        missing: String,
    },
    /// tracefs is not mounted and could not be mounted.
    #[error(
        "tracefs is not mounted (looked in {looked_in}); the syscall tracepoints are found \
         there. Mount it with: sudo mount -t tracefs nodev /sys/kernel/tracing"
    )]
    TracefsMissing {
        /// The places searched.
        looked_in: String,
    },
    /// The thread that samples `/proc` could not start.
    #[error("starting the process_stats sampler thread failed: {source}")]
    SamplerThread {
        /// What the OS said.
        source: std::io::Error,
    },
    /// A thread that reads kernel events could not start.
    #[error("starting the {thread} thread failed: {source}")]
    EventThread {
        /// Which thread.
        thread: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The settings cannot work.
    #[error("invalid PEM setting: {reason}")]
    InvalidConfig {
        /// What is wrong and what to do.
        reason: String,
    },
    /// The kernel refused the eBPF object.
    #[error("loading the eBPF object failed: {source}")]
    LoadObject {
        /// The loader's error.
        #[source]
        source: aya::EbpfError,
    },
    /// A program could not be loaded or attached.
    #[error("attaching eBPF program {program} failed: {source}")]
    AttachProgram {
        /// The program's name.
        program: &'static str,
        /// The loader's error, with the verifier's log when the kernel refused it.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The object lacks a program the PEM needs (a build problem).
    #[error("the eBPF object has no program {program}")]
    ProgramMissing {
        /// The program's name.
        program: &'static str,
    },
    /// A map is missing or of the wrong type (a build problem).
    #[error("eBPF map {map} is unusable: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The loader's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Waiting on the ring buffer failed.
    #[error("polling the event ring buffer failed: {source}")]
    RingBufferPoll {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A table could not be created.
    #[error(transparent)]
    TableStore(#[from] px_tablestore::Error),
}
