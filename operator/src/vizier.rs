//! The Vizier controller: applies what [`crate::desired`] derives from a Vizier with
//! server-side apply, and writes the status [`crate::status`] derives from what runs.
//! Kelvin's API-key Secret is the exception: created once, never applied
//! (`api_key.rs`); the certificates are renewed on time (`tls.rs`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use px_crds::{Vizier, VizierPhase};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{Context, drain, error_policy, observed};
use crate::desired::{self, FIELD_MANAGER, Names, VIZIER_LABEL};
use crate::error::Error;
use crate::status;

async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: kind_of::<K>(),
        name,
        source,
    })
}

fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    // `K::kind` gives a Cow; the few kinds applied here are known.
    match K::kind(&()).as_ref() {
        "ServiceAccount" => "ServiceAccount",
        "Role" => "Role",
        "RoleBinding" => "RoleBinding",
        "DaemonSet" => "DaemonSet",
        "Deployment" => "Deployment",
        "Service" => "Service",
        _ => "object",
    }
}

/// One reconcile of `vz`: applies its children, then writes its status if it changed.
pub async fn reconcile(vz: Arc<Vizier>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = vz
        .namespace()
        .ok_or(Error::MissingMetadata { field: "namespace" })?;
    let name = vz.name_any();
    let client = &ctx.client;
    // From the shared cache of PEM pods: no list per reconcile.
    let pem_pods: Vec<Pod> = ctx
        .pem_pods(Some(&ns))
        .await?
        .into_iter()
        .filter(|p| p.labels().get("app.kubernetes.io/instance") == Some(&name))
        .collect();

    let children = match desired::children(&vz) {
        Ok(c) => c,
        Err(e) if e.is_spec_error() => {
            return invalid_spec(&vz, &ctx, &e).await;
        }
        Err(e) => return Err(e),
    };

    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let before = daemonsets
        .get_opt(&Names::of(&name).pem)
        .await
        .map_err(|source| Error::Read {
            what: "the PEM DaemonSet",
            source,
        })?;
    for sa in &children.service_accounts {
        apply::<ServiceAccount>(client, &ns, sa).await?;
    }
    for role in &children.roles {
        apply::<Role>(client, &ns, role).await?;
    }
    for binding in &children.role_bindings {
        apply::<RoleBinding>(client, &ns, binding).await?;
    }
    // Before the PEMs and Kelvin: their pods cannot start without the Secrets their
    // key and token come from.
    crate::api_key::ensure(&vz, &ns, &ctx).await?;
    let renewal = crate::tls::ensure(&vz, &ns, &ctx).await?;
    let ds = apply::<DaemonSet>(client, &ns, &children.pem).await?;
    let kelvin = apply::<Deployment>(client, &ns, &children.kelvin).await?;
    apply::<Service>(client, &ns, &children.kelvin_service).await?;

    let checksum = |d: &DaemonSet| {
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(desired::PEM_CHECKSUM_ANNOTATION).cloned())
    };
    match &before {
        None => {
            ctx.publish(
                &*vz,
                EventType::Normal,
                "Deploying",
                format!(
                    "created the PEM DaemonSet and Kelvin for version {}",
                    desired::version(&vz)
                ),
            )
            .await;
        }
        Some(old) if checksum(old) != checksum(&ds) => {
            ctx.publish(
                &*vz,
                EventType::Normal,
                "RollingPEMs",
                "the PEMs' configuration changed; rolling them".to_string(),
            )
            .await;
        }
        Some(_) => {}
    }

    let health = status::health(Some(&ds), Some(&kelvin), &pem_pods);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let new_status = status::status(&vz, Some(&ds), &health, &now);
    if vz.status.as_ref() != Some(&new_status) {
        let old_phase = vz.status.as_ref().and_then(|s| s.vizier_phase);
        ctx.write_status(&*vz, &new_status).await?;
        if old_phase != Some(health.phase) {
            let type_ = match health.phase {
                VizierPhase::Healthy | VizierPhase::Updating => EventType::Normal,
                _ => EventType::Warning,
            };
            ctx.publish(
                &*vz,
                type_,
                &format!("{:?}", health.phase),
                health.message.clone(),
            )
            .await;
        }
    }
    let next = match health.phase {
        // Watches on the DaemonSet, Deployment and PEM pods bring changes; the requeue
        // is a safety net.
        VizierPhase::Healthy => Duration::from_secs(300),
        _ => Duration::from_secs(10),
    };
    // Back when a certificate is due for renewal (a second late, so it is due).
    Ok(Action::requeue(
        next.min(renewal.saturating_add(Duration::from_secs(1))),
    ))
}

/// A spec the operator cannot deploy: say so in the status and an event, and wait for a
/// change (retrying would fail the same way).
async fn invalid_spec(vz: &Vizier, ctx: &Context, error: &Error) -> Result<Action, Error> {
    let message = error.to_string();
    let mut status = vz.status.clone().unwrap_or_default();
    status.observed_generation = vz.metadata.generation;
    status.vizier_phase = Some(VizierPhase::Unhealthy);
    status.vizier_reason = Some("InvalidSpec".to_string());
    status.message = Some(message.clone());
    status.reconciliation_phase = Some(px_crds::ReconciliationPhase::Failed);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut conditions = VizierPhase::Unhealthy.conditions("InvalidSpec", &message);
    conditions.push(vz.spec.ignored_fields_condition());
    for c in conditions {
        px_crds::set_condition(&mut status.conditions, c, vz.metadata.generation, &now);
    }
    if vz.status.as_ref() != Some(&status) {
        ctx.write_status(vz, &status).await?;
        ctx.publish(vz, EventType::Warning, "InvalidSpec", message)
            .await;
    }
    Ok(Action::await_change())
}

/// Runs the Vizier controller until `shutdown` resolves, over the namespace scope of
/// `ctx`.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let managed =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    let results = Controller::new(ctx.scoped::<Vizier>(), watcher::Config::default())
        .owns(ctx.scoped::<DaemonSet>(), managed.clone())
        .owns(ctx.scoped::<Deployment>(), managed.clone())
        .watches(ctx.scoped::<Pod>(), managed, |pod: Pod| {
            let vizier = pod.labels().get(VIZIER_LABEL)?.clone();
            Some(ObjectRef::new(&vizier).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(shutdown)
        .run(observed(reconcile), error_policy::<Vizier>, ctx);
    drain(results).await;
}
