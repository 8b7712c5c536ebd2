//! The Rust mirrors in `px_ebpf::socket_trace` against the compiled object's BTF: every
//! struct's size and every field's offset must match, or kernel and user space would
//! read each other's bytes wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use object::{Object, ObjectSection};
use px_ebpf::dynamic_probe::{
    Capture, ProbeCgroupKey, ProbeConfig, ProbeCounters, ProbeEvent, ProbeGlobals,
};
use px_ebpf::socket_trace::{
    CloseEvent, Config, ConnId, ConnInfo, DataEvent, Endpoints, EventHeader, OpenEvent,
    ProcExitEvent,
};

/// A struct as BTF describes it: size and member offsets in bytes.
struct BtfStruct {
    size: usize,
    members: HashMap<String, usize>,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn name_at(strings: &[u8], offset: u32) -> String {
    let rest = &strings[offset as usize..];
    let end = rest.iter().position(|b| *b == 0).unwrap();
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

/// Reads every named struct from a BTF blob (the format is in the kernel's btf.rst).
fn btf_structs(btf: &[u8]) -> HashMap<String, BtfStruct> {
    assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
    let hdr_len = u32_at(btf, 4) as usize;
    let (type_off, type_len) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
    let str_off = u32_at(btf, 16) as usize;
    let types = &btf[hdr_len + type_off..hdr_len + type_off + type_len];
    let strings = &btf[hdr_len + str_off..];
    let mut structs = HashMap::new();
    let mut at = 0;
    while at < types.len() {
        let name = u32_at(types, at);
        let info = u32_at(types, at + 4);
        let size = u32_at(types, at + 8) as usize;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        at += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
            _ => 0,
        };
        if kind == 4 && name != 0 {
            let members = (0..vlen)
                .map(|i| {
                    let m = at + i * 12;
                    let bits = u32_at(types, m + 8);
                    let bits = if kind_flag { bits & 0x00ff_ffff } else { bits };
                    (name_at(strings, u32_at(types, m)), bits as usize / 8)
                })
                .collect();
            structs.insert(name_at(strings, name), BtfStruct { size, members });
        }
        at += extra;
    }
    structs
}

macro_rules! check {
    ($structs:expr, $c_name:literal, $rust:ty, { $($c_field:literal => $rust_field:ident),* $(,)? }) => {{
        let s = &$structs[$c_name];
        assert_eq!(s.size, size_of::<$rust>(), "size of {}", $c_name);
        $(
            assert_eq!(
                s.members[$c_field],
                offset_of!($rust, $rust_field),
                "offset of {}.{}", $c_name, $c_field
            );
        )*
        assert_eq!(s.members.len(), [$($c_field),*].len(), "fields of {}", $c_name);
    }};
}

#[test]
fn rust_mirrors_match_the_object_btf() {
    let elf = object::File::parse(px_ebpf::socket_trace_object()).unwrap();
    let btf = elf.section_by_name(".BTF").unwrap().data().unwrap();
    let structs = btf_structs(btf);

    check!(structs, "px_conn_id", ConnId, {
        "generation" => generation, "tgid" => tgid, "fd" => fd,
    });
    check!(structs, "px_config", Config, {
        "self_tgid" => self_tgid, "chunk_limit" => chunk_limit,
        "wakeup_bytes" => wakeup_bytes, "cgroup_level" => cgroup_level,
        "cgroup_id" => cgroup_id,
    });
    check!(structs, "px_endpoints", Endpoints, {
        "raddr" => raddr, "laddr" => laddr, "family" => family, "rport" => rport,
        "lport" => lport, "_pad" => pad,
    });
    check!(structs, "px_conn_info", ConnInfo, {
        "generation" => generation, "bytes_sent" => bytes_sent, "bytes_recv" => bytes_recv,
        "ends" => ends, "role" => role, "_pad" => pad,
    });
    check!(structs, "px_event_header", EventHeader, {
        "timestamp_ns" => timestamp_ns, "conn" => conn, "kind" => kind, "_pad" => pad,
    });
    check!(structs, "px_open_event", OpenEvent, {
        "hdr" => hdr, "ends" => ends, "role" => role, "_pad" => pad,
    });
    check!(structs, "px_close_event", CloseEvent, {
        "hdr" => hdr, "bytes_sent" => bytes_sent, "bytes_recv" => bytes_recv,
    });
    check!(structs, "px_data_event", DataEvent, {
        "hdr" => hdr, "position" => position, "size" => size, "captured" => captured,
        "direction" => direction, "_pad" => pad,
    });
    check!(structs, "px_proc_exit_event", ProcExitEvent, { "hdr" => hdr });
}

#[test]
fn dynamic_probe_mirrors_match_the_object_btf() {
    let elf = object::File::parse(px_ebpf::dynamic_probe_object()).unwrap();
    let btf = elf.section_by_name(".BTF").unwrap().data().unwrap();
    let structs = btf_structs(btf);

    check!(structs, "px_capture", Capture, {
        "offset" => offset, "len_offset" => len_offset, "max_len" => max_len,
        "kind" => kind, "size_or_flags" => size_or_flags,
    });
    check!(structs, "px_probe_config", ProbeConfig, {
        "flags" => flags, "n_captures" => n_captures, "rate_per_sec" => rate_per_sec,
        "generation" => generation, "comm" => comm, "cgroup_levels" => cgroup_levels,
        "captures" => captures,
    });
    check!(structs, "px_probe_globals", ProbeGlobals, {
        "self_tgid" => self_tgid, "cgroup_level" => cgroup_level, "cgroup_id" => cgroup_id,
    });
    check!(structs, "px_probe_cgroup_key", ProbeCgroupKey, {
        "probe" => probe, "_pad" => pad, "cgroup_id" => cgroup_id,
    });
    check!(structs, "px_probe_counters", ProbeCounters, {
        "window" => window, "admitted" => admitted, "dropped" => dropped,
    });
    check!(structs, "px_probe_event", ProbeEvent, {
        "config" => config, "generation" => generation, "tgid" => tgid, "tid" => tid,
        "ktime_ns" => ktime_ns, "comm" => comm, "data_len" => data_len, "_pad" => pad,
        "values" => values,
    });
}
