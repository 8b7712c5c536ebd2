//! A Tracepoint spec turned into what the generic probe programs capture and how each
//! captured value becomes a column: pure functions, checked before anything is loaded.

use std::path::{Path, PathBuf};

use px_crds::{Abi, Column, ColumnSource, ColumnType, TracepointSpec};
use px_ebpf::dynamic_probe::{
    CAP_DATA_LOC, CAP_FLAG_LEN, CAP_INLINE, CAP_SCALAR, CAP_USER_BYTES, CAP_USER_STR, Capture,
    MAX_CAPTURES, MAX_DATA,
};
use px_tablestore::{ColumnSchema, DataType, SemanticType, TableSchema};

use super::format::{self, Field};
use super::state::ProbeFailure;

/// `pt_regs` offsets on x86-64 (arch/x86/include/asm/ptrace.h).
mod regs {
    pub(super) const R14: u16 = 8;
    pub(super) const R11: u16 = 48;
    pub(super) const R10: u16 = 56;
    pub(super) const R9: u16 = 64;
    pub(super) const R8: u16 = 72;
    pub(super) const AX: u16 = 80;
    pub(super) const BX: u16 = 40;
    pub(super) const CX: u16 = 88;
    pub(super) const DX: u16 = 96;
    pub(super) const SI: u16 = 104;
    pub(super) const DI: u16 = 112;
}

/// System V x86-64: integer arguments, then integer return values.
const SYSV_ARGS: &[u16] = &[regs::DI, regs::SI, regs::DX, regs::CX, regs::R8, regs::R9];
const SYSV_RETURNS: &[u16] = &[regs::AX, regs::DX];
/// Go's register ABI (Go 1.17+): the same sequence for arguments and results.
const GO_REGS: &[u16] = &[
    regs::AX,
    regs::BX,
    regs::CX,
    regs::DI,
    regs::SI,
    regs::R8,
    regs::R9,
    regs::R10,
    regs::R11,
];

/// Default bytes copied for a string or buffer.
const DEFAULT_MAX_LENGTH: u16 = 64;

/// Which calling convention reads the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallingConvention {
    SysV,
    Go,
}

/// Where the probe hooks in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    /// A user-space function; `returns` when a return probe is needed too.
    Uprobe {
        binary: String,
        symbol: String,
        convention: CallingConvention,
        returns: bool,
    },
    /// A kernel tracepoint.
    Tracepoint { category: String, name: String },
}

/// How a captured 64-bit value (or byte string) becomes a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decode {
    Signed(u8),
    Unsigned(u8),
    Bool,
    Text,
    Bytes,
}

impl Decode {
    fn data_type(self) -> DataType {
        match self {
            Self::Signed(_) | Self::Unsigned(_) => DataType::Int64,
            Self::Bool => DataType::Boolean,
            Self::Text | Self::Bytes => DataType::String,
        }
    }
}

/// Where a column's value comes from in the events of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueSource {
    /// Capture `n` of the entry (or tracepoint) event.
    Entry(usize, Decode),
    /// Capture `n` of the return event.
    Return(usize, Decode),
    Latency,
    Pid,
    Tid,
    Comm,
}

/// A loadable probe: the hook, what each side captures, and the table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub(crate) hook: Hook,
    pub(crate) entry: Vec<Capture>,
    pub(crate) ret: Vec<Capture>,
    pub(crate) columns: Vec<ValueSource>,
    pub(crate) schema: TableSchema,
    /// Only threads with this command name (the target's `executable`).
    pub(crate) comm: Option<[u8; 16]>,
    /// For Go: the captures (entry, return) holding the goroutine (`g` in R14), which
    /// pairs a return with its call even when the goroutine moved to another thread.
    /// Otherwise calls pair by thread.
    pub(crate) goroutine: Option<(usize, usize)>,
}

