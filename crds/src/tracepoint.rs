//! `Tracepoint`: a probe loaded at run time on the nodes it selects, recording rows into
//! a table of its own.
//!
//! What to probe ([`Probe`]), which processes ([`Target`]), which columns ([`Column`]),
//! the output table and an optional TTL. The status is the roll-up of what each selected
//! node's PEM reports ([`roll_up`]): a phase, node counts and the first few failures.

use std::collections::BTreeMap;
use std::collections::BinaryHeap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::{DEGRADED, DesiredCondition, READY, RECONCILING, STALLED, toggle};

/// How many node failures a Tracepoint's status lists at most.
pub const MAX_FAILURES: usize = 10;

/// A Go-style duration (`90s`, `10m`, `1h30m`), as `metav1.Duration` writes them.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$";

/// What to probe, in which processes, what to record and where.
// Several `printcolumn(type_ = "string", ..)` look like duplicated attributes to clippy.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "px.dev",
    version = "v1alpha1",
    kind = "Tracepoint",
    namespaced,
    status = "TracepointStatus",
    shortname = "tp",
    category = "px",
    derive = "PartialEq",
    doc = "A Tracepoint loads a probe (a user-space function or a kernel tracepoint) on the nodes that run its target processes and records one row per event into its own table. Deleting it unloads the probe everywhere and drops the table.",
    printcolumn(
        name = "Table",
        type_ = "string",
        json_path = ".spec.table",
        description = "Output table"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Nodes running the probe / nodes selected"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, PartiallyRunning, Failed or Terminating"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.probe.uprobe) || self.columns.all(c, c.source in ['Field', 'Pid', 'Tid', 'Comm'])",
        "message": "a kernel tracepoint records Field, Pid, Tid and Comm columns; Arg, Return and Latency need a uprobe",
        "fieldPath": ".columns"
    },
    {
        "rule": "has(self.probe.tracepoint) || self.columns.all(c, c.source != 'Field')",
        "message": "Field columns need a kernel tracepoint probe",
        "fieldPath": ".columns"
    }
]))]
pub struct TracepointSpec {
    /// What to probe: a user-space function (`uprobe`) or a kernel tracepoint.
    pub probe: Probe,
    /// Which processes: pods of this namespace, or (from the Vizier's namespace only)
    /// whole hosts.
    pub target: Target,
    /// The columns of each row, in order. The PEM adds `time_` and `upid`.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "x-kubernetes-validations" = [
            {"rule": "self.all(c, self.exists_one(d, d.name == c.name))", "message": "column names must be unique"}
        ]
    ))]
    pub columns: Vec<Column>,
    /// Name of the output table (queried from PxL as `px.DataFrame(table=...)`). Must not
    /// be a built-in table or one owned by another Tracepoint.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub table: String,
    /// How long the probe stays loaded after it is created, as a duration (`10m`,
    /// `1h30m`). None means until the Tracepoint is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub ttl: Option<String>,
}

impl TracepointSpec {
    /// The TTL as a duration, if set and well formed.
    pub fn ttl_duration(&self) -> Option<std::time::Duration> {
        self.ttl.as_deref().and_then(crate::parse_duration)
    }

    /// When the TTL, counted from `created` (the Tracepoint's creation time), runs out;
    /// `None` without a TTL. Whole seconds, as the API server keeps times.
    pub fn expires_at(&self, created: &Time) -> Option<Time> {
        let ttl = i64::try_from(self.ttl_duration()?.as_secs()).ok()?;
        let at = created.0.as_second().checked_add(ttl)?;
        k8s_openapi::jiff::Timestamp::from_second(at).ok().map(Time)
    }
}

