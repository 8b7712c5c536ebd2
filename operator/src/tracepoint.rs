//! The Tracepoint controller: hands each Tracepoint to the PEMs of the nodes it selects
//! (`ProbeService.ApplyProbe`), removes it from the others, and writes the roll-up of
//! what they answer as the status. A finalizer keeps a deleted Tracepoint until every
//! PEM has removed its probe. The decisions are in [`crate::probes`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::Event as Finalize;
use kube::{ResourceExt, core::SelectorExt as _};
use px_api::pem::{ProbeSpec, RemoveProbeRequest, TargetPod};
use px_crds::{Tracepoint, TracepointPhase, TracepointStatus};

use crate::context::{Context, run_on_pem_changes};
use crate::error::Error;
use crate::pem::{self, Pem, fan_out};
use crate::probes::{self, FINALIZER, Invalid, NodeOutcome};

/// How often every Tracepoint is reconciled even when nothing it watches changed: the
/// pods it targets come and go without a watch, and a PEM may have lost its probes.
const RESYNC: Duration = Duration::from_secs(30);
/// How soon a Tracepoint with nodes still pending is reconciled again.
const RETRY_PENDING: Duration = Duration::from_secs(3);

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// One reconcile: under the finalizer, apply (or clean up, when deleted).
pub async fn reconcile(tp: Arc<Tracepoint>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.finalized(tp, FINALIZER, |event| async {
        match event {
            Finalize::Apply(tp) => apply(&tp, &ctx).await,
            Finalize::Cleanup(tp) => cleanup(&tp, &ctx).await,
        }
    })
    .await
}

/// Whether the Tracepoint may run, or why not.
async fn check(
    tp: &Tracepoint,
    ctx: &Context,
    vizier: Result<Option<(String, String)>, Invalid>,
) -> Result<Result<(), Invalid>, Error> {
    let ns = tp.namespace().unwrap_or_default();
    let vizier_here = match vizier {
        Err(why) => return Ok(Err(why)),
        Ok(v) => v.is_some_and(|(n, _)| n == ns),
    };
    let all = ctx
        .scoped::<Tracepoint>()
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Read {
            what: "the Tracepoints",
            source,
        })?
        .items;
    Ok(probes::validate(tp, &all, vizier_here))
}

/// Why the Tracepoint must not run now, if it must not: its TTL ran out (a Normal event:
/// it did what was asked) or it is invalid (a Warning).
async fn refusal(
    tp: &Tracepoint,
    ctx: &Context,
    vizier: Result<Option<(String, String)>, Invalid>,
    now: &Time,
) -> Result<Option<(EventType, Invalid)>, Error> {
    if probes::expired(tp, now) {
        let ttl = tp.spec.ttl.clone().unwrap_or_default();
        let message = format!(
            "spec.ttl ({ttl}) ran out; the probe was removed from every node. Delete the Tracepoint, or raise spec.ttl to load it again"
        );
        let expired = Invalid {
            reason: "Expired",
            message,
        };
        return Ok(Some((EventType::Normal, expired)));
    }
    Ok(check(tp, ctx, vizier)
        .await?
        .err()
        .map(|i| (EventType::Warning, i)))
}

/// Removes the probe from every PEM that may have it, and reports why in the status
/// (Failed, Stalled) and an event.
async fn refuse(
    tp: &Tracepoint,
    ctx: &Context,
    pems: &[Pem],
    type_: EventType,
    why: Invalid,
    now: &Time,
) -> Result<Action, Error> {
    sync(tp, ctx, pems, &BTreeMap::new()).await?;
    let status = probes::stalled_status(tp, why.reason, &why.message, now);
    write(tp, ctx, status, (type_, why.reason, why.message)).await?;
    // A table conflict resolves when the owner goes: look again at the resync.
    Ok(Action::requeue(RESYNC))
}