/// Checks a spec and plans its probe. `tracefs` is where tracepoint formats are read;
/// `binary_root` resolves the spec's binary path (a process's `/proc/PID/root`, or `/`).
pub(crate) fn plan(
    spec: &TracepointSpec,
    tracefs: &Path,
    binary_root: &Path,
) -> Result<Plan, ProbeFailure> {
    let executable = spec
        .target
        .pods
        .as_ref()
        .and_then(|p| p.executable.clone())
        .or_else(|| spec.target.host.as_ref().and_then(|h| h.executable.clone()));
    let comm = executable.as_deref().map(comm_of);
    let schema = TableSchema::new(
        &spec.table,
        "Rows recorded by a Tracepoint.",
        table_columns(spec)?,
    );
    match (&spec.probe.uprobe, &spec.probe.tracepoint) {
        (Some(function), None) => {
            let binary = resolve_binary(binary_root, &function.binary)?;
            let convention = match function.abi.unwrap_or(Abi::Auto) {
                Abi::SysV => CallingConvention::SysV,
                Abi::Go => CallingConvention::Go,
                Abi::Auto => detect_convention(&binary)?,
            };
            let (mut entry, mut ret, columns) = uprobe_captures(&spec.columns, convention)?;
            let returns = columns
                .iter()
                .any(|c| matches!(c, ValueSource::Return(..) | ValueSource::Latency));
            let goroutine = (returns && convention == CallingConvention::Go).then(|| {
                let g = Capture {
                    offset: regs::R14,
                    kind: CAP_SCALAR,
                    size_or_flags: 8,
                    ..Capture::default()
                };
                entry.push(g);
                ret.push(g);
                (entry.len() - 1, ret.len() - 1)
            });
            check_capture_count(&entry)?;
            check_capture_count(&ret)?;
            Ok(Plan {
                hook: Hook::Uprobe {
                    binary: binary.to_string_lossy().into_owned(),
                    symbol: function.symbol.clone(),
                    convention,
                    returns,
                },
                entry,
                ret,
                columns,
                schema,
                comm,
                goroutine,
            })
        }
        (None, Some(tracepoint)) => {
            let (category, name) = tracepoint.split_once('/').ok_or_else(|| {
                ProbeFailure::invalid(format!(
                    "tracepoint {tracepoint:?} is not category/name, e.g. syscalls/sys_enter_openat"
                ))
            })?;
            let fields = format::read(tracefs, category, name).ok_or_else(|| {
                ProbeFailure::new(
                    "TracepointNotFound",
                    format!(
                        "no kernel tracepoint {tracepoint} on this node (looked for {}); \
                         list the ones there are with: ls {}",
                        tracefs
                            .join("events")
                            .join(category)
                            .join(name)
                            .join("format")
                            .display(),
                        tracefs.join("events").display()
                    ),
                )
            })?;
            let (entry, columns) = tracepoint_captures(&spec.columns, category, &fields)?;
            Ok(Plan {
                hook: Hook::Tracepoint {
                    category: category.to_owned(),
                    name: name.to_owned(),
                },
                entry,
                ret: Vec::new(),
                columns,
                schema,
                comm,
                goroutine: None,
            })
        }
        _ => Err(ProbeFailure::invalid(
            "exactly one of probe.uprobe and probe.tracepoint must be set",
        )),
    }
}

