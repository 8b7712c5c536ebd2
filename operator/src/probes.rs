//! What the Tracepoint controller decides, without a client or a clock: whether a
//! Tracepoint may run (shapes the schema cannot check, its table, its target), which
//! nodes it selects, what each selected node's PEM is told, and the status that rolls
//! up what the PEMs report.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use px_api::pem::{ProbePhase, ProbeSpec, ProbeState, TargetPod};
use px_crds::{
    DEGRADED, DesiredCondition, NodeCounts, NodeProbeState, READY, RECONCILING, Rollup, STALLED,
    Tracepoint, TracepointPhase, TracepointStatus, set_condition,
};

use crate::error::Error;
use crate::pem::Pem;

/// The finalizer that keeps a Tracepoint until its probe is unloaded from every PEM.
pub const FINALIZER: &str = "px.dev/probes";

/// Tables the PEMs fill themselves (Pixie's names, `reference/pixie.md` §1): a
/// Tracepoint may not write into them.
pub const BUILT_IN_TABLES: &[&str] = &[
    "http_events",
    "conn_stats",
    "process_stats",
    "network_stats",
    "stack_traces.beta",
    "dns_events",
    "mysql_events",
    "pgsql_events",
    "redis_events",
    "jvm_stats",
    "cql_events",
    "kafka_events.beta",
    "nats_events.beta",
    "mux_events",
    "amqp_events",
    "mongodb_events",
    "mqtt_events",
    "http2_messages.beta",
    "stirling_error",
    "probe_status",
    "proc_exit_events",
];

/// Why a Tracepoint cannot run as written: a CamelCase reason (the condition's and
/// the event's) and a message that names the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// `InvalidSpec`, `TableConflict` or `HostTargetRefused` (or `Expired`, for a TTL
    /// that ran out).
    pub reason: &'static str,
    /// What to change.
    pub message: String,
}

impl Invalid {
    fn spec(message: String) -> Self {
        Self {
            reason: "InvalidSpec",
            message,
        }
    }
}

/// `spec.probe.uprobe.binary`: see [`px_crds::binary_path_problem`] (the PEM checks the
/// same again, for callers that reach it directly).
fn check_binary(binary: &str) -> Result<(), Invalid> {
    px_crds::binary_path_problem(binary).map_or(Ok(()), |m| Err(Invalid::spec(m)))
}

/// `spec.probe.uprobe.symbol`: dots separate non-empty parts; parentheses, when present,
/// hold a Go receiver `(T)` or `(*T)` and are balanced.
fn check_symbol(symbol: &str) -> Result<(), Invalid> {
    let bad = |why: &str| {
        Err(Invalid::spec(format!(
            "spec.probe.uprobe.symbol {symbol:?} {why}"
        )))
    };
    if symbol.starts_with('.') || symbol.ends_with('.') || symbol.contains("..") {
        return bad("has an empty part between dots");
    }
    let mut rest = symbol;
    while let Some(open) = rest.find('(') {
        let Some(close) = rest[open..].find(')') else {
            return bad("has an unclosed '('");
        };
        let receiver = &rest[open + 1..open + close];
        let name = receiver.strip_prefix('*').unwrap_or(receiver);
        let ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return bad("has a receiver that is not (Type) or (*Type)");
        }
        rest = &rest[open + close + 1..];
    }
    if rest.contains(')') {
        return bad("has an unmatched ')'");
    }
    Ok(())
}

/// The earliest Tracepoint (by creation time, then namespace/name) among `all` that
/// writes `table`: the one that keeps it.
pub fn table_owner<'a>(table: &str, all: &'a [Tracepoint]) -> Option<&'a Tracepoint> {
    all.iter().filter(|t| t.spec.table == table).min_by(|a, b| {
        let key = |t: &'a Tracepoint| {
            (
                t.metadata.creation_timestamp.as_ref().map(|c| c.0),
                t.namespace(),
                t.name_any(),
            )
        };
        key(a).cmp(&key(b))
    })
}

