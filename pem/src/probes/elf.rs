//! What a probe needs to know from a binary: the Go version that built it, and where a
//! function's return instructions are (Go functions get a uprobe on each instead of a
//! uretprobe, which Go's movable stacks do not survive).
//!
//! Binaries are read through `object`'s [`ReadCache`]: only the headers, the symbol table
//! and the sections asked for are read, never the whole file (Go binaries run to
//! hundreds of MB). Callers run this on blocking threads, never on the async workers.

use std::path::Path;

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::read::ReadCache;
use object::{Object, ObjectSection, ObjectSymbol};

use super::state::ProbeFailure;

/// The Go version a binary was built with (`go1.19.8`), from its `.go.buildinfo`.
pub(crate) fn go_version(binary: &Path) -> Option<String> {
    let data = ReadCache::new(std::fs::File::open(binary).ok()?);
    let file = object::File::parse(&data).ok()?;
    let section = file.section_by_name(".go.buildinfo")?;
    let bytes = section.data().ok()?;
    // Go 1.18+: a 32-byte header (flags bit 2: inline strings), then the version as a
    // length-prefixed string.
    if bytes.len() > 33 && bytes[15] & 2 != 0 {
        let len = usize::from(bytes[32]);
        return bytes
            .get(33..33 + len)
            .map(|v| String::from_utf8_lossy(v).into_owned());
    }
    let text = String::from_utf8_lossy(bytes);
    let at = text.find("go1.")?;
    Some(
        text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect(),
    )
}

/// File offsets of every return instruction of `symbol` in `binary`.
pub(crate) fn return_offsets(binary: &Path, symbol: &str) -> Result<Vec<u64>, ProbeFailure> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ProbeFailure::new(
            "BinaryNotFound",
            format!("cannot read {}: {e}", binary.display()),
        )
    };
    let data = ReadCache::new(std::fs::File::open(binary).map_err(|e| unreadable(&e))?);
    let file = object::File::parse(&data).map_err(|e| unreadable(&e))?;
    let function = file
        .symbols()
        .find(|s| s.name() == Ok(symbol) && s.size() > 0)
        .ok_or_else(|| {
            ProbeFailure::new(
                "SymbolNotFound",
                format!(
                    "symbol {symbol} not found in {} (or it has no size); check the name with \
                     `go tool nm`, and that the binary is not stripped",
                    binary.display()
                ),
            )
        })?;
    let section = function
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
        .ok_or_else(|| {
            ProbeFailure::new("SymbolNotFound", format!("{symbol} is not in a section"))
        })?;
    let (file_start, _) = section.file_range().ok_or_else(|| {
        ProbeFailure::new(
            "SymbolNotFound",
            format!("{symbol}'s section has no file bytes"),
        )
    })?;
    let start = function.address() - section.address();
    let code = section
        .data()
        .ok()
        .and_then(|d| {
            d.get(usize::try_from(start).ok()?..usize::try_from(start + function.size()).ok()?)
        })
        .ok_or_else(|| {
            ProbeFailure::new(
                "SymbolNotFound",
                format!("{symbol}'s bytes are outside its section"),
            )
        })?;
    let mut decoder = Decoder::with_ip(64, code, function.address(), DecoderOptions::NONE);
    let mut offsets = Vec::new();
    for instruction in &mut decoder {
        if instruction.mnemonic() == Mnemonic::Ret {
            offsets.push(instruction.ip() - section.address() + file_start);
        }
    }
    if offsets.is_empty() {
        return Err(ProbeFailure::new(
            "UnsupportedArgument",
            format!(
                "{symbol} has no return instruction (it never returns, or ends in a tail call)"
            ),
        ));
    }
    Ok(offsets)
}