/// `time_`, `upid`, then the spec's columns with the types their values decode to.
fn table_columns(spec: &TracepointSpec) -> Result<Vec<ColumnSchema>, ProbeFailure> {
    let mut columns = vec![
        ColumnSchema::new(
            "time_",
            DataType::Time64Ns,
            SemanticType::None,
            "When the probe fired.",
        ),
        ColumnSchema::new(
            "upid",
            DataType::UInt128,
            SemanticType::Upid,
            "The process, as Pixie's UPID.",
        ),
    ];
    for column in &spec.columns {
        if column.name == "time_" || column.name == "upid" {
            return Err(ProbeFailure::invalid(format!(
                "column {}: time_ and upid are added by the PEM",
                column.name
            )));
        }
        let (data_type, semantic) = match column.source {
            ColumnSource::Latency => (DataType::Int64, SemanticType::DurationNs),
            ColumnSource::Comm => (DataType::String, SemanticType::None),
            ColumnSource::Pid | ColumnSource::Tid => (DataType::Int64, SemanticType::None),
            ColumnSource::Arg | ColumnSource::Return | ColumnSource::Field => (
                column
                    .type_
                    .map_or(DataType::Int64, |t| declared_decode(t).data_type()),
                SemanticType::None,
            ),
        };
        columns.push(ColumnSchema::new(
            &column.name,
            data_type,
            semantic,
            &format!("{:?} of the probe.", column.source),
        ));
    }
    Ok(columns)
}

fn declared_decode(t: ColumnType) -> Decode {
    match t {
        ColumnType::Int64 => Decode::Signed(8),
        ColumnType::Int32 => Decode::Signed(4),
        ColumnType::Uint64 | ColumnType::Pointer => Decode::Unsigned(8),
        ColumnType::Uint32 => Decode::Unsigned(4),
        ColumnType::Bool => Decode::Bool,
        ColumnType::String => Decode::Text,
        ColumnType::Bytes => Decode::Bytes,
    }
}

/// The first 15 bytes of an executable's name, as the kernel keeps `comm`.
fn comm_of(executable: &str) -> [u8; 16] {
    let name = executable.rsplit('/').next().unwrap_or(executable);
    let mut comm = [0u8; 16];
    for (dst, src) in comm.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    comm
}

/// The binary as this process can open it: the path the target sees, resolved inside
/// `root`. The path is checked again here as the operator checks it: `px trace` and any
/// holder of the PEM's token reach the probe service without the operator.
fn resolve_binary(root: &Path, binary: &str) -> Result<PathBuf, ProbeFailure> {
    if let Some(problem) = px_crds::binary_path_problem(binary) {
        return Err(ProbeFailure::new("InvalidSpec", problem));
    }
    let path = super::targets::resolve_in_root(root, binary)
        .map_err(|m| ProbeFailure::new("BinaryOutsideRoot", m))?;
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(ProbeFailure::new(
            "BinaryNotFound",
            format!(
                "{binary} is not a regular file (looked at {})",
                path.display()
            ),
        )),
        Err(e) => Err(ProbeFailure::new(
            "BinaryNotFound",
            format!(
                "binary {binary} not found ({e}; looked at {}): give the path as the target \
                 process sees it, inside its container",
                path.display()
            ),
        )),
    }
}

/// Go's register ABI for binaries built by Go 1.17 or later, System V otherwise.
fn detect_convention(binary: &Path) -> Result<CallingConvention, ProbeFailure> {
    let Some(version) = super::elf::go_version(binary) else {
        return Ok(CallingConvention::SysV);
    };
    let minor = version
        .strip_prefix("go1.")
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse::<u32>().ok());
    match minor {
        Some(m) if m >= 17 => Ok(CallingConvention::Go),
        _ => Err(ProbeFailure::new(
            "UnsupportedArgument",
            format!(
                "{} was built by {version}: Go before 1.17 passes arguments on the stack, \
                 which this probe cannot read; rebuild it with Go 1.17 or later",
                binary.display()
            ),
        )),
    }
}

type Captures = (Vec<Capture>, Vec<Capture>, Vec<ValueSource>);

/// Register positions of each argument (or result): one word per integer, two for a Go
/// string (pointer, length), three for a Go slice (pointer, length, capacity). Positions
/// not declared by a column count as one word.
fn word_positions(columns: &[&Column], convention: CallingConvention) -> Vec<usize> {
    let max = columns
        .iter()
        .filter_map(|c| c.index)
        .max()
        .map_or(0, usize::from);
    let words = |index: usize| {
        let t = columns
            .iter()
            .find(|c| c.index.map(usize::from) == Some(index))
            .and_then(|c| c.type_);
        match (convention, t) {
            (CallingConvention::Go, Some(ColumnType::String)) => 2,
            (CallingConvention::Go, Some(ColumnType::Bytes)) => 3,
            _ => 1,
        }
    };
    let mut at = 0;
    (0..=max)
        .map(|i| {
            let here = at;
            at += words(i);
            here
        })
        .collect()
}