/// What to probe. Exactly one of `uprobe` and `tracepoint`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.uprobe) != has(self.tracepoint)", "message": "exactly one of uprobe or tracepoint must be set"}
]))]
pub struct Probe {
    /// A user-space function, probed at entry and, when the columns need the return
    /// value or the latency, at return. One row per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uprobe: Option<UserFunction>,
    /// A kernel tracepoint as `category/name`, e.g. `syscalls/sys_enter_openat`. One row
    /// per hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = r"^[a-z0-9_]+/[a-z0-9_]+$"))]
    pub tracepoint: Option<String>,
}

/// A function in a user-space binary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserFunction {
    /// Absolute path of the executable or shared library, as the target process sees it
    /// (resolved through the process's own root, so a path inside the container).
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/[^\x00]*[^/]$"))]
    pub binary: String,
    /// The symbol: a C name (`SSL_write`), a Go name (`main.(*Server).handle`,
    /// `net/http.(*conn).serve`) or a mangled C++ name.
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z_.$][A-Za-z0-9_.$/()*\[\],\-]*$")
    )]
    pub symbol: String,
    /// Calling convention used to read arguments and return values: `Auto` (default:
    /// Go's register ABI for Go 1.17+ binaries, System V otherwise), `SysV` or `Go`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<Abi>,
}

/// Calling convention used to read arguments and return values: `Auto` (the default:
/// Go's register ABI for Go 1.17+ binaries, System V otherwise), `SysV` or `Go`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Abi {
    /// Chosen from the binary itself.
    Auto,
    /// System V x86-64 (C, C++, Rust).
    SysV,
    /// Go's register ABI (Go 1.17 and later).
    Go,
}

/// Which processes to probe. Exactly one of `pods` and `host`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.pods) != has(self.host)", "message": "exactly one of pods or host must be set"}
]))]
pub struct Target {
    /// Processes of the pods of the Tracepoint's own namespace that match a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodTarget>,
    /// Every process on the selected nodes. Only honoured for Tracepoints in the
    /// Vizier's namespace (the operator refuses it elsewhere), so that RBAC on
    /// Tracepoints decides who may trace a whole host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostTarget>,
}

/// Pods of the Tracepoint's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTarget {
    /// Label selector over the pods of the Tracepoint's namespace. An empty selector
    /// selects every pod of the namespace.
    pub selector: LabelSelector,
    /// Only this container of each pod. Default: every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,
    /// Only processes of this executable: a name (`comm`, e.g. `nginx`) or an absolute
    /// path. Default: every process of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub executable: Option<String>,
}

/// Whole hosts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostTarget {
    /// Node labels the nodes must have. Default: every node running a PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Only processes of this executable: a name or an absolute path. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub executable: Option<String>,
}

/// One column of the output table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(self.name in ['time_', 'upid'])", "message": "time_ and upid are added by the PEM", "fieldPath": ".name"},
    {"rule": "self.source != 'Arg' || (has(self.index) && has(self.type))", "message": "an Arg column needs index and type"},
    {"rule": "self.source != 'Return' || has(self.type)", "message": "a Return column needs type"},
    {"rule": "self.source != 'Field' || has(self.field)", "message": "a Field column needs field, the tracepoint field's name"},
    {"rule": "!has(self.index) || self.source in ['Arg', 'Return']", "message": "index is only for Arg and Return columns", "fieldPath": ".index"},
    {"rule": "!has(self.field) || self.source == 'Field'", "message": "field is only for Field columns", "fieldPath": ".field"},
    {"rule": "!has(self.type) || self.source in ['Arg', 'Return', 'Field']", "message": "type is only for Arg, Return and Field columns", "fieldPath": ".type"},
    {"rule": "!has(self.maxLength) || (has(self.type) && self.type in ['string', 'bytes'])", "message": "maxLength is only for string and bytes columns", "fieldPath": ".maxLength"},
    {"rule": "!has(self.lengthArg) || (self.source == 'Arg' && has(self.type) && self.type == 'bytes')", "message": "lengthArg is only for Arg columns of type bytes", "fieldPath": ".lengthArg"}
]))]
pub struct Column {
    /// Column name in the output table.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub name: String,
    /// Where the value comes from.
    pub source: ColumnSource,
    /// For `Arg`: the argument's position, 0 for the first (as bpftrace's `arg0`). For
    /// `Return`: which return value (Go functions return several), default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 8))]
    pub index: Option<u8>,
    /// The value's type; required for `Arg` and `Return`, read from the tracepoint's
    /// format for `Field` when omitted.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ColumnType>,
    /// For `Field`: the field's name in the tracepoint's format (e.g. `filename`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub field: Option<String>,
    /// For `string` and `bytes`: most bytes copied per value (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_length: Option<u16>,
    /// For `bytes` arguments: position of the argument that holds the buffer's length
    /// (e.g. 2 for `write(fd, buf, count)`); without it `maxLength` bytes are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 8))]
    pub length_arg: Option<u8>,
}