async fn apply(tp: &Tracepoint, ctx: &Context) -> Result<Action, Error> {
    let now = now();
    let ns = tp.namespace().unwrap_or_default();
    let vizier = probes::vizier_of(&ns, &ctx.viziers(None).await?);
    // Every PEM in scope, so that a refused probe is removed wherever it may be.
    let everywhere = ctx.pems(None).await?;
    if let Some((type_, why)) = refusal(tp, ctx, vizier.clone(), &now).await? {
        return refuse(tp, ctx, &everywhere, type_, why, &now).await;
    }
    // Only its Vizier's PEMs load it; any other that has it is told to remove it.
    let (pems, others): (Vec<Pem>, Vec<Pem>) = everywhere.into_iter().partition(|p| {
        vizier
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .is_some_and(|(n, v)| p.namespace == *n && p.vizier == *v)
    });
    if !others.is_empty() {
        // Only with several Viziers: a probe another Vizier's PEMs loaded before (the
        // Tracepoint moved, a Vizier was added) goes from them. Not remembered per node:
        // node names are shared by the Viziers' PEMs.
        let uid = tp.uid().ok_or(Error::MissingMetadata { field: "uid" })?;
        let others: Vec<&Pem> = others.iter().collect();
        for (node, error) in remove(&uid, &others).await {
            tracing::warn!(%node, %error, "cannot remove the probe from another Vizier's PEM");
        }
    }
    let targets = match selected_nodes(tp, ctx, &pems).await? {
        Ok(t) => t,
        Err(why) => return refuse(tp, ctx, &pems, EventType::Warning, why, &now).await,
    };
    let outcomes = sync(tp, ctx, &pems, &targets).await?;
    let (rollup, conditions) = probes::roll_up(&outcomes);
    let status = probes::status(tp, &rollup, conditions, &now);
    write_with_events(tp, ctx, status).await?;
    // Come back at the expiry if it is sooner than the resync.
    let until_expiry = probes::expires_at(tp)
        .and_then(|at| Duration::try_from(at.0.duration_since(now.0)).ok())
        .map(|d| d + Duration::from_secs(1));
    // Nodes still pending (a PEM starting, a probe loading) are asked again soon.
    let next = if rollup.nodes.pending > 0 {
        RETRY_PENDING
    } else {
        RESYNC
    };
    Ok(Action::requeue(until_expiry.map_or(next, |d| d.min(next))))
}

/// The nodes the target selects, each with the target pods on it (none for a host
/// target); `Err(Invalid)` when the pod selector cannot be used.
async fn selected_nodes(
    tp: &Tracepoint,
    ctx: &Context,
    pems: &[Pem],
) -> Result<Result<BTreeMap<String, Vec<TargetPod>>, Invalid>, Error> {
    if let Some(target) = &tp.spec.target.pods {
        let selector = match Selector::try_from(target.selector.clone()) {
            Ok(s) => s,
            Err(e) => {
                return Ok(Err(Invalid {
                    reason: "InvalidSpec",
                    message: format!("spec.target.pods.selector: {e}"),
                }));
            }
        };
        let ns = tp.namespace().unwrap_or_default();
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default().labels_from(&selector))
            .await
            .map_err(|source| Error::Read {
                what: "the target pods",
                source,
            })?
            .items;
        // The server filtered already; the check keeps a real
        // server's behaviour alike for set-based expressions.
        let pods: Vec<Pod> = pods
            .into_iter()
            .filter(|p| selector.matches(p.labels()))
            .collect();
        return Ok(Ok(probes::pod_target_nodes(&pods)));
    }
    let host = tp.spec.target.host.clone().unwrap_or_default();
    let labels = match &host.node_selector {
        Some(_) => node_labels(ctx).await?,
        None => BTreeMap::new(),
    };
    Ok(Ok(probes::host_target_nodes(
        pems,
        host.node_selector.as_ref(),
        &labels,
    )))
}

async fn node_labels(ctx: &Context) -> Result<BTreeMap<String, BTreeMap<String, String>>, Error> {
    let nodes = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Read {
            what: "the nodes",
            source,
        })?
        .items;
    Ok(nodes
        .into_iter()
        .map(|n| (n.name_any(), n.metadata.labels.unwrap_or_default()))
        .collect())
}

