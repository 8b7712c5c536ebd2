//! The DataRetention controller: sends a DataRetention's budgets to every PEM of the
//! Vizier in its namespace (`ProbeService.SetRetention`, no restart), and writes what
//! the PEMs report back, aggregated over the nodes, as its status. Deleting it sends an
//! empty set of overrides, so the defaults return. The pure parts (request, aggregation,
//! status) are tested here without a cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::Event as Finalize;
use px_api::pem::{RetentionReport, SetRetentionRequest, TableBudget};
use px_crds::{
    DEGRADED, DataRetention, DataRetentionSpec, DataRetentionStatus, DesiredCondition, READY,
    RECONCILING, STALLED, TableRetentionStatus, quantity_bytes, set_condition,
};

use crate::context::{Context, run_on_pem_changes};
use crate::error::Error;
use crate::pem::{self, fan_out};

/// The finalizer that keeps a DataRetention until every PEM is back to its defaults.
pub const FINALIZER: &str = "px.dev/retention";
/// How often the status is refreshed from the PEMs (and the budgets sent again, so a
/// restarted PEM gets them back).
const REFRESH: Duration = Duration::from_secs(30);
/// How soon the budgets are sent again when a PEM did not answer.
const RETRY_SILENT: Duration = Duration::from_secs(3);
/// Highest share of the memory limit one table may take (the PEM refuses more).
const MAX_TABLE_PERCENT: u8 = 90;
/// Most tables listed in the status (the schema's bound).
const MAX_TABLES: usize = 64;