/// Where a column's value comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ColumnSource {
    /// A function argument, by position (`index`), read at entry.
    Arg,
    /// The function's return value, read at return.
    Return,
    /// Nanoseconds from entry to return, nested calls included.
    Latency,
    /// Process id.
    Pid,
    /// Thread id.
    Tid,
    /// The thread's command name.
    Comm,
    /// A field of the kernel tracepoint (`field`).
    Field,
}

/// The value's type: `int64`, `int32`, `uint64`, `uint32`, `bool`, `pointer`, `string`
/// or `bytes`. Required for `Arg` and `Return`; read from the tracepoint's format for
/// `Field` when omitted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Signed 64-bit integer.
    Int64,
    /// Signed 32-bit integer.
    Int32,
    /// Unsigned 64-bit integer.
    Uint64,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Boolean.
    Bool,
    /// An address, recorded as an unsigned integer.
    Pointer,
    /// A string: a NUL-terminated C string through a pointer, or a Go string.
    String,
    /// A byte buffer through a pointer (or a Go slice), up to `maxLength` bytes.
    Bytes,
}

/// The observed state of a Tracepoint: the roll-up of what the selected nodes report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracepointStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Ready`, `Reconciling`, `Stalled`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where the probe is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TracepointPhase>,
    /// The table the rows go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Node counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,
    /// `running/selected` nodes, for `kubectl get tp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// The first few failed nodes (by node name; at most 10), with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub failures: Vec<NodeFailure>,
    /// When the TTL runs out and the probe is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}

/// Where the Tracepoint is in its life: `Pending`, `Running` (on every selected node),
/// `PartiallyRunning`, `Failed` (on every selected node) or `Terminating`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TracepointPhase {
    /// Not yet running on any node (or no node selected yet).
    Pending,
    /// Running on every selected node.
    Running,
    /// Running on some selected nodes; others are pending or failed.
    PartiallyRunning,
    /// Failed on every selected node.
    Failed,
    /// Being deleted: the probe is unloaded from the nodes.
    Terminating,
}

impl TracepointPhase {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::PartiallyRunning => "PartiallyRunning",
            Self::Failed => "Failed",
            Self::Terminating => "Terminating",
        }
    }
}

/// Node counts of a Tracepoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// Nodes the target selects.
    pub selected: i32,
    /// Nodes where the probe runs.
    pub running: i32,
    /// Nodes where loading it failed.
    pub failed: i32,
    /// Nodes that have not reported yet (or are loading it).
    pub pending: i32,
}

impl NodeCounts {
    /// `running/selected`, the READY column of `kubectl get tp`.
    pub fn summary(&self) -> String {
        format!("{}/{}", self.running, self.selected)
    }
}

