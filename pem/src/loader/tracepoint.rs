//! Syscall and scheduler tracepoints: the socket tracer's hooks.
//!
//! Tracepoints, not kprobes: they are a stable kernel interface, and they exist where
//! kprobes are compiled out.

use aya::Ebpf;
use aya::programs::TracePoint;

use crate::error::Error;

/// (program name in the object, tracepoint category, tracepoint name).
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept"),
    ("sys_exit_accept4", "syscalls", "sys_exit_accept4"),
    ("sys_enter_close", "syscalls", "sys_enter_close"),
    ("sys_exit_read", "syscalls", "sys_exit_read"),
    ("sys_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
    ("sys_exit_readv", "syscalls", "sys_exit_readv"),
    ("sys_exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
    ("sys_exit_write", "syscalls", "sys_exit_write"),
    ("sys_exit_sendto", "syscalls", "sys_exit_sendto"),
    ("sys_exit_writev", "syscalls", "sys_exit_writev"),
    ("sys_exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];

/// Loads and attaches every tracepoint program. The links live as long as `ebpf`.
pub(super) fn attach_all(ebpf: &mut Ebpf) -> Result<(), Error> {
    for &(program, category, name) in TRACEPOINTS {
        let tracepoint: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or(Error::ProgramMissing { program })?
            .try_into()
            .map_err(|source| Error::AttachProgram { program, source })?;
        tracepoint
            .load()
            .map_err(|source| Error::AttachProgram { program, source })?;
        tracepoint
            .attach(category, name)
            .map_err(|source| Error::AttachProgram { program, source })?;
    }
    Ok(())
}
