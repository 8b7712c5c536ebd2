//! Two Viziers in one namespace, with `standin-pem` as the PEM image: each keeps its
//! own PEM token in the shared `px-pem-token` Secret, and deleting one leaves the other's
//! token and PEMs working; a Tracepoint that two Viziers could run is refused naming
//! them, and runs on the remaining one once the other goes; two DataRetentions in one
//! namespace merge by table, the older keeping a table both set, and deleting one
//! returns only its own tables to their defaults.

use std::time::Duration;

use px_e2e::{Cluster, eventually};

use super::probes::{
    WEB, apply, jsonpath, retention_on, secret_key, stalled, start, uprobe, wait_tp,
};
use super::vizier::{
    GC_SETTLE, SETTLE, Scratch, assert_operator_never_refused, ok, start_operator,
};

const OTHER: &str = "apiVersion: px.dev/v1alpha1\nkind: Vizier\nmetadata:\n  name: other\n  namespace: pl\nspec:\n  version: 0.14.15\n  pemMemoryLimit: 1Gi\n";

fn retention(name: &str, tables: &str) -> String {
    format!(
        "apiVersion: px.dev/v1alpha1\nkind: DataRetention\nmetadata: {{name: {name}, namespace: pl}}\nspec:\n  tables:\n{tables}"
    )
}

/// `name=phase` of every Vizier in `pl`.
async fn phases(cluster: &Cluster) -> String {
    jsonpath(
        cluster,
        &["vz", "-n", "pl"],
        "{range .items[*]}{.metadata.name}={.status.vizierPhase} {end}",
    )
    .await
}