/// A node where the probe failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeFailure {
    /// The node's name.
    pub node: String,
    /// CamelCase reason, e.g. `BinaryNotFound`, `SymbolNotFound`, `VerifierRejected`.
    pub reason: String,
    /// What went wrong, in words a user can act on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The state of the probe on one node, as its PEM reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeProbeState {
    /// Not reported yet, or loading.
    Pending,
    /// Loaded and recording.
    Running,
    /// Loading failed.
    Failed {
        /// CamelCase reason.
        reason: String,
        /// Details.
        message: String,
    },
    /// Unloaded from the node.
    Terminated,
}

/// The roll-up of per-node states into a Tracepoint's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollup {
    /// The phase.
    pub phase: TracepointPhase,
    /// Node counts.
    pub nodes: NodeCounts,
    /// At most [`MAX_FAILURES`] failures, those of the first node names in order.
    pub failures: Vec<NodeFailure>,
}

/// Rolls up the states of the selected nodes (one entry per node) into a phase, counts
/// and the first [`MAX_FAILURES`] failures by node name, so the status stays the same
/// size and the same content however many nodes fail and in whatever order they report.
///
/// A node that reports `Terminated` while the Tracepoint is not being deleted counts as
/// pending (the probe is due to be loaded again). `terminating` (the Tracepoint has a
/// deletion timestamp) makes the phase `Terminating` whatever the nodes say.
pub fn roll_up<'a, I>(nodes: I, terminating: bool) -> Rollup
where
    I: IntoIterator<Item = (&'a str, &'a NodeProbeState)>,
{
    let mut counts = NodeCounts::default();
    // A max-heap on the node name keeps the MAX_FAILURES smallest names seen.
    let mut first: BinaryHeap<NodeFailure> = BinaryHeap::new();
    for (node, state) in nodes {
        counts.selected = counts.selected.saturating_add(1);
        match state {
            NodeProbeState::Running => counts.running = counts.running.saturating_add(1),
            NodeProbeState::Pending | NodeProbeState::Terminated => {
                counts.pending = counts.pending.saturating_add(1)
            }
            NodeProbeState::Failed { reason, message } => {
                counts.failed = counts.failed.saturating_add(1);
                let keep = first.len() < MAX_FAILURES
                    || first.peek().is_some_and(|worst| node < worst.node.as_str());
                if keep {
                    first.push(NodeFailure {
                        node: node.to_string(),
                        reason: reason.clone(),
                        message: message.clone(),
                    });
                    if first.len() > MAX_FAILURES {
                        first.pop();
                    }
                }
            }
        }
    }
    let phase = if terminating {
        TracepointPhase::Terminating
    } else if counts.selected > 0 && counts.running == counts.selected {
        TracepointPhase::Running
    } else if counts.running > 0 {
        TracepointPhase::PartiallyRunning
    } else if counts.selected > 0 && counts.failed == counts.selected {
        TracepointPhase::Failed
    } else {
        TracepointPhase::Pending
    };
    Rollup {
        phase,
        nodes: counts,
        failures: first.into_sorted_vec(),
    }
}

impl Rollup {
    /// The `Ready`, `Reconciling`, `Stalled` and `Degraded` conditions for this roll-up.
    ///
    /// Running: Ready. Pending, Terminating, or partly running with nodes still pending:
    /// Reconciling. Failed everywhere: Stalled. Partly running with the rest failed:
    /// Degraded and Stalled (nothing more will happen without a change).
    pub fn conditions(&self) -> Vec<DesiredCondition> {
        let n = &self.nodes;
        let phase = self.phase.as_str();
        let summary = format!(
            "running on {} of {} selected nodes, {} failed, {} pending",
            n.running, n.selected, n.failed, n.pending
        );
        let (ready, reconciling, stalled, degraded) = match self.phase {
            TracepointPhase::Running => (true, false, false, false),
            TracepointPhase::Pending | TracepointPhase::Terminating => (false, true, false, false),
            TracepointPhase::Failed => (false, false, true, false),
            TracepointPhase::PartiallyRunning if n.pending > 0 => {
                (false, true, false, n.failed > 0)
            }
            TracepointPhase::PartiallyRunning => (false, false, true, true),
        };
        let pending_message = if self.phase == TracepointPhase::Pending && n.selected == 0 {
            "no node runs a process the target selects".to_string()
        } else {
            summary.clone()
        };
        let with_failure = match self.failures.first() {
            Some(f) => format!("{summary}; {}: {} {}", f.node, f.reason, f.message)
                .trim_end()
                .to_string(),
            None => summary.clone(),
        };
        vec![
            DesiredCondition::new(READY, ready, phase, summary),
            toggle(RECONCILING, reconciling, phase, &pending_message, "Settled"),
            toggle(STALLED, stalled, phase, &with_failure, "NotStalled"),
            toggle(
                DEGRADED,
                degraded,
                "SomeNodesFailed",
                &with_failure,
                "NotDegraded",
            ),
        ]
    }
}

