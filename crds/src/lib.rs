//! The `px.dev/v1alpha1` custom resources, `Vizier`, `Tracepoint` and `DataRetention`,
//! and the CRD manifests generated from them (committed as `crds/*.yaml`, written by
//! `cargo run -p px-crds --bin crdgen`).
//!
//! Besides the types: the pure helpers the operator builds statuses with, namely the
//! condition setter ([`set_condition`]), the Tracepoint roll-up of per-node states
//! ([`roll_up`]) and the Vizier's list of ignored Pixie Cloud fields
//! ([`VizierSpec::ignored_fields`]).

mod conditions;
mod manifests;
mod quantity;
mod retention;
mod tracepoint;
mod vizier;

pub use conditions::{
    ConditionStatus, DEGRADED, DesiredCondition, IGNORED_FIELDS, READY, RECONCILING, STALLED,
    find_condition, is_true, remove_condition, set_condition,
};
pub use manifests::{Manifest, ManifestError, manifests};
pub use quantity::quantity_bytes;
pub use retention::{
    DataRetention, DataRetentionSpec, DataRetentionStatus, TableRetention, TableRetentionStatus,
};
pub use tracepoint::{
    Abi, Column, ColumnSource, ColumnType, HostTarget, MAX_FAILURES, NodeCounts, NodeFailure,
    NodeProbeState, PodTarget, Probe, Rollup, Target, Tracepoint, TracepointPhase, TracepointSpec,
    TracepointStatus, UserFunction, binary_path_problem, roll_up,
};
pub use vizier::{
    CertManager, ClockConverter, DataAccess, DataCollectorParams, IssuerRef,
    LeadershipElectionParams, PemCounts, PodPolicy, PodSecurityContext, ReconciliationPhase,
    Vizier, VizierPhase, VizierSpec, VizierStatus,
};

/// Parses a Go-style duration (`90s`, `10m`, `1h30m`) as the CRDs' duration fields
/// accept it; `None` when malformed or negative.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let d: kube::core::Duration = s.parse().ok()?;
    (!d.is_negative()).then(|| d.into())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_as_go_writes_them() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("-5m"), None, "negative");
        assert_eq!(parse_duration("forever"), None);
        assert_eq!(parse_duration("10"), None, "no unit");
    }
}