/// `table=maxAge/budget` for the given tables, as node-a's stand-in PEM holds them: the
/// age limit in seconds, the budget in bytes or `default`.
async fn budgets(cluster: &Cluster, tables: &[&str]) -> Option<String> {
    let report = retention_on(cluster, "node-a").await?;
    Some(
        tables
            .iter()
            .map(|t| {
                let held = report.tables.iter().find(|h| h.table == *t);
                let budget = held.map_or(0, |h| h.budget_bytes);
                format!(
                    "{t}={}/{}",
                    held.map_or(0, |h| h.max_age_ns / 1_000_000_000),
                    if budget == 16 << 20 {
                        budget.to_string()
                    } else {
                        "default".to_owned()
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viziers_keep_their_own_tokens_tracepoints_and_retention() {
    let scratch = Scratch::new("scoping");
    let cluster = start(&scratch, None).await;
    let operator = start_operator(&cluster, "operator-0").await;
    apply(&cluster, OTHER).await;
    let healthy = eventually(SETTLE, || async {
        let p = phases(&cluster).await;
        (p.contains("other=Healthy") && p.contains("pixie=Healthy")).then_some(p)
    })
    .await;
    assert!(healthy.is_some(), "{}", phases(&cluster).await);

    // One Secret, a token per Vizier, each Vizier an owner.
    let pixie_token = secret_key(&cluster, "px-pem-token", "pixie").await.unwrap();
    let other_token = secret_key(&cluster, "px-pem-token", "other").await.unwrap();
    assert_ne!(pixie_token, other_token);
    let owners = jsonpath(
        &cluster,
        &["secret", "px-pem-token", "-n", "pl"],
        "{.metadata.ownerReferences[*].name}",
    )
    .await;
    let mut owners: Vec<&str> = owners.split_whitespace().collect();
    owners.sort_unstable();
    assert_eq!(owners, ["other", "pixie"]);
    // Each Vizier's PEMs get their own token.
    let token_keys = jsonpath(
        &cluster,
        &["ds", "-n", "pl"],
        "{range .items[*]}{.metadata.name}={.spec.template.spec.containers[0].env[?(@.name==\"PX_PEM_SERVICE_TOKEN\")].valueFrom.secretKeyRef.key} {end}",
    )
    .await;
    assert_eq!(token_keys.trim(), "other-pem=other pixie-pem=pixie");

    // A Tracepoint in `shop`, which has no Vizier, could run on either: refused.
    apply(&cluster, WEB).await;
    apply(&cluster, &uprobe("calls", "shop", "calls")).await;
    let refused = eventually(SETTLE, || async {
        let s = stalled(&cluster, "shop", "calls").await;
        s.starts_with("AmbiguousVizier").then_some(s)
    })
    .await
    .unwrap_or_default();
    assert!(refused.contains("pl/other, pl/pixie"), "{refused}");

    // Two DataRetentions: the older keeps http_events, the newer adds conn_stats and is
    // told about the table it lost.
    apply(
        &cluster,
        &retention("older", "  - {table: http_events, maxAge: 1h}\n"),
    )
    .await;
    let older_applied = eventually(SETTLE, || async {
        let b = budgets(&cluster, &["http_events"]).await?;
        (b == "http_events=3600/default").then_some(())
    })
    .await;
    assert!(
        older_applied.is_some(),
        "{:?}",
        budgets(&cluster, &["http_events"]).await
    );
    // creationTimestamp has a resolution of one second and ties go by name ("newer"
    // sorts first), so the newer one is created in a later second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply(
        &cluster,
        &retention(
            "newer",
            "  - {table: http_events, maxAge: 2h}\n  - {table: conn_stats, maxBytes: 16Mi}\n",
        ),
    )
    .await;
    let merged = eventually(SETTLE, || async {
        let b = budgets(&cluster, &["http_events", "conn_stats"]).await?;
        (b == format!("http_events=3600/default conn_stats=0/{}", 16 << 20)).then_some(())
    })
    .await;
    assert!(
        merged.is_some(),
        "{:?}",
        budgets(&cluster, &["http_events", "conn_stats"]).await
    );
    let conflict = eventually(SETTLE, || async {
        let c = jsonpath(
            &cluster,
            &["pxdr", "newer", "-n", "pl"],
            "{.status.conditions[?(@.type==\"Degraded\")].reason}: {.status.conditions[?(@.type==\"Degraded\")].message}",
        )
        .await;
        c.starts_with("TableConflict").then_some(c)
    })
    .await
    .unwrap_or_default();
    assert!(
        conflict.contains("table http_events is set by DataRetention older"),
        "{conflict}"
    );
    // Deleting the older: the newer's http_events budget applies; conn_stats stays.
    ok(
        &cluster,
        &["delete", "pxdr", "older", "-n", "pl", "--wait=true"],
    )
    .await;
    let after = eventually(SETTLE, || async {
        let b = budgets(&cluster, &["http_events", "conn_stats"]).await?;
        (b == format!("http_events=7200/default conn_stats=0/{}", 16 << 20)).then_some(())
    })
    .await;
    assert!(
        after.is_some(),
        "{:?}",
        budgets(&cluster, &["http_events", "conn_stats"]).await
    );

    // Deleting one Vizier leaves the other's token, its PEMs answering with it, and the
    // Tracepoint now runs on the one that is left.
    ok(
        &cluster,
        &["delete", "vz", "other", "-n", "pl", "--wait=true"],
    )
    .await;
    let gone = eventually(GC_SETTLE, || async {
        let ds = ok(&cluster, &["get", "ds", "-n", "pl", "-o", "name"]).await;
        (!ds.contains("other-pem")).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the other Vizier's PEMs never went");
    assert_eq!(
        secret_key(&cluster, "px-pem-token", "pixie")
            .await
            .as_deref(),
        Some(pixie_token.as_str()),
        "the remaining Vizier's token is untouched"
    );
    wait_tp(&cluster, "shop", "calls", "2/2", "Running").await;
    assert!(
        retention_on(&cluster, "node-b").await.is_some(),
        "pixie's PEMs still answer"
    );

    operator.abort();
    assert_operator_never_refused(&cluster);
}