/// Whether `tp` may run: shapes, its table (not built in, not another's) and its
/// target (a host target only where a Vizier runs). `all` is every Tracepoint the
/// operator sees, `tp` included; `vizier_in_namespace` whether `tp`'s namespace has a
/// Vizier.
pub fn validate(
    tp: &Tracepoint,
    all: &[Tracepoint],
    vizier_in_namespace: bool,
) -> Result<(), Invalid> {
    if let Some(f) = &tp.spec.probe.uprobe {
        check_binary(&f.binary)?;
        check_symbol(&f.symbol)?;
    }
    let table = &tp.spec.table;
    if BUILT_IN_TABLES.contains(&table.as_str()) {
        return Err(Invalid::spec(format!(
            "spec.table {table:?} is a built-in table of the PEMs; choose another name"
        )));
    }
    if let Some(owner) = table_owner(table, all).filter(|o| o.uid() != tp.uid()) {
        return Err(Invalid {
            reason: "TableConflict",
            message: format!(
                "spec.table {table:?} is already written by Tracepoint {}/{}; choose another name",
                owner.namespace().unwrap_or_default(),
                owner.name_any()
            ),
        });
    }
    if tp.spec.target.host.is_some() && !vizier_in_namespace {
        return Err(Invalid {
            reason: "HostTargetRefused",
            message: format!(
                "spec.target.host traces every process of a node and is only accepted in the namespace of a Vizier, not in {:?}: RBAC on Tracepoints there decides who may trace hosts; use spec.target.pods here",
                tp.namespace().unwrap_or_default()
            ),
        });
    }
    Ok(())
}

