//! `px-operator`: reconciles `Vizier` custom resources into the PEM DaemonSet, the
//! Kelvin Deployment and Service, and their ServiceAccounts and RBAC; hands
//! `Tracepoint`s to the PEMs of the nodes they select and rolls up what the PEMs report;
//! sends `DataRetention` budgets to the PEMs and reports what they hold.
//!
//! [`run`] is the whole operator: it waits to lead (a Lease), then runs the three
//! controllers until told to stop or until it loses the Lease. The decisions of each
//! kind are pure functions ([`desired`], [`status`], [`probes`], [`retention`]), tested
//! without a cluster.

mod api_key;
pub mod cert_manager;
pub mod certs;
mod context;
pub mod desired;
mod error;
pub mod lease;
pub mod metrics;
pub mod patches;
pub mod pem;
pub mod probes;
pub mod retention;
pub mod status;
pub mod tls;
pub mod tracepoint;
pub mod vizier;

pub use context::Context;

use std::time::Duration;

pub use error::Error;
pub use lease::{LeaderElector, LeaseConfig};

/// What the operator needs to know to start; every field has a default (see `main`).
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only this namespace; every namespace when `None`.
    pub watch_namespace: Option<String>,
    /// Name of the leader-election Lease.
    pub lease_name: String,
    /// Namespace of the Lease; the client's default namespace when `None`.
    pub lease_namespace: Option<String>,
    /// This instance's identity (its pod name).
    pub identity: String,
    /// How long the Lease stays held without renewal.
    pub lease_duration: Duration,
    /// How long the certificates the operator issues live.
    pub certificate_lifetime: Duration,
}

/// Runs the operator on `client` until `shutdown` resolves (then it finishes the
/// reconciles under way and releases the Lease) or the leadership is lost (then it returns
/// the error: the process should exit and be restarted as a candidate).
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let lease_cfg = LeaseConfig {
        name: config.lease_name.clone(),
        namespace: config
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string()),
        holder: config.identity.clone(),
        duration: config.lease_duration,
        renew_every: config.lease_duration / 3,
    };
    let elector = LeaderElector::new(client.clone(), lease_cfg);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut shutdown = Box::pin(shutdown);
    tokio::select! {
        () = elector.acquire() => {}
        () = &mut shutdown => return Ok(()),
    }
    metrics::set_leader(true);
    let stop = futures_util::FutureExt::shared(async move {
        let _ = stop_rx.await;
    });
    let ctx = std::sync::Arc::new(
        Context::new(
            client,
            config.watch_namespace.clone(),
            Some(config.identity.clone()),
        )
        .with_certificate_lifetime(config.certificate_lifetime),
    );
    let controller = async move {
        tokio::join!(
            vizier::run(ctx.clone(), stop.clone()),
            tracepoint::run(ctx.clone(), stop.clone()),
            retention::run(ctx, stop),
        );
    };
    tokio::pin!(controller);
    tokio::select! {
        () = &mut controller => Ok(()),
        lost = elector.hold() => {
            metrics::set_leader(false);
            let _ = stop_tx.send(());
            controller.await;
            Err(lost)
        }
        () = &mut shutdown => {
            let _ = stop_tx.send(());
            controller.await;
            elector.release().await;
            Ok(())
        }
    }
}
