//! Any bytes as a PxL script, compiled against Pixie's `http_events` columns: a result or
//! a compiler error, never a panic, a hang or unbounded memory.
//!
//! Run from this directory: `cargo +nightly fuzz run pxl_compiler`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pxl::fuzzing::compile_any(data);
});
