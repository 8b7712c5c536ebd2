//! Feeds arbitrary bytes, split into feeds and gaps for both directions and both roles,
//! through the HTTP/1.x parser; a panic or a broken memory bound is a finding.
//!
//! Run from this directory: `cargo +nightly fuzz run http_parser`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vizier_pem::fuzzing::http_parse(data);
});
