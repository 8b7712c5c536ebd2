//! Leader election against the API server's Leases, as the chart's ServiceAccount: one leader at a time, a takeover only
//! once the leader stops renewing, and the old leader told it lost.

use std::time::Duration;

use kube::Client;
use px_e2e::{Cluster, ClusterConfig};
use px_operator::{Error, LeaderElector, LeaseConfig};

fn candidate(client: &Client, holder: &str) -> LeaderElector {
    LeaderElector::new(
        client.clone(),
        LeaseConfig {
            name: "px-operator".into(),
            namespace: super::vizier::RELEASE_NAMESPACE.into(),
            holder: holder.into(),
            duration: Duration::from_secs(2),
            renew_every: Duration::from_millis(300),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_takeover_after_expiry() {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    // The chart's identity: its leader-election Role is what lets these candidates work.
    let client = super::vizier::operator_client(&cluster, serde_json::json!({})).await;
    let a = candidate(&client, "operator-a");
    let b = candidate(&client, "operator-b");

    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a free Lease is taken"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "a held Lease is not"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    let holder = cluster
        .kubectl(&[
            "get",
            "lease",
            "px-operator",
            "-n",
            super::vizier::RELEASE_NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await
        .unwrap();
    assert_eq!(holder.stdout, "operator-a");

    // While a renews, b keeps waiting well past one Lease duration.
    let a_holds = tokio::spawn(async move { a.hold().await });
    let b_waits = tokio::time::timeout(Duration::from_secs(3), b.acquire()).await;
    assert!(b_waits.is_err(), "b took a Lease that was being renewed");

    // a stops renewing (killed): b takes over once the Lease expires.
    a_holds.abort();
    tokio::time::timeout(Duration::from_secs(5), b.acquire())
        .await
        .expect("b never took the expired Lease");
    let out = cluster
        .kubectl(&[
            "get",
            "lease",
            "px-operator",
            "-n",
            super::vizier::RELEASE_NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}",
        ])
        .await
        .unwrap();
    assert_eq!(out.stdout, "operator-b 1");

    // a, come back, finds b holding and is told it lost.
    let a = candidate(&client, "operator-a");
    assert!(!a.try_acquire_or_renew().await.unwrap());
    let b_holds = tokio::spawn(async move { b.hold().await });
    let lost = tokio::time::timeout(Duration::from_secs(3), a.hold()).await;
    assert!(
        matches!(lost, Ok(Error::LeadershipLost { .. })),
        "a must learn it does not lead: {lost:?}"
    );
    b_holds.abort();

    // b shuts down cleanly and releases: a takes over at once, without waiting 2 s.
    let b = candidate(&client, "operator-b");
    a.release().await;
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "a releasing what it does not hold changes nothing"
    );
    b.release().await;
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a released Lease is free at once"
    );
    let out = cluster
        .kubectl(&[
            "get",
            "lease",
            "px-operator",
            "-n",
            super::vizier::RELEASE_NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}",
        ])
        .await
        .unwrap();
    assert_eq!(
        out.stdout, "operator-a 1",
        "taking a released Lease is no transition"
    );
    cluster.stop().await;
}