fn uprobe_captures(
    columns: &[Column],
    convention: CallingConvention,
) -> Result<Captures, ProbeFailure> {
    let args: Vec<&Column> = columns
        .iter()
        .filter(|c| c.source == ColumnSource::Arg)
        .collect();
    let rets: Vec<&Column> = columns
        .iter()
        .filter(|c| c.source == ColumnSource::Return)
        .collect();
    let (arg_regs, ret_regs) = match convention {
        CallingConvention::SysV => (SYSV_ARGS, SYSV_RETURNS),
        CallingConvention::Go => (GO_REGS, GO_REGS),
    };
    let arg_words = word_positions(&args, convention);
    let ret_words = word_positions(&rets, convention);
    let (mut entry, mut ret, mut sources) = (Vec::new(), Vec::new(), Vec::new());
    for column in columns {
        let source = match column.source {
            ColumnSource::Arg => {
                let capture =
                    register_capture(column, &arg_words, arg_regs, convention, "argument")?;
                entry.push(capture.0);
                ValueSource::Entry(entry.len() - 1, capture.1)
            }
            ColumnSource::Return => {
                let capture =
                    register_capture(column, &ret_words, ret_regs, convention, "return value")?;
                ret.push(capture.0);
                ValueSource::Return(ret.len() - 1, capture.1)
            }
            ColumnSource::Latency => ValueSource::Latency,
            ColumnSource::Pid => ValueSource::Pid,
            ColumnSource::Tid => ValueSource::Tid,
            ColumnSource::Comm => ValueSource::Comm,
            ColumnSource::Field => {
                return Err(ProbeFailure::invalid(format!(
                    "column {}: Field columns need a kernel tracepoint probe",
                    column.name
                )));
            }
        };
        sources.push(source);
    }
    check_capture_count(&entry)?;
    check_capture_count(&ret)?;
    Ok((entry, ret, sources))
}

fn check_capture_count(captures: &[Capture]) -> Result<(), ProbeFailure> {
    if captures.len() > MAX_CAPTURES {
        return Err(ProbeFailure::invalid(format!(
            "{} values captured at one point; at most {MAX_CAPTURES} are",
            captures.len()
        )));
    }
    Ok(())
}

/// The capture of an argument or return value held in registers.
fn register_capture(
    column: &Column,
    words: &[usize],
    registers: &[u16],
    convention: CallingConvention,
    what: &str,
) -> Result<(Capture, Decode), ProbeFailure> {
    let index = usize::from(column.index.unwrap_or(0));
    let t = column.type_.ok_or_else(|| {
        ProbeFailure::invalid(format!("column {}: an {what} needs a type", column.name))
    })?;
    let decode = declared_decode(t);
    let word = words.get(index).copied().unwrap_or(index);
    let needs = match (convention, t) {
        (CallingConvention::Go, ColumnType::String | ColumnType::Bytes) => 2,
        _ => 1,
    };
    let unsupported = || {
        ProbeFailure::new(
            "UnsupportedArgument",
            format!(
                "column {}: {what} {index} is passed on the stack, not in a register; \
                 only the first {} integer words are supported",
                column.name,
                registers.len()
            ),
        )
    };
    let reg = *registers.get(word).ok_or_else(unsupported)?;
    let max_len = column
        .max_length
        .unwrap_or(DEFAULT_MAX_LENGTH)
        .min(MAX_DATA as u16);
    let capture = match (decode, convention) {
        (Decode::Signed(_) | Decode::Unsigned(_) | Decode::Bool, _) => Capture {
            offset: reg,
            kind: CAP_SCALAR,
            size_or_flags: 8,
            ..Capture::default()
        },
        (Decode::Text, CallingConvention::SysV) => Capture {
            offset: reg,
            kind: CAP_USER_STR,
            max_len,
            ..Capture::default()
        },
        (Decode::Bytes, CallingConvention::SysV) => {
            let len_offset = match column.length_arg {
                Some(arg) => *SYSV_ARGS.get(usize::from(arg)).ok_or_else(unsupported)?,
                None => 0,
            };
            Capture {
                offset: reg,
                kind: CAP_USER_BYTES,
                max_len,
                len_offset,
                size_or_flags: if column.length_arg.is_some() {
                    CAP_FLAG_LEN
                } else {
                    0
                },
            }
        }
        // A Go string or slice: the pointer, then the length in the next register.
        (Decode::Text | Decode::Bytes, CallingConvention::Go) => {
            let len_reg = *registers.get(word + needs - 1).ok_or_else(unsupported)?;
            Capture {
                offset: reg,
                kind: CAP_USER_BYTES,
                max_len,
                len_offset: len_reg,
                size_or_flags: CAP_FLAG_LEN,
            }
        }
    };
    Ok((capture, decode))
}

