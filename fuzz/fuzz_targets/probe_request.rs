//! Any bytes as a request of the PEM's probe service (`ApplyProbe`'s ProbeSpec with its
//! Tracepoint JSON, or `SetRetention`), decoded and checked as the service does before
//! anything reaches the kernel.
//!
//! Run from this directory: `cargo +nightly fuzz run probe_request`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vizier_pem::fuzzing::probe_request(data);
});
