//! A kernel tracepoint's record layout, read from tracefs
//! (`/sys/kernel/tracing/events/<category>/<name>/format`).

use std::path::Path;

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    /// The C declaration without the name, e.g. `const char *`, `__data_loc char[]`.
    pub(crate) c_type: String,
    pub(crate) name: String,
    pub(crate) offset: u16,
    pub(crate) size: u16,
    pub(crate) signed: bool,
    /// For `char name[N]`: N.
    pub(crate) array_len: Option<u16>,
}

impl Field {
    /// A pointer field (`const char * filename`).
    pub(crate) fn is_pointer(&self) -> bool {
        self.c_type.ends_with('*')
    }

    /// A `__data_loc` field: a dynamic array stored after the fixed part.
    pub(crate) fn is_data_loc(&self) -> bool {
        self.c_type.starts_with("__data_loc")
    }

    /// A character array or pointer: text.
    pub(crate) fn is_text(&self) -> bool {
        self.c_type.contains("char")
    }
}

/// The fields of a tracepoint after the common ones (`common_type`, `common_pid`, ...).
pub(crate) fn parse(format: &str) -> Vec<Field> {
    format
        .lines()
        .filter_map(|line| parse_field(line.trim()))
        .filter(|f| !f.name.starts_with("common_"))
        .collect()
}

/// Reads a tracepoint's format from tracefs; `None` when it does not exist.
pub(crate) fn read(tracefs: &Path, category: &str, name: &str) -> Option<Vec<Field>> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    std::fs::read_to_string(path).ok().map(|f| parse(&f))
}

/// A tracepoint's event id (`ID:` in its format), which its records carry in
/// `common_type`.
pub(crate) fn event_id(tracefs: &Path, category: &str, name: &str) -> Option<u32> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("ID:"))
        .and_then(|id| id.trim().parse().ok())
}

/// `field:const char * filename; offset:24; size:8; signed:0;` (tab-separated)
fn parse_field(line: &str) -> Option<Field> {
    let mut parts = line.split(';').map(str::trim);
    let decl = parts.next()?.strip_prefix("field:")?;
    let mut number =
        |key: &str| -> Option<u16> { parts.next()?.strip_prefix(key)?.trim().parse().ok() };
    let offset = number("offset:")?;
    let size = number("size:")?;
    let signed = number("signed:")? == 1;
    let (c_type, name, array_len) = split_decl(decl)?;
    Some(Field {
        c_type,
        name,
        offset,
        size,
        signed,
        array_len,
    })
}

/// `const char * filename` -> (`const char *`, `filename`, None);
/// `char comm[16]` -> (`char[]`, `comm`, Some(16)); `__data_loc char[] name` -> as is.
fn split_decl(decl: &str) -> Option<(String, String, Option<u16>)> {
    let decl = decl.trim();
    let at = decl.rfind([' ', '*'])?;
    let (ty, name) = decl.split_at(at + 1);
    let (name, array_len) = match name.split_once('[') {
        Some((n, rest)) => (n, rest.trim_end_matches(']').parse().ok()),
        None => (name, None),
    };
    let ty = if array_len.is_some() {
        format!("{}[]", ty.trim())
    } else {
        ty.trim().to_owned()
    };
    Some((ty, name.trim().to_owned(), array_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAT: &str = "name: sys_enter_openat
ID: 640
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:int __syscall_nr;	offset:8;	size:4;	signed:1;
	field:int dfd;	offset:16;	size:8;	signed:0;
	field:const char * filename;	offset:24;	size:8;	signed:0;
	field:int flags;	offset:32;	size:8;	signed:0;
	field:umode_t mode;	offset:40;	size:8;	signed:0;

print fmt: \"dfd: 0x%08lx\", ((unsigned long)(REC->dfd))
";

    #[test]
    fn openat_fields_and_kinds() {
        let fields = parse(OPENAT);
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["__syscall_nr", "dfd", "filename", "flags", "mode"]);
        let filename = &fields[2];
        assert_eq!((filename.offset, filename.size), (24, 8));
        assert!(filename.is_pointer() && filename.is_text());
        assert_eq!(fields[0].c_type, "int");
        assert!(fields[0].signed);
    }

    #[test]
    fn arrays_and_data_loc() {
        let fields = parse(
            "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
             \tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;\n",
        );
        assert_eq!(fields[0].name, "comm");
        assert_eq!(fields[0].array_len, Some(16));
        assert!(fields[0].is_text() && !fields[0].is_pointer());
        assert_eq!(fields[1].name, "name");
        assert!(fields[1].is_data_loc());
    }
}