fn tracepoint_captures(
    columns: &[Column],
    category: &str,
    fields: &[Field],
) -> Result<(Vec<Capture>, Vec<ValueSource>), ProbeFailure> {
    let mut entry = Vec::new();
    let mut sources = Vec::new();
    for column in columns {
        let source = match column.source {
            ColumnSource::Field => {
                let (capture, decode) = field_capture(column, category, fields)?;
                entry.push(capture);
                ValueSource::Entry(entry.len() - 1, decode)
            }
            ColumnSource::Pid => ValueSource::Pid,
            ColumnSource::Tid => ValueSource::Tid,
            ColumnSource::Comm => ValueSource::Comm,
            other => {
                return Err(ProbeFailure::invalid(format!(
                    "column {}: a kernel tracepoint records Field, Pid, Tid and Comm \
                     columns, not {other:?}",
                    column.name
                )));
            }
        };
        sources.push(source);
    }
    check_capture_count(&entry)?;
    Ok((entry, sources))
}

fn field_capture(
    column: &Column,
    category: &str,
    fields: &[Field],
) -> Result<(Capture, Decode), ProbeFailure> {
    let wanted = column.field.as_deref().unwrap_or(&column.name);
    let field = fields.iter().find(|f| f.name == wanted).ok_or_else(|| {
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        ProbeFailure::new(
            "FieldNotFound",
            format!(
                "column {}: the tracepoint has no field {wanted}; its fields are {}",
                column.name,
                names.join(", ")
            ),
        )
    })?;
    let text =
        field.is_text() && (field.is_pointer() || field.is_data_loc() || field.array_len.is_some());
    let decode = match column.type_ {
        Some(t) => declared_decode(t),
        None if text => Decode::Text,
        None if field.signed => Decode::Signed(clamp_size(field.size)),
        None => Decode::Unsigned(clamp_size(field.size)),
    };
    let max_len = column
        .max_length
        .unwrap_or(DEFAULT_MAX_LENGTH)
        .min(MAX_DATA as u16);
    let capture = match decode {
        Decode::Signed(_) | Decode::Unsigned(_) | Decode::Bool => Capture {
            offset: field.offset,
            kind: CAP_SCALAR,
            size_or_flags: clamp_size(field.size),
            ..Capture::default()
        },
        Decode::Text | Decode::Bytes if field.is_data_loc() => Capture {
            offset: field.offset,
            kind: CAP_DATA_LOC,
            max_len,
            ..Capture::default()
        },
        Decode::Text | Decode::Bytes if field.array_len.is_some() => Capture {
            offset: field.offset,
            kind: CAP_INLINE,
            max_len: max_len.min(field.size),
            ..Capture::default()
        },
        // Pointers in syscall arguments point into the calling process.
        Decode::Text | Decode::Bytes if field.is_pointer() && category == "syscalls" => Capture {
            offset: field.offset,
            kind: if decode == Decode::Text {
                CAP_USER_STR
            } else {
                CAP_USER_BYTES
            },
            max_len,
            ..Capture::default()
        },
        Decode::Text | Decode::Bytes => {
            return Err(ProbeFailure::new(
                "UnsupportedArgument",
                format!(
                    "column {}: field {wanted} is `{} {wanted}`; text is read from \
                     __data_loc and char[] fields and from pointers of syscalls tracepoints",
                    column.name, field.c_type
                ),
            ));
        }
    };
    Ok((capture, decode))
}