/// Sends the probe to the PEM of every target node, and tells the PEMs of the nodes it
/// was sent to before (all PEMs, after an operator start) but that are no longer
/// targets to remove it. Returns what each target node answered.
async fn sync(
    tp: &Tracepoint,
    ctx: &Context,
    pems: &[Pem],
    targets: &BTreeMap<String, Vec<TargetPod>>,
) -> Result<BTreeMap<String, NodeOutcome>, Error> {
    let uid = tp.uid().ok_or(Error::MissingMetadata { field: "uid" })?;
    let by_node: BTreeMap<&str, &Pem> = pems.iter().map(|p| (p.node.as_str(), p)).collect();
    let specs: Vec<(String, ProbeSpec)> = targets
        .iter()
        .map(|(node, pods)| Ok((node.clone(), probes::probe_spec(tp, pods.clone())?)))
        .collect::<Result<_, Error>>()?;
    let outcomes: BTreeMap<String, NodeOutcome> = fan_out(specs, |(node, spec)| {
        let ip = by_node.get(node.as_str()).and_then(|p| p.reachable());
        async move {
            let Some(ip) = ip else {
                return (node, NodeOutcome::NoPem);
            };
            let outcome = match pem::call(&ip, "ApplyProbe", |mut c| async move {
                c.apply_probe(spec).await
            })
            .await
            {
                Ok(state) => NodeOutcome::Reported(probes::node_state(&state)),
                Err(e) => NodeOutcome::Unreachable(e.to_string()),
            };
            (node, outcome)
        }
    })
    .await
    .into_iter()
    .collect();

    let previous = lock(ctx).get(&uid).cloned();
    let stale: Vec<&Pem> = pems
        .iter()
        .filter(|p| !targets.contains_key(&p.node))
        .filter(|p| previous.as_ref().is_none_or(|prev| prev.contains(&p.node)))
        .collect();
    let not_removed = remove(&uid, &stale).await;
    let mut sent: BTreeSet<String> = targets.keys().cloned().collect();
    sent.extend(not_removed.into_iter().map(|(node, _)| node));
    lock(ctx).insert(uid, sent);
    Ok(outcomes)
}

