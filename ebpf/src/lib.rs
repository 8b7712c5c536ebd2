//! The PEM's kernel programs and the structs they share with user space.
//!
//! The programs are C (`ebpf/c/*.bpf.c`), compiled by `build.rs` with clang for the
//! `bpf` target and embedded here; the PEM loads them with aya. The `#[repr(C)]` types
//! in [`socket_trace`] mirror `c/socket_trace.h` field for field; `tests/layout.rs`
//! checks them against the compiled object's BTF.

pub mod dynamic_probe;
pub mod socket_trace;

/// The bytes of a compiled BPF object, aligned so an ELF parser can read them in place.
#[repr(C, align(32))]
struct Aligned<T: ?Sized>(T);

static SOCKET_TRACE_OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/socket_trace.bpf.o"
)));

/// The socket tracer's object file (syscall tracepoints, ring buffer, connection maps).
///
/// # Minimum kernel version
/// 5.8, for `BPF_MAP_TYPE_RINGBUF`; atomic fetch-and-add (`-mcpu=v3`) needs 5.12.
#[must_use]
pub fn socket_trace_object() -> &'static [u8] {
    &SOCKET_TRACE_OBJECT.0
}

static DYNAMIC_PROBE_OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/dynamic_probe.bpf.o"
)));

/// The dynamic probe programs (`probe_entry`, `probe_return`, `probe_tracepoint`), one
/// object for every Tracepoint: what each probe captures is data in its maps.
///
/// # Minimum kernel version
/// 5.15, for uprobe attach cookies.
#[must_use]
pub fn dynamic_probe_object() -> &'static [u8] {
    &DYNAMIC_PROBE_OBJECT.0
}

static DYNAMIC_PROBE_REJECTED_OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/dynamic_probe_rejected.bpf.o"
)));

/// The dynamic probe object with a deliberate out-of-bounds read that the kernel's
/// verifier refuses: for tests of how a refusal is reported. Never load it otherwise.
#[doc(hidden)]
#[must_use]
pub fn dynamic_probe_rejected_object() -> &'static [u8] {
    &DYNAMIC_PROBE_REJECTED_OBJECT.0
}
