//! The probe service's requests as `cargo fuzz` (`fuzz/fuzz_targets/probe_request.rs`)
//! and the smoke test below feed them: bytes off the wire decoded as the service decodes
//! them, then checked and planned as `ApplyProbe` and `SetRetention` do, without touching
//! the kernel. Any input must end in a result or a clear refusal, never a panic.

use std::path::Path;

use prost::Message as _;
use px_api::pem::{ProbeSpec, SetRetentionRequest};
use px_tablestore::BudgetConfig;

/// One fuzz input: the first byte chooses the request, the rest is its protobuf encoding.
pub(crate) fn probe_request(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        let Ok(request) = ProbeSpec::decode(body) else {
            return;
        };
        let Ok(spec) = serde_json::from_str::<px_crds::TracepointSpec>(&request.spec_json) else {
            return;
        };
        // Nothing exists under these: the plan stops at the binary or the tracepoint.
        let _ = super::plan::plan(
            &spec,
            Path::new("/nonexistent/tracefs"),
            Path::new("/nonexistent/root"),
        );
    } else {
        let Ok(request) = SetRetentionRequest::decode(body) else {
            return;
        };
        let _ =
            super::service::budgets_for(&BudgetConfig::for_memory_limit(1 << 30), &request.tables);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use px_api::pem::TableBudget;

    /// Valid requests, then every prefix and every one-byte change of them: what a fuzzer
    /// tries first, run on every build.
    #[test]
    fn truncated_and_altered_requests_never_panic() {
        let spec = ProbeSpec {
            id: "uid".into(),
            name: "ns/tp".into(),
            generation: 3,
            spec_json: r#"{"probe":{"uprobe":{"binary":"/usr/bin/app","symbol":"main.f"}},
                "target":{"host":{}},"table":"t","columns":[{"name":"a","source":"Arg","index":0,"type":"string"},
                {"name":"l","source":"Latency"}]}"#
                .into(),
            pod_target: false,
            ..ProbeSpec::default()
        };
        let retention = SetRetentionRequest {
            tables: vec![TableBudget {
                table: "http_events".into(),
                max_bytes: u64::MAX,
                memory_percent: 95,
                max_age_ns: -1,
            }],
        };
        for (kind, body) in [
            (0u8, spec.encode_to_vec()),
            (1u8, retention.encode_to_vec()),
        ] {
            let mut input = vec![kind];
            input.extend_from_slice(&body);
            for end in 0..=input.len() {
                probe_request(&input[..end]);
            }
            for i in 1..input.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut altered = input.clone();
                    altered[i] ^= flip;
                    probe_request(&altered);
                }
            }
        }
    }
}