/// What is wrong with `spec.probe.uprobe.binary`, if anything: it must be an absolute,
/// normalised path (no empty, `.` or `..` segment, no white space), as the PEM resolves it
/// inside the target's root. The operator refuses such a Tracepoint; the PEM refuses the
/// same probe again, because `px trace` and any holder of its token reach it directly.
#[must_use]
pub fn binary_path_problem(binary: &str) -> Option<String> {
    let bad_segment = binary.strip_prefix('/').map(|rest| {
        rest.split('/')
            .find(|s| s.is_empty() || *s == "." || *s == "..")
    });
    match bad_segment {
        None => Some(format!(
            "spec.probe.uprobe.binary {binary:?} must be an absolute path"
        )),
        Some(Some(segment)) => Some(format!(
            "spec.probe.uprobe.binary {binary:?} has a {segment:?} segment; write the path without it"
        )),
        Some(None) if binary.chars().any(char::is_whitespace) => Some(format!(
            "spec.probe.uprobe.binary {binary:?} contains white space"
        )),
        Some(None) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::conditions::ConditionStatus;

    fn failed(reason: &str) -> NodeProbeState {
        NodeProbeState::Failed {
            reason: reason.into(),
            message: format!("{reason} details"),
        }
    }

    fn run(states: &[(&str, NodeProbeState)], terminating: bool) -> Rollup {
        roll_up(states.iter().map(|(n, s)| (*n, s)), terminating)
    }

    fn cond<'a>(conds: &'a [DesiredCondition], t: &str) -> &'a DesiredCondition {
        conds.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn every_node_running_is_running_and_ready() {
        let r = run(
            &[
                ("a", NodeProbeState::Running),
                ("b", NodeProbeState::Running),
            ],
            false,
        );
        assert_eq!(r.phase, TracepointPhase::Running);
        assert_eq!(r.nodes.summary(), "2/2");
        let c = r.conditions();
        assert_eq!(cond(&c, READY).status, ConditionStatus::True);
        for t in [RECONCILING, STALLED, DEGRADED] {
            assert_eq!(cond(&c, t).status, ConditionStatus::False, "{t}");
        }
    }

    #[test]
    fn one_failed_node_makes_it_partially_running_with_that_reason() {
        let r = run(
            &[
                ("a", NodeProbeState::Running),
                ("b", failed("SymbolNotFound")),
                ("c", NodeProbeState::Running),
            ],
            false,
        );
        assert_eq!(r.phase, TracepointPhase::PartiallyRunning);
        assert_eq!(
            r.nodes,
            NodeCounts {
                selected: 3,
                running: 2,
                failed: 1,
                pending: 0
            }
        );
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].node, "b");
        assert_eq!(r.failures[0].reason, "SymbolNotFound");
        let c = r.conditions();
        assert_eq!(cond(&c, DEGRADED).status, ConditionStatus::True);
        assert_eq!(cond(&c, STALLED).status, ConditionStatus::True);
        assert_eq!(cond(&c, READY).status, ConditionStatus::False);
        assert!(cond(&c, DEGRADED).message.contains("b: SymbolNotFound"));
    }

    #[test]
    fn partly_running_with_nodes_pending_is_still_reconciling() {
        let r = run(
            &[
                ("a", NodeProbeState::Running),
                ("b", NodeProbeState::Pending),
            ],
            false,
        );
        assert_eq!(r.phase, TracepointPhase::PartiallyRunning);
        let c = r.conditions();
        assert_eq!(cond(&c, RECONCILING).status, ConditionStatus::True);
        assert_eq!(cond(&c, STALLED).status, ConditionStatus::False);
        assert_eq!(cond(&c, DEGRADED).status, ConditionStatus::False);
    }

    #[test]
    fn failed_everywhere_is_failed_and_stalled() {
        let r = run(
            &[
                ("a", failed("BinaryNotFound")),
                ("b", failed("BinaryNotFound")),
            ],
            false,
        );
        assert_eq!(r.phase, TracepointPhase::Failed);
        assert_eq!(r.nodes.summary(), "0/2");
        let c = r.conditions();
        assert_eq!(cond(&c, STALLED).status, ConditionStatus::True);
        assert_eq!(cond(&c, STALLED).reason, "Failed");
    }

    #[test]
    fn nothing_selected_or_reported_is_pending() {
        let r = run(&[], false);
        assert_eq!(r.phase, TracepointPhase::Pending);
        assert_eq!(r.nodes.summary(), "0/0");
        let c = r.conditions();
        assert_eq!(cond(&c, RECONCILING).status, ConditionStatus::True);
        assert!(cond(&c, RECONCILING).message.contains("no node"));
        let r = run(&[("a", NodeProbeState::Pending), ("b", failed("X"))], false);
        assert_eq!(
            r.phase,
            TracepointPhase::Pending,
            "b may fail, a may still load"
        );
    }

    #[test]
    fn terminating_wins_and_terminated_nodes_count_as_pending() {
        let states = [
            ("a", NodeProbeState::Running),
            ("b", NodeProbeState::Terminated),
        ];
        let r = run(&states, true);
        assert_eq!(r.phase, TracepointPhase::Terminating);
        let r = run(&states, false);
        assert_eq!(r.phase, TracepointPhase::PartiallyRunning);
        assert_eq!(r.nodes.pending, 1);
    }

    #[test]
    fn failures_are_bounded_and_the_same_whatever_the_report_order() {
        let names: Vec<String> = (0..5000).map(|i| format!("node-{i:05}")).collect();
        let states: Vec<(&str, NodeProbeState)> = names
            .iter()
            .map(|n| (n.as_str(), failed("SymbolNotFound")))
            .collect();
        let forward = run(&states, false);
        let mut reversed = states.clone();
        reversed.reverse();
        let backward = run(&reversed, false);
        assert_eq!(forward, backward);
        assert_eq!(forward.nodes.failed, 5000);
        assert_eq!(forward.failures.len(), MAX_FAILURES);
        let listed: Vec<&str> = forward.failures.iter().map(|f| f.node.as_str()).collect();
        assert_eq!(
            listed,
            names[..MAX_FAILURES]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn ttl_parses_as_a_go_duration() {
        let spec: TracepointSpec = serde_json::from_value(serde_json::json!({
            "probe": {"tracepoint": "syscalls/sys_enter_openat"},
            "target": {"host": {}},
            "columns": [{"name": "filename", "source": "Field", "field": "filename"}],
            "table": "opens",
            "ttl": "1h30m",
        }))
        .unwrap();
        assert_eq!(
            spec.ttl_duration(),
            Some(std::time::Duration::from_secs(5400))
        );
        let created = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let expires = spec.expires_at(&created).unwrap();
        assert_eq!(expires.0.as_second(), 1_000 + 5400);
        let forever = TracepointSpec { ttl: None, ..spec };
        assert_eq!(forever.expires_at(&created), None);
    }
}