/// The Vizier whose PEMs run a Tracepoint of namespace `ns`, among the Viziers in the
/// operator's scope (namespace, name): the one in `ns`, else the only one there is;
/// `None` when there is none (every node then waits for a PEM). Refused, naming them,
/// when that is not one Vizier: another Vizier's PEMs never load it.
pub fn vizier_of(
    ns: &str,
    viziers: &[(String, String)],
) -> Result<Option<(String, String)>, Invalid> {
    let here: Vec<&(String, String)> = viziers.iter().filter(|(n, _)| n == ns).collect();
    let candidates: Vec<&(String, String)> = if here.is_empty() {
        viziers.iter().collect()
    } else {
        here
    };
    match candidates.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        several => Err(Invalid {
            reason: "AmbiguousVizier",
            message: format!(
                "Viziers {} could each run this Tracepoint; create it in the namespace of the Vizier whose PEMs should load it",
                several
                    .iter()
                    .map(|(n, v)| format!("{n}/{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// For a pod target: the matching pods (already selected by label) grouped by the node
/// they run on. Pods not scheduled yet, finished, or being deleted are left out.
pub fn pod_target_nodes(pods: &[Pod]) -> BTreeMap<String, Vec<TargetPod>> {
    let mut nodes: BTreeMap<String, Vec<TargetPod>> = BTreeMap::new();
    for pod in pods {
        let live = pod.metadata.deletion_timestamp.is_none()
            && !matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if live {
            nodes.entry(node).or_default().push(TargetPod {
                uid: pod.uid().unwrap_or_default(),
                namespace: pod.namespace().unwrap_or_default(),
                name: pod.name_any(),
            });
        }
    }
    for pods in nodes.values_mut() {
        pods.sort_by(|a, b| a.name.cmp(&b.name));
    }
    nodes
}

/// For a host target: every node with a ready PEM whose labels (`node_labels`, by node
/// name) match `node_selector`; no selector selects every such node.
pub fn host_target_nodes(
    pems: &[Pem],
    node_selector: Option<&BTreeMap<String, String>>,
    node_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> BTreeMap<String, Vec<TargetPod>> {
    pems.iter()
        .filter(|p| p.ready)
        .filter(|p| {
            node_selector.is_none_or(|sel| {
                let labels = node_labels.get(&p.node);
                sel.iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
        })
        .map(|p| (p.node.clone(), Vec::new()))
        .collect()
}

/// What the PEM of one selected node is told: the Tracepoint's identity, generation,
/// spec and TTL, and (pod target) the node's matching pods.
pub fn probe_spec(tp: &Tracepoint, pods: Vec<TargetPod>) -> Result<ProbeSpec, Error> {
    let spec_json = serde_json::to_string(&tp.spec).map_err(|source| Error::Encode {
        what: "a Tracepoint spec",
        source,
    })?;
    let expires_at_unix_ns = expires_at(tp)
        .map(|t| t.0.as_nanosecond())
        .and_then(|ns| i64::try_from(ns).ok())
        .unwrap_or(0);
    Ok(ProbeSpec {
        id: tp.uid().ok_or(Error::MissingMetadata { field: "uid" })?,
        name: format!("{}/{}", tp.namespace().unwrap_or_default(), tp.name_any()),
        generation: tp.metadata.generation.unwrap_or(0),
        spec_json,
        expires_at_unix_ns,
        pods,
        pod_target: tp.spec.target.pods.is_some(),
    })
}

/// When the TTL runs out, counted from the creation time.
pub fn expires_at(tp: &Tracepoint) -> Option<Time> {
    tp.spec.expires_at(tp.metadata.creation_timestamp.as_ref()?)
}

/// Whether the TTL has run out at `now`.
pub fn expired(tp: &Tracepoint, now: &Time) -> bool {
    expires_at(tp).is_some_and(|at| at.0 <= now.0)
}

/// A PEM's report as the roll-up's per-node state.
pub fn node_state(report: &ProbeState) -> NodeProbeState {
    match ProbePhase::try_from(report.phase) {
        Ok(ProbePhase::Running) => NodeProbeState::Running,
        Ok(ProbePhase::Failed) => NodeProbeState::Failed {
            reason: if report.reason.is_empty() {
                "Failed".to_string()
            } else {
                report.reason.clone()
            },
            message: report.message.clone(),
        },
        Ok(ProbePhase::Terminated) => NodeProbeState::Terminated,
        Ok(ProbePhase::Pending | ProbePhase::Unspecified) | Err(_) => NodeProbeState::Pending,
    }
}

/// What happened on one selected node in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeOutcome {
    /// The PEM answered.
    Reported(NodeProbeState),
    /// No ready PEM with an IP on the node.
    NoPem,
    /// The PEM did not answer (the error, in words).
    Unreachable(String),
}

/// How many nodes without an answer the Reconciling message names.
const NAMED_UNREACHABLE: usize = 3;

/// The roll-up of the selected nodes' outcomes: nodes without an answer count as
/// pending, and the first few are named in the `Reconciling` condition.
pub fn roll_up(outcomes: &BTreeMap<String, NodeOutcome>) -> (Rollup, Vec<DesiredCondition>) {
    let states: Vec<(&str, NodeProbeState)> = outcomes
        .iter()
        .map(|(node, o)| {
            let state = match o {
                NodeOutcome::Reported(s) => s.clone(),
                NodeOutcome::NoPem | NodeOutcome::Unreachable(_) => NodeProbeState::Pending,
            };
            (node.as_str(), state)
        })
        .collect();
    let rollup = px_crds::roll_up(states.iter().map(|(n, s)| (*n, s)), false);
    let mut conditions = rollup.conditions();
    let silent: Vec<String> = outcomes
        .iter()
        .filter_map(|(node, o)| match o {
            NodeOutcome::NoPem => Some(format!("{node}: no ready PEM")),
            NodeOutcome::Unreachable(e) => Some(format!("{node}: PEM unreachable ({e})")),
            NodeOutcome::Reported(_) => None,
        })
        .collect();
    if !silent.is_empty() {
        let mut named = silent[..silent.len().min(NAMED_UNREACHABLE)].join("; ");
        if silent.len() > NAMED_UNREACHABLE {
            named.push_str(&format!("; and {} more", silent.len() - NAMED_UNREACHABLE));
        }
        for c in conditions.iter_mut().filter(|c| c.type_ == RECONCILING) {
            c.message = format!("{}; {named}", c.message);
        }
    }
    (rollup, conditions)
}

fn with_conditions(
    tp: &Tracepoint,
    mut status: TracepointStatus,
    conditions: Vec<DesiredCondition>,
    now: &Time,
) -> TracepointStatus {
    status.observed_generation = tp.metadata.generation;
    status.table = Some(tp.spec.table.clone());
    status.expires_at = expires_at(tp);
    for c in conditions {
        set_condition(&mut status.conditions, c, tp.metadata.generation, now);
    }
    status
}

/// The status from a roll-up.
pub fn status(
    tp: &Tracepoint,
    rollup: &Rollup,
    conditions: Vec<DesiredCondition>,
    now: &Time,
) -> TracepointStatus {
    let mut s = tp.status.clone().unwrap_or_default();
    s.phase = Some(rollup.phase);
    s.nodes = Some(rollup.nodes);
    s.ready = Some(rollup.nodes.summary());
    s.failures.clone_from(&rollup.failures);
    with_conditions(tp, s, conditions, now)
}

/// A status that runs nowhere and will not without a change from the user (an invalid
/// spec, or an expired TTL): phase Failed, Stalled with `reason` and `message`.
pub fn stalled_status(
    tp: &Tracepoint,
    reason: &str,
    message: &str,
    now: &Time,
) -> TracepointStatus {
    let mut s = tp.status.clone().unwrap_or_default();
    s.phase = Some(TracepointPhase::Failed);
    let nodes = NodeCounts::default();
    s.ready = Some(nodes.summary());
    s.nodes = Some(nodes);
    s.failures.clear();
    let conditions = vec![
        DesiredCondition::new(READY, false, reason, message),
        DesiredCondition::new(RECONCILING, false, "Settled", ""),
        DesiredCondition::new(STALLED, true, reason, message),
        DesiredCondition::new(DEGRADED, false, "NotDegraded", ""),
    ];
    with_conditions(tp, s, conditions, now)
}

/// The status while the probe is being unloaded before deletion.
pub fn terminating_status(tp: &Tracepoint, now: &Time) -> TracepointStatus {
    let rollup = px_crds::roll_up(std::iter::empty(), true);
    let message = "unloading the probe from every PEM";
    let mut s = status(tp, &rollup, Vec::new(), now);
    s.failures.clear();
    let conditions = vec![
        DesiredCondition::new(READY, false, "Terminating", message),
        DesiredCondition::new(RECONCILING, true, "Terminating", message),
        DesiredCondition::new(STALLED, false, "NotStalled", ""),
        DesiredCondition::new(DEGRADED, false, "NotDegraded", ""),
    ];
    with_conditions(tp, s, conditions, now)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use px_crds::{ConditionStatus, find_condition};

    fn tp(ns: &str, name: &str, created: i64, spec: serde_json::Value) -> Tracepoint {
        let mut tp: Tracepoint = serde_json::from_value(serde_json::json!({
            "apiVersion": "px.dev/v1alpha1",
            "kind": "Tracepoint",
            "metadata": {
                "name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"),
                "generation": 3,
            },
            "spec": spec,
        }))
        .unwrap();
        tp.metadata.creation_timestamp = Some(at(created));
        tp
    }

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn uprobe(binary: &str, symbol: &str, table: &str) -> serde_json::Value {
        serde_json::json!({
            "probe": {"uprobe": {"binary": binary, "symbol": symbol}},
            "target": {"pods": {"selector": {"matchLabels": {"app": "web"}}}},
            "columns": [{"name": "pid", "source": "Pid"}],
            "table": table,
            "ttl": "10m",
        })
    }

    fn host(table: &str) -> serde_json::Value {
        serde_json::json!({
            "probe": {"tracepoint": "syscalls/sys_enter_openat"},
            "target": {"host": {"nodeSelector": {"disk": "ssd"}}},
            "columns": [{"name": "pid", "source": "Pid"}],
            "table": table,
        })
    }

    fn message(r: Result<(), Invalid>) -> (String, String) {
        let e = r.unwrap_err();
        (e.reason.to_string(), e.message)
    }

    #[test]
    fn binary_and_symbol_shapes_are_checked_beyond_the_schema() {
        let cases = [
            ("/app/server", "main.(*Server).Handle", None),
            ("/usr/lib/libssl.so.3", "SSL_write", None),
            ("/app//server", "main.f", Some("\"\" segment")),
            ("/app/../server", "main.f", Some("\"..\" segment")),
            ("/app/server", "main..f", Some("empty part")),
            ("/app/server", "main.(*Server.Handle", Some("unclosed")),
            ("/app/server", "main.(**S).f", Some("receiver")),
            ("/app/server", "main.f)", Some("unmatched")),
        ];
        for (binary, symbol, want) in cases {
            let t = tp("shop", "t", 1, uprobe(binary, symbol, "calls"));
            let got = validate(&t, std::slice::from_ref(&t), false);
            match want {
                None => assert_eq!(got, Ok(()), "{binary} {symbol}"),
                Some(w) => {
                    let (reason, msg) = message(got);
                    assert_eq!(reason, "InvalidSpec");
                    assert!(
                        msg.contains(w) && msg.contains("spec.probe.uprobe"),
                        "{msg}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_built_in_table_is_refused() {
        let t = tp("shop", "t", 1, uprobe("/app/s", "f", "http_events"));
        let (reason, msg) = message(validate(&t, std::slice::from_ref(&t), false));
        assert_eq!(reason, "InvalidSpec");
        assert!(
            msg.contains("spec.table \"http_events\" is a built-in table"),
            "{msg}"
        );
    }

    #[test]
    fn the_first_tracepoint_keeps_its_table_and_the_other_is_told_who_owns_it() {
        let first = tp("shop", "b-first", 10, uprobe("/app/s", "f", "calls"));
        let second = tp("web", "a-second", 20, uprobe("/app/s", "f", "calls"));
        let all = [second.clone(), first.clone()];
        assert_eq!(validate(&first, &all, false), Ok(()));
        let (reason, msg) = message(validate(&second, &all, false));
        assert_eq!(reason, "TableConflict");
        assert!(msg.contains("Tracepoint shop/b-first"), "{msg}");
        // Same creation second: namespace/name decides, the same way every time.
        let twin = tp("shop", "a-twin", 10, uprobe("/app/s", "f", "calls"));
        let all = [first.clone(), twin.clone()];
        assert_eq!(validate(&twin, &all, false), Ok(()));
        assert_eq!(message(validate(&first, &all, false)).0, "TableConflict");
    }

    #[test]
    fn a_host_target_needs_a_vizier_in_the_namespace() {
        let t = tp("shop", "opens", 1, host("opens"));
        let (reason, msg) = message(validate(&t, std::slice::from_ref(&t), false));
        assert_eq!(reason, "HostTargetRefused");
        assert!(
            msg.contains("spec.target.host") && msg.contains("\"shop\""),
            "{msg}"
        );
        assert_eq!(validate(&t, std::slice::from_ref(&t), true), Ok(()));
    }

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn pod_targets_are_grouped_by_node() {
        let nodes = pod_target_nodes(&[
            pod("web-2", Some("node-a"), "Running"),
            pod("web-1", Some("node-a"), "Running"),
            pod("web-3", Some("node-b"), "Pending"),
            pod("web-4", None, "Pending"),
            pod("job", Some("node-c"), "Succeeded"),
        ]);
        assert_eq!(nodes.keys().collect::<Vec<_>>(), ["node-a", "node-b"]);
        let a: Vec<(&str, &str)> = nodes["node-a"]
            .iter()
            .map(|p| (p.name.as_str(), p.uid.as_str()))
            .collect();
        assert_eq!(a, [("web-1", "uid-web-1"), ("web-2", "uid-web-2")]);
        assert_eq!(nodes["node-b"][0].namespace, "shop");
    }

    #[test]
    fn a_tracepoint_runs_on_the_vizier_of_its_namespace_or_the_only_one() {
        let vz = |n: &str, v: &str| (n.to_string(), v.to_string());
        let one = [vz("pl", "pixie")];
        assert_eq!(vizier_of("shop", &one).unwrap(), Some(vz("pl", "pixie")));
        assert_eq!(vizier_of("shop", &[]).unwrap(), None);
        let two = [vz("pl", "pixie"), vz("team-b", "other")];
        assert_eq!(
            vizier_of("team-b", &two).unwrap(),
            Some(vz("team-b", "other"))
        );
        let refused = vizier_of("shop", &two).unwrap_err();
        assert_eq!(refused.reason, "AmbiguousVizier");
        assert!(
            refused.message.contains("pl/pixie, team-b/other"),
            "{}",
            refused.message
        );
        let same_ns = [vz("pl", "a"), vz("pl", "b")];
        assert_eq!(
            vizier_of("pl", &same_ns).unwrap_err().reason,
            "AmbiguousVizier"
        );
    }

    #[test]
    fn host_targets_are_the_ready_pems_on_matching_nodes() {
        let pem = |node: &str, ready| Pem {
            node: node.into(),
            ip: Some("10.0.0.1".into()),
            ready,
            namespace: "pl".into(),
            vizier: "pixie".into(),
            token: None,
            tls: None,
        };
        let pems = [pem("a", true), pem("b", true), pem("c", false)];
        let labels = BTreeMap::from([
            (
                "a".to_string(),
                BTreeMap::from([("disk".to_string(), "ssd".to_string())]),
            ),
            ("b".to_string(), BTreeMap::new()),
        ]);
        let sel = BTreeMap::from([("disk".to_string(), "ssd".to_string())]);
        let picked = host_target_nodes(&pems, Some(&sel), &labels);
        assert_eq!(picked.keys().collect::<Vec<_>>(), ["a"]);
        let all = host_target_nodes(&pems, None, &labels);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn the_probe_spec_carries_identity_generation_spec_ttl_and_pods() {
        let t = tp("shop", "calls", 1_000, uprobe("/app/s", "main.f", "calls"));
        let pods = vec![TargetPod {
            uid: "u1".into(),
            namespace: "shop".into(),
            name: "web-1".into(),
        }];
        let p = probe_spec(&t, pods.clone()).unwrap();
        assert_eq!(p.id, "uid-shop-calls");
        assert_eq!(p.name, "shop/calls");
        assert_eq!(p.generation, 3);
        assert!(p.pod_target);
        assert_eq!(p.pods, pods);
        assert_eq!(p.expires_at_unix_ns, (1_000 + 600) * 1_000_000_000);
        let back: px_crds::TracepointSpec = serde_json::from_str(&p.spec_json).unwrap();
        assert_eq!(back, t.spec);
        let h = probe_spec(&tp("pl", "opens", 1, host("opens")), Vec::new()).unwrap();
        assert!(!h.pod_target);
        assert_eq!(h.expires_at_unix_ns, 0, "no TTL");
    }

    #[test]
    fn the_ttl_expires_from_the_creation_time() {
        let t = tp("shop", "calls", 1_000, uprobe("/app/s", "main.f", "calls"));
        assert!(!expired(&t, &at(1_599)));
        assert!(expired(&t, &at(1_600)));
        assert!(!expired(
            &tp("pl", "o", 1, host("o")),
            &at(i64::from(i32::MAX))
        ));
    }

    #[test]
    fn reports_become_node_states() {
        let report = |phase: ProbePhase, reason: &str| ProbeState {
            phase: phase.into(),
            reason: reason.into(),
            message: "m".into(),
            ..ProbeState::default()
        };
        assert_eq!(
            node_state(&report(ProbePhase::Running, "")),
            NodeProbeState::Running
        );
        assert_eq!(
            node_state(&report(ProbePhase::Pending, "")),
            NodeProbeState::Pending
        );
        assert_eq!(
            node_state(&report(ProbePhase::Failed, "SymbolNotFound")),
            NodeProbeState::Failed {
                reason: "SymbolNotFound".into(),
                message: "m".into()
            }
        );
        assert_eq!(
            node_state(&report(ProbePhase::Terminated, "Expired")),
            NodeProbeState::Terminated
        );
    }

    #[test]
    fn silent_nodes_are_pending_and_named() {
        let outcomes = BTreeMap::from([
            (
                "a".to_string(),
                NodeOutcome::Reported(NodeProbeState::Running),
            ),
            (
                "b".to_string(),
                NodeOutcome::Unreachable("connection refused".into()),
            ),
            ("c".to_string(), NodeOutcome::NoPem),
        ]);
        let (rollup, conditions) = roll_up(&outcomes);
        assert_eq!(rollup.phase, TracepointPhase::PartiallyRunning);
        assert_eq!(rollup.nodes.pending, 2);
        let rec = conditions.iter().find(|c| c.type_ == RECONCILING).unwrap();
        assert_eq!(rec.status, ConditionStatus::True);
        assert!(
            rec.message
                .ends_with("b: PEM unreachable (connection refused); c: no ready PEM"),
            "{}",
            rec.message
        );
    }

    #[test]
    fn the_same_reports_give_the_same_status_and_a_stalled_one_says_why() {
        let t = tp("shop", "calls", 1_000, uprobe("/app/s", "main.f", "calls"));
        let outcomes = BTreeMap::from([
            (
                "a".to_string(),
                NodeOutcome::Reported(NodeProbeState::Running),
            ),
            (
                "b".to_string(),
                NodeOutcome::Reported(NodeProbeState::Failed {
                    reason: "SymbolNotFound".into(),
                    message: "no main.f".into(),
                }),
            ),
        ]);
        let (rollup, conditions) = roll_up(&outcomes);
        let first = status(&t, &rollup, conditions.clone(), &at(2_000));
        assert_eq!(first.phase, Some(TracepointPhase::PartiallyRunning));
        assert_eq!(first.ready.as_deref(), Some("1/2"));
        assert_eq!(first.failures[0].node, "b");
        assert_eq!(first.table.as_deref(), Some("calls"));
        assert_eq!(first.expires_at, Some(at(1_600)));
        assert_eq!(first.observed_generation, Some(3));
        let mut again = t.clone();
        again.status = Some(first.clone());
        assert_eq!(status(&again, &rollup, conditions, &at(3_000)), first);

        let s = stalled_status(&t, "TableConflict", "spec.table taken", &at(2_000));
        assert_eq!(s.phase, Some(TracepointPhase::Failed));
        let stalled = find_condition(&s.conditions, STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "TableConflict")
        );
        assert_eq!(stalled.message, "spec.table taken");
    }
}