/// The PEMs' request for `spec`, or why it cannot be sent (a message naming the field).
pub fn request(spec: &DataRetentionSpec) -> Result<SetRetentionRequest, String> {
    if spec.memory_percent_total() > 100 {
        return Err(format!(
            "spec.tables: the memoryPercent shares add up to {}%, more than 100%",
            spec.memory_percent_total()
        ));
    }
    let tables = spec
        .tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let max_bytes = match &t.max_bytes {
                Some(q) => quantity_bytes(&q.0).ok_or_else(|| {
                    format!("spec.tables[{i}].maxBytes {:?} is not a byte quantity", q.0)
                })?,
                None => 0,
            };
            let percent = t.memory_percent.unwrap_or(0);
            if percent > MAX_TABLE_PERCENT {
                return Err(format!(
                    "spec.tables[{i}].memoryPercent {percent} is above {MAX_TABLE_PERCENT}: the PEM keeps the rest for its other tables"
                ));
            }
            let max_age_ns = match &t.max_age {
                Some(text) => t
                    .max_age_duration()
                    .and_then(|d| i64::try_from(d.as_nanos()).ok())
                    .ok_or_else(|| format!("spec.tables[{i}].maxAge {text:?} is not a duration"))?,
                None => 0,
            };
            Ok(TableBudget {
                table: t.table.clone(),
                max_bytes,
                memory_percent: u32::from(percent),
                max_age_ns,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(SetRetentionRequest { tables })
}

/// What the PEMs of a namespace are told: the budgets of every DataRetention in it
/// (`all`, those not being deleted), merged by table. A table set by several goes to the
/// oldest (creation time, then name); a DataRetention whose spec is invalid adds
/// nothing. Also, for `own`, each of its tables that another one holds, with the holder,
/// for its status.
pub fn merged(own: &DataRetention, all: &[DataRetention]) -> (SetRetentionRequest, Vec<String>) {
    let mut ordered: Vec<&DataRetention> = all.iter().collect();
    ordered.sort_by(|a, b| {
        let key = |d: &DataRetention| (d.metadata.creation_timestamp.clone(), d.name_any());
        key(a).cmp(&key(b))
    });
    let mut tables: Vec<TableBudget> = Vec::new();
    let mut holder: BTreeMap<String, String> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for dr in ordered {
        let Ok(req) = request(&dr.spec) else { continue };
        let is_own = dr.uid() == own.uid();
        for budget in req.tables {
            let share: u32 = tables.iter().map(|t| t.memory_percent).sum();
            if let Some(other) = holder.get(&budget.table) {
                if is_own {
                    conflicts.push(format!(
                        "table {} is set by DataRetention {other}, which is older; this one's budget for it is not applied",
                        budget.table
                    ));
                }
            } else if share + budget.memory_percent > 100 {
                if is_own {
                    conflicts.push(format!(
                        "table {}: its memoryPercent {} with those of the older DataRetentions of this namespace would pass 100%; not applied",
                        budget.table, budget.memory_percent
                    ));
                }
            } else {
                holder.insert(budget.table.clone(), dr.name_any());
                tables.push(budget);
            }
        }
    }
    (SetRetentionRequest { tables }, conflicts)
}

/// A Go-style duration with whole seconds (`5h12m0s`, `3m20s`, `0s`), as
/// `metav1.Duration` prints it.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Per table over every PEM's report: the budget (the largest a PEM reports: they
/// differ only while a change reaches them), the bytes held (summed), the age of the
/// oldest row held anywhere at `now_ns`, and how many PEMs reported it. Sorted by
/// table, at most [`MAX_TABLES`].
pub fn aggregate(reports: &[RetentionReport], now_ns: i64) -> Vec<TableRetentionStatus> {
    let mut by_table: BTreeMap<&str, (TableRetentionStatus, i64)> = BTreeMap::new();
    for report in reports {
        for t in &report.tables {
            let entry = by_table.entry(t.table.as_str()).or_insert_with(|| {
                (
                    TableRetentionStatus {
                        table: t.table.clone(),
                        ..TableRetentionStatus::default()
                    },
                    i64::MAX,
                )
            });
            let budget = i64::try_from(t.budget_bytes).unwrap_or(i64::MAX);
            entry.0.budget_bytes = entry.0.budget_bytes.max(budget);
            let held = i64::try_from(t.bytes_held).unwrap_or(i64::MAX);
            entry.0.bytes_held = entry.0.bytes_held.saturating_add(held);
            entry.0.nodes = entry.0.nodes.saturating_add(1);
            if t.oldest_time_ns > 0 {
                entry.1 = entry.1.min(t.oldest_time_ns);
            }
        }
    }
    by_table
        .into_values()
        .take(MAX_TABLES)
        .map(|(mut s, oldest)| {
            if oldest != i64::MAX {
                let age = u64::try_from(now_ns.saturating_sub(oldest)).unwrap_or(0);
                s.oldest_record_age = Some(go_duration(Duration::from_nanos(age)));
            }
            s
        })
        .collect()
}

/// What the PEMs answered this round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Round {
    /// The reports of the PEMs that applied the budgets.
    pub reports: Vec<RetentionReport>,
    /// PEMs that did not answer: node and error, by node.
    pub silent: Vec<(String, String)>,
}

/// The status from one round: the tables, and `Ready` when every PEM applied the
/// budgets (`Reconciling`, naming the first silent node, otherwise).
pub fn status(dr: &DataRetention, round: &Round, now: &Time) -> DataRetentionStatus {
    let now_ns = i64::try_from(now.0.as_nanosecond()).unwrap_or(i64::MAX);
    let tables = aggregate(&round.reports, now_ns);
    let answered = round.reports.len();
    let total = answered + round.silent.len();
    let summary = format!("{answered} of {total} PEMs applied the budgets");
    let ready = total > 0 && round.silent.is_empty();
    let waiting = match round.silent.first() {
        Some((node, e)) => format!("{summary}; {node}: {e}"),
        None if total == 0 => "no PEM is ready in this namespace yet".to_string(),
        None => summary.clone(),
    };
    let conditions = vec![
        DesiredCondition::new(
            READY,
            ready,
            if ready { "Applied" } else { "Waiting" },
            summary,
        ),
        if ready {
            DesiredCondition::new(RECONCILING, false, "Settled", "")
        } else {
            DesiredCondition::new(RECONCILING, true, "Waiting", waiting)
        },
        DesiredCondition::new(STALLED, false, "NotStalled", ""),
        DesiredCondition::new(DEGRADED, false, "NotDegraded", ""),
    ];
    let mut s = dr.status.clone().unwrap_or_default();
    s.table_count = i32::try_from(tables.len()).ok();
    s.tables = tables;
    with_conditions(dr, s, conditions, now)
}

/// The status of a DataRetention that cannot be applied: Stalled with `reason`.
pub fn stalled_status(
    dr: &DataRetention,
    reason: &str,
    message: &str,
    now: &Time,
) -> DataRetentionStatus {
    let conditions = vec![
        DesiredCondition::new(READY, false, reason, message),
        DesiredCondition::new(RECONCILING, false, "Settled", ""),
        DesiredCondition::new(STALLED, true, reason, message),
        DesiredCondition::new(DEGRADED, false, "NotDegraded", ""),
    ];
    with_conditions(dr, dr.status.clone().unwrap_or_default(), conditions, now)
}

fn with_conditions(
    dr: &DataRetention,
    mut s: DataRetentionStatus,
    conditions: Vec<DesiredCondition>,
    now: &Time,
) -> DataRetentionStatus {
    s.observed_generation = dr.metadata.generation;
    for c in conditions {
        set_condition(&mut s.conditions, c, dr.metadata.generation, now);
    }
    s
}

/// The DataRetentions of namespace `ns` that are not being deleted.
async fn in_namespace(ctx: &Context, ns: &str) -> Result<Vec<DataRetention>, Error> {
    let api: kube::Api<DataRetention> = kube::Api::namespaced(ctx.client.clone(), ns);
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|source| Error::Read {
            what: "the DataRetentions",
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .collect())
}

/// `s` with `Degraded` naming the tables another DataRetention holds, when there are.
fn with_conflicts(
    dr: &DataRetention,
    s: DataRetentionStatus,
    conflicts: &[String],
    now: &Time,
) -> DataRetentionStatus {
    if conflicts.is_empty() {
        return s;
    }
    let condition = DesiredCondition::new(DEGRADED, true, "TableConflict", conflicts.join("; "));
    with_conditions(dr, s, vec![condition], now)
}

/// Sends `req` to every ready PEM of the Vizier in `ns`.
async fn send(ctx: &Context, ns: &str, req: &SetRetentionRequest) -> Result<Round, Error> {
    let pems = ctx.pems(Some(ns)).await?;
    let mut round = Round::default();
    // Collected first: a lazy iterator borrowing `pems` across the awaits below is
    // not `Send` for the controller's future.
    let targets: Vec<(String, Option<pem::Address>)> = pems
        .iter()
        .map(|p| (p.node.clone(), p.reachable()))
        .collect();
    let results = fan_out(targets, |(node, ip)| {
        let req = req.clone();
        async move {
            let Some(ip) = ip else {
                return (node, Err("no ready PEM".to_string()));
            };
            let r = pem::call(&ip, "SetRetention", |mut c| async move {
                c.set_retention(req).await
            })
            .await;
            (node, r.map_err(|e| e.to_string()))
        }
    })
    .await;
    for (node, r) in results {
        match r {
            Ok(report) => round.reports.push(report),
            Err(e) => round.silent.push((node, e)),
        }
    }
    round.silent.sort();
    Ok(round)
}

/// The event a status change deserves: the reason it stalled (when that is new), or
/// `Applied` when it becomes ready.
pub fn event(
    old: Option<&DataRetentionStatus>,
    new: &DataRetentionStatus,
) -> Option<(EventType, String, String)> {
    let stall = |s: &DataRetentionStatus| {
        px_crds::find_condition(&s.conditions, STALLED)
            .filter(|c| c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let was_ready = old.is_some_and(|s| px_crds::is_true(&s.conditions, READY));
    match stall(new) {
        Some(now) if old.and_then(stall).as_ref() != Some(&now) => {
            Some((EventType::Warning, now.0, now.1))
        }
        Some(_) => None,
        None if !was_ready && px_crds::is_true(&new.conditions, READY) => Some((
            EventType::Normal,
            "Applied".to_string(),
            format!(
                "every PEM applied the budgets; {} tables reported",
                new.tables.len()
            ),
        )),
        None => None,
    }
}

/// Publishes the event the change deserves, then writes `status`, if it differs from
/// the current one (events first, so a kill in between repeats them rather than loses
/// them).
async fn write(
    ctx: &Context,
    dr: &DataRetention,
    status: DataRetentionStatus,
) -> Result<(), Error> {
    if dr.status.as_ref() == Some(&status) {
        return Ok(());
    }
    if let Some((type_, reason, note)) = event(dr.status.as_ref(), &status) {
        ctx.publish(dr, type_, &reason, note).await;
    }
    ctx.write_status(dr, &status).await
}

async fn apply(dr: &DataRetention, ctx: &Context) -> Result<Action, Error> {
    let ns = dr.namespace().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    if !ctx.has_vizier(&ns).await? {
        let message = format!(
            "no Vizier in namespace {ns:?}: a DataRetention applies to the PEMs of the Vizier of its own namespace"
        );
        write(ctx, dr, stalled_status(dr, "NoVizier", &message, &now)).await?;
        return Ok(Action::requeue(REFRESH));
    }
    if let Err(message) = request(&dr.spec) {
        write(ctx, dr, stalled_status(dr, "InvalidSpec", &message, &now)).await?;
        return Ok(Action::await_change());
    }
    let others = in_namespace(ctx, &ns).await?;
    let (req, conflicts) = merged(dr, &others);
    let round = send(ctx, &ns, &req).await?;
    write(
        ctx,
        dr,
        with_conflicts(dr, status(dr, &round, &now), &conflicts, &now),
    )
    .await?;
    // A PEM that did not answer (starting, restarting) is asked again soon.
    Ok(Action::requeue(if round.silent.is_empty() {
        REFRESH
    } else {
        RETRY_SILENT
    }))
}

/// Before the DataRetention goes: every PEM back to its default budgets.
async fn cleanup(dr: &DataRetention, ctx: &Context) -> Result<Action, Error> {
    let ns = dr.namespace().unwrap_or_default();
    // The others' budgets stay: only this one's tables return to their defaults.
    let others: Vec<DataRetention> = in_namespace(ctx, &ns)
        .await?
        .into_iter()
        .filter(|d| d.uid() != dr.uid())
        .collect();
    let (req, _) = merged(dr, &others);
    let round = send(ctx, &ns, &req).await?;
    // A PEM that is not ready has restarted or is starting: it comes back with its
    // defaults. One that is ready and does not answer keeps the finalizer.
    if let Some((node, e)) = round.silent.iter().find(|(_, e)| e != "no ready PEM") {
        tracing::warn!(%node, error = %e, "cannot reset the retention");
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    ctx.publish(
        dr,
        EventType::Normal,
        "Removed",
        format!(
            "{} PEMs are back to their default budgets",
            round.reports.len()
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// One reconcile: under the finalizer, apply (or reset the PEMs, when deleted).
pub async fn reconcile(dr: Arc<DataRetention>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.finalized(dr, FINALIZER, |event| async {
        match event {
            Finalize::Apply(dr) => apply(&dr, &ctx).await,
            Finalize::Cleanup(dr) => cleanup(&dr, &ctx).await,
        }
    })
    .await
}

/// Runs the DataRetention controller until `shutdown` resolves: on every change, on
/// every PEM pod change, and every [`REFRESH`].
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    run_on_pem_changes(ctx, reconcile, shutdown).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use px_api::pem::TableHeld;

    fn spec(tables: serde_json::Value) -> DataRetentionSpec {
        serde_json::from_value(serde_json::json!({ "tables": tables })).unwrap()
    }

    #[test]
    fn the_request_carries_bytes_shares_and_ages() {
        let req = request(&spec(serde_json::json!([
            {"table": "http_events", "memoryPercent": 50, "maxAge": "24h"},
            {"table": "conn_stats", "maxBytes": "128Mi"},
            {"table": "file_opens", "maxBytes": 67108864, "maxAge": "90m"},
        ])))
        .unwrap();
        let t = &req.tables;
        assert_eq!(
            (t[0].table.as_str(), t[0].memory_percent, t[0].max_bytes),
            ("http_events", 50, 0)
        );
        assert_eq!(t[0].max_age_ns, 86_400 * 1_000_000_000);
        assert_eq!((t[1].max_bytes, t[1].max_age_ns), (128 << 20, 0));
        assert_eq!(
            (t[2].max_bytes, t[2].max_age_ns),
            (64 << 20, 5_400 * 1_000_000_000)
        );
    }

    #[test]
    fn shares_above_what_a_pem_can_give_are_refused_with_the_field() {
        let over = request(&spec(serde_json::json!([
            {"table": "a", "memoryPercent": 60}, {"table": "b", "memoryPercent": 50},
        ])))
        .unwrap_err();
        assert!(over.contains("add up to 110%"), "{over}");
        let one = request(&spec(
            serde_json::json!([{"table": "a", "memoryPercent": 95}]),
        ))
        .unwrap_err();
        assert!(one.starts_with("spec.tables[0].memoryPercent 95"), "{one}");
    }

    fn dr(name: &str, created: &str, tables: serde_json::Value) -> DataRetention {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "px.dev/v1alpha1", "kind": "DataRetention",
            "metadata": {"name": name, "namespace": "pl", "uid": name, "creationTimestamp": created},
            "spec": {"tables": tables},
        }))
        .unwrap()
    }

    #[test]
    fn two_data_retentions_merge_by_table_and_the_older_keeps_a_shared_one() {
        let old = dr(
            "old",
            "2026-01-01T00:00:00Z",
            serde_json::json!([{"table": "http_events", "maxAge": "1h"}, {"table": "conn_stats", "memoryPercent": 60}]),
        );
        let new = dr(
            "new",
            "2026-02-01T00:00:00Z",
            serde_json::json!([{"table": "http_events", "maxAge": "2h"}, {"table": "file_opens", "maxBytes": "16Mi"}, {"table": "adds", "memoryPercent": 50}]),
        );
        let all = [new.clone(), old.clone()];
        let (req, conflicts) = merged(&new, &all);
        let tables: Vec<(&str, i64)> = req
            .tables
            .iter()
            .map(|t| (t.table.as_str(), t.max_age_ns))
            .collect();
        assert_eq!(
            tables,
            [
                ("http_events", 3_600_000_000_000),
                ("conn_stats", 0),
                ("file_opens", 0)
            ]
        );
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        assert!(
            conflicts[0].contains("table http_events is set by DataRetention old"),
            "{conflicts:?}"
        );
        assert!(conflicts[1].contains("would pass 100%"), "{conflicts:?}");
        let (_, none) = merged(&old, &all);
        assert!(none.is_empty(), "the older one holds its tables: {none:?}");
        // Deleting the older: the newer's http_events budget takes over, conn_stats goes.
        let (after, _) = merged(&old, std::slice::from_ref(&new));
        let tables: Vec<&str> = after.tables.iter().map(|t| t.table.as_str()).collect();
        assert_eq!(tables, ["http_events", "file_opens", "adds"]);
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(0)), "0s");
        assert_eq!(go_duration(Duration::from_secs(200)), "3m20s");
        assert_eq!(
            go_duration(Duration::from_secs(5 * 3600 + 12 * 60)),
            "5h12m0s"
        );
    }

    fn held(table: &str, budget: u64, bytes: u64, oldest: i64) -> TableHeld {
        TableHeld {
            table: table.into(),
            budget_bytes: budget,
            bytes_held: bytes,
            oldest_time_ns: oldest,
            ..TableHeld::default()
        }
    }

    #[test]
    fn reports_add_up_over_the_nodes() {
        let s = 1_000_000_000;
        let a = RetentionReport {
            tables: vec![
                held("http_events", 100, 40, 1_000 * s),
                held("conn_stats", 10, 1, 0),
            ],
            memory_limit_bytes: 1000,
        };
        let b = RetentionReport {
            tables: vec![held("http_events", 100, 60, 400 * s)],
            memory_limit_bytes: 1000,
        };
        let tables = aggregate(&[a, b], 1_600 * s);
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].table, "conn_stats");
        assert_eq!(tables[0].oldest_record_age, None, "empty everywhere");
        let http = &tables[1];
        assert_eq!(
            (http.budget_bytes, http.bytes_held, http.nodes),
            (100, 100, 2)
        );
        assert_eq!(http.oldest_record_age.as_deref(), Some("20m0s"));
    }

    #[test]
    fn events_say_when_it_stalls_or_becomes_ready() {
        let dr = DataRetention::new("r", DataRetentionSpec::default());
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap());
        let stalled = stalled_status(&dr, "NoVizier", "no Vizier in \"shop\"", &now);
        let e = event(None, &stalled).unwrap();
        assert_eq!(
            (e.1.as_str(), e.2.as_str()),
            ("NoVizier", "no Vizier in \"shop\"")
        );
        assert_eq!(event(Some(&stalled), &stalled), None);
        let round = Round {
            reports: vec![RetentionReport::default()],
            silent: vec![],
        };
        let ready = status(&dr, &round, &now);
        assert_eq!(event(Some(&stalled), &ready).unwrap().1, "Applied");
        assert_eq!(event(Some(&ready), &ready), None);
    }

    #[test]
    fn ready_only_when_every_pem_applied() {
        let dr: DataRetention = serde_json::from_value(serde_json::json!({
            "apiVersion": "px.dev/v1alpha1", "kind": "DataRetention",
            "metadata": {"name": "r", "namespace": "pl", "generation": 2},
            "spec": {"tables": []},
        }))
        .unwrap();
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap());
        let report = RetentionReport {
            tables: vec![held("http_events", 100, 50, 1)],
            memory_limit_bytes: 1000,
        };
        let round = Round {
            reports: vec![report.clone()],
            silent: vec![("node-b".into(), "connection refused".into())],
        };
        let s = status(&dr, &round, &now);
        assert!(!px_crds::is_true(&s.conditions, READY));
        let rec = px_crds::find_condition(&s.conditions, RECONCILING).unwrap();
        assert_eq!(
            rec.message,
            "1 of 2 PEMs applied the budgets; node-b: connection refused"
        );
        assert_eq!((s.table_count, s.observed_generation), (Some(1), Some(2)));
        let all = Round {
            reports: vec![report.clone(), report],
            silent: vec![],
        };
        let s = status(&dr, &all, &now);
        assert!(px_crds::is_true(&s.conditions, READY));
        assert_eq!(s.tables[0].nodes, 2);
    }
}