fn clamp_size(size: u16) -> u8 {
    u8::try_from(size.clamp(1, 8)).unwrap_or(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> TracepointSpec {
        serde_json::from_value(serde_yaml_value(yaml)).expect("spec parses")
    }

    fn serde_yaml_value(json: &str) -> serde_json::Value {
        serde_json::from_str(json).expect("json")
    }

    fn uprobe(columns: &str) -> TracepointSpec {
        spec(&format!(
            r#"{{"probe":{{"uprobe":{{"binary":"/bin/sh","symbol":"f","abi":"SysV"}}}},
                "target":{{"host":{{}}}},"table":"t","columns":{columns}}}"#
        ))
    }

    #[test]
    fn sysv_arguments_go_to_their_registers() {
        let s = uprobe(
            r#"[{"name":"a","source":"Arg","index":0,"type":"int64"},
                {"name":"s","source":"Arg","index":1,"type":"string","maxLength":32},
                {"name":"buf","source":"Arg","index":2,"type":"bytes","lengthArg":3},
                {"name":"r","source":"Return","type":"int32"},
                {"name":"lat","source":"Latency"}]"#,
        );
        let p = plan(&s, Path::new("/nonexistent"), Path::new("/")).expect("plans");
        assert_eq!(p.entry[0].offset, regs::DI);
        assert_eq!(
            (p.entry[1].offset, p.entry[1].kind, p.entry[1].max_len),
            (regs::SI, CAP_USER_STR, 32)
        );
        assert_eq!(
            (
                p.entry[2].offset,
                p.entry[2].len_offset,
                p.entry[2].size_or_flags
            ),
            (regs::DX, regs::CX, CAP_FLAG_LEN)
        );
        assert_eq!(p.ret[0].offset, regs::AX);
        assert!(matches!(p.hook, Hook::Uprobe { returns: true, .. }));
        let names: Vec<&str> = p.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["time_", "upid", "a", "s", "buf", "r", "lat"]);
    }

    #[test]
    fn go_strings_take_two_registers() {
        let mut s = uprobe(
            r#"[{"name":"id","source":"Arg","index":0,"type":"int64"},
                {"name":"user","source":"Arg","index":1,"type":"string"},
                {"name":"n","source":"Arg","index":2,"type":"int64"},
                {"name":"err","source":"Return","index":1,"type":"pointer"}]"#,
        );
        if let Some(u) = s.probe.uprobe.as_mut() {
            u.abi = Some(Abi::Go);
        }
        let p = plan(&s, Path::new("/nonexistent"), Path::new("/")).expect("plans");
        assert_eq!(p.entry[0].offset, regs::AX);
        assert_eq!(
            (p.entry[1].offset, p.entry[1].len_offset),
            (regs::BX, regs::CX)
        );
        assert_eq!(p.entry[2].offset, regs::DI, "after the string's two words");
        assert_eq!(p.ret[0].offset, regs::BX);
        assert_eq!(
            p.goroutine,
            Some((3, 1)),
            "the goroutine is captured after the columns"
        );
    }

    #[test]
    fn go_calls_pair_by_goroutine() {
        let mut s = uprobe(
            r#"[{"name":"id","source":"Arg","index":0,"type":"int64"},
                {"name":"lat","source":"Latency"}]"#,
        );
        if let Some(u) = s.probe.uprobe.as_mut() {
            u.abi = Some(Abi::Go);
        }
        let p = plan(&s, Path::new("/nonexistent"), Path::new("/")).expect("plans");
        let (e, r) = p.goroutine.expect("paired by goroutine");
        assert_eq!((p.entry[e].offset, p.ret[r].offset), (regs::R14, regs::R14));
    }

    #[test]
    fn stack_arguments_are_refused_with_the_reason() {
        let s = uprobe(r#"[{"name":"g","source":"Arg","index":6,"type":"int64"}]"#);
        let err = plan(&s, Path::new("/nonexistent"), Path::new("/")).expect_err("refused");
        assert_eq!(err.reason, "UnsupportedArgument");
        assert!(err.message.contains("on the stack"), "{}", err.message);
    }

    #[test]
    fn a_missing_binary_is_named() {
        let s = spec(
            r#"{"probe":{"uprobe":{"binary":"/no/such/bin","symbol":"f"}},
                "target":{"host":{}},"table":"t","columns":[{"name":"p","source":"Pid"}]}"#,
        );
        let err = plan(&s, Path::new("/nonexistent"), Path::new("/")).expect_err("refused");
        assert_eq!(err.reason, "BinaryNotFound");
        assert!(err.message.contains("/no/such/bin"), "{}", err.message);
    }

    #[test]
    fn a_path_the_operator_would_refuse_is_refused_here_too() {
        for (binary, says) in [
            ("/usr/bin/../../etc/shadow", "\"..\" segment"),
            ("bin/sh", "absolute path"),
            ("/usr//bin/sh", "\"\" segment"),
        ] {
            let s = spec(&format!(
                r#"{{"probe":{{"uprobe":{{"binary":"{binary}","symbol":"f"}}}},
                    "target":{{"host":{{}}}},"table":"t","columns":[{{"name":"p","source":"Pid"}}]}}"#
            ));
            let err = plan(&s, Path::new("/nonexistent"), Path::new("/")).expect_err(binary);
            assert_eq!(err.reason, "InvalidSpec", "{binary}");
            assert!(err.message.contains(says), "{binary}: {}", err.message);
        }
    }

    #[test]
    fn links_resolve_inside_the_targets_root_and_may_not_climb_out() {
        let root = std::env::temp_dir().join(format!("px-plan-root-{}", std::process::id()));
        let bin = root.join("usr/bin");
        std::fs::create_dir_all(&bin).expect("root");
        std::fs::write(bin.join("app"), b"\x7fELF").expect("app");
        // An absolute link means the container's /usr/bin/app, not this machine's.
        std::os::unix::fs::symlink("/usr/bin/app", bin.join("abs")).expect("link");
        std::os::unix::fs::symlink("../../../../etc/passwd", bin.join("out")).expect("link");
        let inside =
            super::super::targets::resolve_in_root(&root, "/usr/bin/abs").expect("resolves");
        assert_eq!(inside, bin.join("app"));
        let out =
            super::super::targets::resolve_in_root(&root, "/usr/bin/out").expect_err("refused");
        assert!(out.contains("above the target's root"), "{out}");
        let s = spec(
            r#"{"probe":{"uprobe":{"binary":"/usr/bin/out","symbol":"f","abi":"SysV"}},
                "target":{"host":{}},"table":"t","columns":[{"name":"p","source":"Pid"}]}"#,
        );
        let err = plan(&s, Path::new("/nonexistent"), &root).expect_err("refused");
        assert_eq!(err.reason, "BinaryOutsideRoot");
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn executable_becomes_a_comm_filter() {
        assert_eq!(
            &comm_of("/usr/local/bin/a-very-long-server-name")[..16],
            b"a-very-long-ser\0"
        );
    }
}