fn lock(
    ctx: &Context,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, BTreeSet<String>>> {
    ctx.applied
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Tells each PEM to remove probe `uid`; returns the nodes whose PEM did not confirm
/// (a PEM without an IP or not ready has nothing loaded and is skipped).
async fn remove(uid: &str, pems: &[&Pem]) -> Vec<(String, pem::CallError)> {
    // Collected first: a lazy iterator borrowing `pems` across the awaits below is
    // not `Send` for the controller's future.
    let reachable: Vec<(String, pem::Address)> = pems
        .iter()
        .filter_map(|p| Some((p.node.clone(), p.reachable()?)))
        .collect();
    fan_out(reachable, |(node, ip)| async move {
        let req = RemoveProbeRequest {
            id: uid.to_string(),
        };
        let result = pem::call(&ip, "RemoveProbe", |mut c| async move {
            c.remove_probe(req).await
        })
        .await;
        (node, result)
    })
    .await
    .into_iter()
    .filter_map(|(node, r)| r.err().map(|e| (node, e)))
    .collect()
}

/// Before the Tracepoint goes: removes its probe from every PEM; a PEM that does not
/// confirm keeps the finalizer (retried with back-off).
async fn cleanup(tp: &Tracepoint, ctx: &Context) -> Result<Action, Error> {
    let status = probes::terminating_status(tp, &now());
    if tp.status.as_ref() != Some(&status) {
        ctx.write_status(tp, &status).await?;
    }
    let uid = tp.uid().ok_or(Error::MissingMetadata { field: "uid" })?;
    let pems = ctx.pems(None).await?;
    let all: Vec<&Pem> = pems.iter().collect();
    if let Some((node, source)) = remove(&uid, &all)
        .await
        .into_iter()
        .min_by(|a, b| a.0.cmp(&b.0))
    {
        return Err(Error::PemCall { node, source });
    }
    lock(ctx).remove(&uid);
    let removed_from = all.iter().filter(|p| p.reachable().is_some()).count();
    ctx.publish(
        tp,
        EventType::Normal,
        "ProbeRemoved",
        format!(
            "unloaded from {removed_from} PEMs; table {} dropped",
            tp.spec.table
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// Writes `status` if it differs from the current one, with `event`.
async fn write(
    tp: &Tracepoint,
    ctx: &Context,
    status: TracepointStatus,
    event: (EventType, &'static str, String),
) -> Result<(), Error> {
    write_with(tp, ctx, status, vec![event]).await
}

/// Writes a roll-up status and publishes an event per change a user would look for.
async fn write_with_events(
    tp: &Tracepoint,
    ctx: &Context,
    status: TracepointStatus,
) -> Result<(), Error> {
    let news = events(tp.status.as_ref(), &status);
    write_with(tp, ctx, status, news).await
}

/// Publishes `news`, then writes `status`, when it differs from the current one. Events
/// first: an operator killed in between publishes them again on the next reconcile (the
/// recorder counts a repeated event), where the other order would lose them, since the
/// status they describe would already be written.
async fn write_with(
    tp: &Tracepoint,
    ctx: &Context,
    status: TracepointStatus,
    news: Vec<(EventType, &'static str, String)>,
) -> Result<(), Error> {
    if tp.status.as_ref() == Some(&status) {
        return Ok(());
    }
    for (type_, reason, note) in news {
        ctx.publish(tp, type_, reason, note).await;
    }
    ctx.write_status(tp, &status).await
}

/// The events a status change deserves: `ProbeLoaded` when it starts running
/// everywhere, `ProbeFailed` for each node newly listed as failed.
pub fn events(
    old: Option<&TracepointStatus>,
    new: &TracepointStatus,
) -> Vec<(EventType, &'static str, String)> {
    let mut out = Vec::new();
    let was = old.and_then(|s| s.phase);
    if new.phase == Some(TracepointPhase::Running) && was != Some(TracepointPhase::Running) {
        let ready = new.ready.clone().unwrap_or_default();
        out.push((
            EventType::Normal,
            "ProbeLoaded",
            format!("running on {ready} nodes"),
        ));
    }
    for f in &new.failures {
        let known = old.is_some_and(|o| {
            o.failures
                .iter()
                .any(|g| g.node == f.node && g.reason == f.reason)
        });
        if !known {
            out.push((
                EventType::Warning,
                "ProbeFailed",
                format!("node {}: {}: {}", f.node, f.reason, f.message),
            ));
        }
    }
    out
}

/// Runs the Tracepoint controller until `shutdown` resolves: on every Tracepoint change,
/// on every PEM pod change (all Tracepoints), and every [`RESYNC`].
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
    use px_crds::NodeFailure;

    fn status(phase: TracepointPhase, failures: &[(&str, &str)]) -> TracepointStatus {
        TracepointStatus {
            phase: Some(phase),
            ready: Some("2/2".into()),
            failures: failures
                .iter()
                .map(|(node, reason)| NodeFailure {
                    node: (*node).into(),
                    reason: (*reason).into(),
                    message: "m".into(),
                })
                .collect(),
            ..TracepointStatus::default()
        }
    }

    #[test]
    fn events_say_what_changed_once() {
        let running = status(TracepointPhase::Running, &[]);
        let e = events(None, &running);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].1, e[0].2.as_str()),
            ("ProbeLoaded", "running on 2/2 nodes")
        );
        assert!(events(Some(&running), &running).is_empty());
        let partial = status(
            TracepointPhase::PartiallyRunning,
            &[("b", "SymbolNotFound")],
        );
        let e = events(Some(&running), &partial);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].1, e[0].2.as_str()),
            ("ProbeFailed", "node b: SymbolNotFound: m")
        );
        assert!(events(Some(&partial), &partial).is_empty());
    }
}
