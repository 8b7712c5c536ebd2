//! Against the real kube-apiserver (`px-e2e`) with the real `kubectl`: the generated CRDs
//! install, good objects apply (a Vizier written for Pixie's operator among them),
//! `kubectl get` prints the printer columns, and bad objects are refused with a message
//! that names the field.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use px_crds::{
    DesiredCondition, NodeProbeState, PemCounts, READY, ReconciliationPhase, TracepointStatus,
    VizierPhase, VizierStatus, roll_up, set_condition,
};
use px_e2e::{Cluster, ClusterConfig, KubectlOutput, eventually};

/// A Vizier as written for Pixie's own operator (fields of its `vizier_types.go`).
const PIXIE_VIZIER: &str = include_str!("../../examples/vizier-pixie.yaml");

/// What Pixie's Helm chart (`k8s/operator/helm/templates/04_vizier.yaml`) renders with
/// its defaults: keys it always writes, empty ones as YAML nulls.
const PIXIE_HELM_VIZIER: &str = include_str!("../../examples/vizier-pixie-helm.yaml");

const UPROBE_TRACEPOINT: &str = include_str!("../../examples/tracepoint-uprobe.yaml");

const OPENAT_TRACEPOINT: &str = include_str!("../../examples/tracepoint-openat.yaml");

const RETENTION: &str = include_str!("../../examples/dataretention.yaml");

const SETTLE: Duration = Duration::from_secs(10);

async fn apply(cluster: &Cluster, yaml: &str) -> KubectlOutput {
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
        .await
        .unwrap()
}

async fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl(args).await.unwrap();
    assert!(out.success(), "kubectl {args:?} failed: {out:?}");
    out.stdout
}

fn table(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// A cluster with the committed CRDs applied the way a user applies them, with the
/// namespaces `pl` and `shop`.
async fn cluster_with_crds() -> Cluster {
    let cluster = Cluster::start(ClusterConfig::default()).await.unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in [
        "dataretentions.px.dev",
        "tracepoints.px.dev",
        "viziers.px.dev",
    ] {
        let path = dir.join(format!("{name}.yaml"));
        let out = cluster
            .kubectl(&["apply", "-f", &path.display().to_string()])
            .await
            .unwrap();
        assert_eq!(
            out.stdout,
            format!("customresourcedefinition.apiextensions.k8s.io/{name} created\n"),
            "{out:?}"
        );
    }
    let established = eventually(SETTLE, || async {
        let out = ok(
            &cluster,
            &[
                "get",
                "crd",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type==\"Established\")].status}",
            ],
        )
        .await;
        (out == "True True True").then_some(())
    })
    .await;
    assert!(established.is_some(), "CRDs not established");
    for ns in ["pl", "shop"] {
        ok(&cluster, &["create", "namespace", ns]).await;
    }
    cluster
}

/// Writes `status` through the status subresource, as the operator will.
async fn patch_status(
    cluster: &Cluster,
    kind: &str,
    ns: &str,
    name: &str,
    status: &impl serde::Serialize,
) {
    let body = serde_json::json!({ "status": status }).to_string();
    ok(
        cluster,
        &[
            "patch",
            kind,
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &body,
        ],
    )
    .await;
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[tokio::test]
async fn crds_install_and_good_objects_apply_and_print_their_columns() {
    let cluster = cluster_with_crds().await;

    // A Vizier written for Pixie's operator applies unchanged, cloud fields and all.
    let out = apply(&cluster, PIXIE_VIZIER).await;
    assert_eq!(out.stdout, "vizier.px.dev/pixie created\n", "{out:?}");
    assert_eq!(out.stderr, "", "no warnings (unknown fields would warn)");
    let stored = ok(&cluster, &["get", "vz", "pixie", "-n", "pl", "-o", "json"]).await;
    let vz: px_crds::Vizier = serde_json::from_str(&stored).unwrap();
    assert_eq!(vz.spec.pem_memory_limit.as_deref(), Some("2Gi"));
    assert_eq!(
        vz.spec.ignored_fields().len(),
        9,
        "{:?}",
        vz.spec.ignored_fields()
    );
    assert_eq!(
        vz.spec.pod.as_ref().unwrap().tolerations.as_ref().unwrap()[0]
            .key
            .as_deref(),
        Some("dedicated")
    );

    let out = apply(&cluster, PIXIE_HELM_VIZIER).await;
    assert_eq!(out.stdout, "vizier.px.dev/pixie-helm created\n", "{out:?}");
    let helm: px_crds::Vizier = serde_json::from_str(
        &ok(
            &cluster,
            &["get", "vz", "pixie-helm", "-n", "pl", "-o", "json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        helm.spec.ignored_fields(),
        ["disableAutoUpdate", "useEtcdOperator", "cloudAddr"],
        "an empty deployKey is no deploy key"
    );
    ok(&cluster, &["delete", "vz", "pixie-helm", "-n", "pl"]).await;

    let out = apply(&cluster, UPROBE_TRACEPOINT).await;
    assert_eq!(
        out.stdout, "tracepoint.px.dev/checkout-latency created\n",
        "{out:?}"
    );
    let out = apply(&cluster, OPENAT_TRACEPOINT).await;
    assert_eq!(out.stdout, "tracepoint.px.dev/opens created\n", "{out:?}");
    let out = apply(&cluster, RETENTION).await;
    assert_eq!(
        out.stdout, "dataretention.px.dev/retention created\n",
        "{out:?}"
    );
    // Applying the same objects again changes nothing.
    let out = apply(&cluster, PIXIE_VIZIER).await;
    assert_eq!(out.stdout, "vizier.px.dev/pixie unchanged\n", "{out:?}");

    // Before the operator writes a status, the columns are there and empty.
    let rows = table(&ok(&cluster, &["get", "vz", "-n", "pl"]).await);
    assert_eq!(rows[0], ["NAME", "PHASE", "PEMS", "VERSION", "AGE"]);
    assert_eq!(rows[1][0], "pixie");

    // The status the operator would write, built with the crate's types and helpers.
    let t = now();
    let pems = PemCounts {
        desired: 3,
        updated: 3,
        ready: 2,
    };
    let mut status = VizierStatus {
        observed_generation: vz.metadata.generation,
        version: Some("0.14.15".into()),
        vizier_phase: Some(VizierPhase::Updating),
        reconciliation_phase: Some(ReconciliationPhase::Updating),
        last_reconciliation_phase_time: Some(t.clone()),
        operator_version: Some("0.1.0".into()),
        pems: Some(pems),
        pems_ready: Some(pems.summary()),
        ..VizierStatus::default()
    };
    set_condition(
        &mut status.conditions,
        DesiredCondition::new(READY, false, "PEMsNotReady", "2/3 PEMs ready"),
        vz.metadata.generation,
        &t,
    );
    set_condition(
        &mut status.conditions,
        vz.spec.ignored_fields_condition(),
        vz.metadata.generation,
        &t,
    );
    patch_status(&cluster, "vizier", "pl", "pixie", &status).await;
    let rows = table(&ok(&cluster, &["get", "vz", "-n", "pl"]).await);
    assert_eq!(rows[1][..4], ["pixie", "Updating", "2/3", "0.14.15"]);
    let ignored = ok(
        &cluster,
        &[
            "get",
            "vizier",
            "pixie",
            "-n",
            "pl",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"IgnoredFields\")].message}",
        ],
    )
    .await;
    assert!(
        ignored.contains("deployKey") && ignored.contains("cloudAddr"),
        "{ignored}"
    );
    // The status subresource leaves the spec's generation alone.
    let gen_after = ok(
        &cluster,
        &[
            "get",
            "vz",
            "pixie",
            "-n",
            "pl",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
    )
    .await;
    assert_eq!(
        Some(gen_after.parse::<i64>().unwrap()),
        vz.metadata.generation
    );

    // A Tracepoint's status from the roll-up of three nodes, one failing.
    let states = [
        ("node-a", NodeProbeState::Running),
        (
            "node-b",
            NodeProbeState::Failed {
                reason: "SymbolNotFound".into(),
                message: "main.(*Server).Checkout not in /app/checkout".into(),
            },
        ),
        ("node-c", NodeProbeState::Running),
    ];
    let rollup = roll_up(states.iter().map(|(n, s)| (*n, s)), false);
    let mut tp_status = TracepointStatus {
        observed_generation: Some(1),
        phase: Some(rollup.phase),
        table: Some("checkout_calls".into()),
        nodes: Some(rollup.nodes),
        ready: Some(rollup.nodes.summary()),
        failures: rollup.failures.clone(),
        ..TracepointStatus::default()
    };
    for c in rollup.conditions() {
        set_condition(&mut tp_status.conditions, c, Some(1), &t);
    }
    patch_status(
        &cluster,
        "tracepoint",
        "shop",
        "checkout-latency",
        &tp_status,
    )
    .await;
    let rows = table(&ok(&cluster, &["get", "tp", "-n", "shop"]).await);
    assert_eq!(rows[0], ["NAME", "TABLE", "READY", "PHASE", "AGE"]);
    assert_eq!(
        rows[1][..4],
        [
            "checkout-latency",
            "checkout_calls",
            "2/3",
            "PartiallyRunning"
        ]
    );
    let failure = ok(
        &cluster,
        &[
            "get",
            "tp",
            "checkout-latency",
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.failures[0].node} {.status.failures[0].reason}",
        ],
    )
    .await;
    assert_eq!(failure, "node-b SymbolNotFound");
    // What was written reads back into the same typed status.
    let back: px_crds::Tracepoint = serde_json::from_str(
        &ok(
            &cluster,
            &["get", "tp", "checkout-latency", "-n", "shop", "-o", "json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(back.status, Some(tp_status));

    // A Tracepoint without a status yet shows its table and empty counts.
    let rows = table(&ok(&cluster, &["get", "tp", "-n", "pl"]).await);
    assert_eq!(rows[1][..2], ["opens", "file_opens"]);

    let rows = table(&ok(&cluster, &["get", "pxdr", "-n", "pl"]).await);
    assert_eq!(rows[0], ["NAME", "TABLES", "READY", "AGE"]);
    assert_eq!(rows[1][0], "retention");

    // Doc comments are the schema's descriptions, for `kubectl explain`.
    let explained = ok(&cluster, &["explain", "viziers.spec.deployKey"]).await;
    assert!(explained.contains("Accepted and ignored"), "{explained}");
    let explained = ok(&cluster, &["explain", "tracepoints.spec.columns.index"]).await;
    assert!(explained.contains("bpftrace's `arg0`"), "{explained}");

    // The `px` category lists all three kinds.
    let all = ok(&cluster, &["get", "px", "-A", "-o", "name"]).await;
    let mut names: Vec<&str> = all.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "dataretention.px.dev/retention",
            "tracepoint.px.dev/checkout-latency",
            "tracepoint.px.dev/opens",
            "vizier.px.dev/pixie",
        ]
    );
    cluster.stop().await;
}

/// A manifest that must be refused, and what kubectl's error must say.
struct Bad {
    what: &'static str,
    yaml: String,
    expect: &'static [&'static str],
}

fn tracepoint_with(spec: &str) -> String {
    format!(
        "apiVersion: px.dev/v1alpha1\nkind: Tracepoint\nmetadata:\n  name: bad\n  namespace: shop\nspec:\n{spec}"
    )
}

const GOOD_TARGET: &str = "  target:\n    pods:\n      selector: {matchLabels: {app: a}}\n";
const GOOD_UPROBE: &str = "  probe:\n    uprobe: {binary: /bin/app, symbol: handle}\n";

fn uprobe_with_columns(columns: &str) -> String {
    tracepoint_with(&format!(
        "{GOOD_UPROBE}{GOOD_TARGET}  table: t\n  columns:\n{columns}"
    ))
}

fn vizier_with(spec: &str) -> String {
    format!(
        "apiVersion: px.dev/v1alpha1\nkind: Vizier\nmetadata:\n  name: bad\n  namespace: pl\nspec:\n{spec}"
    )
}

fn retention_with(tables: &str) -> String {
    format!(
        "apiVersion: px.dev/v1alpha1\nkind: DataRetention\nmetadata:\n  name: bad\n  namespace: pl\nspec:\n  tables:\n{tables}"
    )
}

fn bad_objects() -> Vec<Bad> {
    vec![
        Bad {
            what: "memory limit that is not a quantity",
            yaml: vizier_with("  pemMemoryLimit: lots\n"),
            expect: &["spec.pemMemoryLimit", "should match"],
        },
        Bad {
            what: "negative memory request",
            yaml: vizier_with("  pemMemoryRequest: -1Gi\n"),
            expect: &["spec.pemMemoryRequest", "should match"],
        },
        Bad {
            what: "data access level outside the enum",
            yaml: vizier_with("  dataAccess: Everything\n"),
            expect: &[
                "spec.dataAccess",
                "Unsupported value: \"Everything\"",
                "\"PIIRestricted\"",
            ],
        },
        Bad {
            what: "text where a number belongs",
            yaml: vizier_with("  dataCollectorParams:\n    datastreamBufferSize: big\n"),
            expect: &["spec.dataCollectorParams.datastreamBufferSize", "integer"],
        },
        Bad {
            what: "text where a boolean belongs",
            yaml: vizier_with("  useEtcdOperator: maybe\n"),
            expect: &["spec.useEtcdOperator", "boolean"],
        },
        Bad {
            what: "misspelt Vizier field",
            yaml: vizier_with("  pemMemoryLimits: 2Gi\n"),
            expect: &["unknown field \"spec.pemMemoryLimits\""],
        },
        Bad {
            what: "both uprobe and tracepoint",
            yaml: tracepoint_with(&format!(
                "  probe:\n    uprobe: {{binary: /bin/app, symbol: handle}}\n    tracepoint: syscalls/sys_enter_openat\n{GOOD_TARGET}  table: t\n  columns:\n  - {{name: pid, source: Pid}}\n"
            )),
            expect: &[
                "spec.probe",
                "exactly one of uprobe or tracepoint must be set",
            ],
        },
        Bad {
            what: "neither pods nor host",
            yaml: tracepoint_with(&format!(
                "{GOOD_UPROBE}  target: {{}}\n  table: t\n  columns:\n  - {{name: pid, source: Pid}}\n"
            )),
            expect: &["spec.target", "exactly one of pods or host must be set"],
        },
        Bad {
            what: "kernel tracepoint without a category",
            yaml: tracepoint_with(&format!(
                "  probe:\n    tracepoint: sys_enter_openat\n{GOOD_TARGET}  table: t\n  columns:\n  - {{name: pid, source: Pid}}\n"
            )),
            expect: &["spec.probe.tracepoint", "should match"],
        },
        Bad {
            what: "relative binary path",
            yaml: tracepoint_with(&format!(
                "  probe:\n    uprobe: {{binary: app, symbol: handle}}\n{GOOD_TARGET}  table: t\n  columns:\n  - {{name: pid, source: Pid}}\n"
            )),
            expect: &["spec.probe.uprobe.binary", "should match"],
        },
        Bad {
            what: "no table",
            yaml: tracepoint_with(&format!(
                "{GOOD_UPROBE}{GOOD_TARGET}  columns:\n  - {{name: pid, source: Pid}}\n"
            )),
            expect: &["spec.table", "Required value"],
        },
        Bad {
            what: "table name with a dash",
            yaml: tracepoint_with(&format!(
                "{GOOD_UPROBE}{GOOD_TARGET}  table: my-table\n  columns:\n  - {{name: pid, source: Pid}}\n"
            )),
            expect: &["spec.table", "should match"],
        },
        Bad {
            what: "TTL that is not a duration",
            yaml: tracepoint_with(&format!(
                "{GOOD_UPROBE}{GOOD_TARGET}  table: t\n  ttl: forever\n  columns:\n  - {{name: pid, source: Pid}}\n"
            )),
            expect: &["spec.ttl", "should match"],
        },
        Bad {
            what: "no columns",
            yaml: tracepoint_with(&format!(
                "{GOOD_UPROBE}{GOOD_TARGET}  table: t\n  columns: []\n"
            )),
            expect: &["spec.columns", "should have at least 1 items"],
        },
        Bad {
            what: "argument column without an index",
            yaml: uprobe_with_columns("  - {name: fd, source: Arg, type: int64}\n"),
            expect: &["spec.columns[0]", "an Arg column needs index and type"],
        },
        Bad {
            what: "argument index past the last register",
            yaml: uprobe_with_columns("  - {name: x, source: Arg, index: 9, type: int64}\n"),
            expect: &["spec.columns[0].index", "less than or equal to 8"],
        },
        Bad {
            what: "column type outside the enum",
            yaml: uprobe_with_columns("  - {name: x, source: Arg, index: 0, type: float}\n"),
            expect: &["spec.columns[0].type", "Unsupported value: \"float\""],
        },
        Bad {
            what: "maxLength on an integer column",
            yaml: uprobe_with_columns(
                "  - {name: x, source: Arg, index: 0, type: int64, maxLength: 8}\n",
            ),
            expect: &[
                "spec.columns[0].maxLength",
                "maxLength is only for string and bytes columns",
            ],
        },
        Bad {
            what: "duplicate column names",
            yaml: uprobe_with_columns(
                "  - {name: pid, source: Pid}\n  - {name: pid, source: Tid}\n",
            ),
            expect: &["spec.columns", "column names must be unique"],
        },
        Bad {
            what: "column named like one the PEM adds",
            yaml: uprobe_with_columns("  - {name: time_, source: Pid}\n"),
            expect: &[
                "spec.columns[0].name",
                "time_ and upid are added by the PEM",
            ],
        },
        Bad {
            what: "tracepoint field on a uprobe",
            yaml: uprobe_with_columns("  - {name: f, source: Field, field: filename}\n"),
            expect: &[
                "spec.columns",
                "Field columns need a kernel tracepoint probe",
            ],
        },
        Bad {
            what: "latency on a kernel tracepoint",
            yaml: tracepoint_with(&format!(
                "  probe:\n    tracepoint: syscalls/sys_enter_openat\n{GOOD_TARGET}  table: t\n  columns:\n  - {{name: l, source: Latency}}\n"
            )),
            expect: &["spec.columns", "Arg, Return and Latency need a uprobe"],
        },
        Bad {
            what: "budget in bytes and in percent at once",
            yaml: retention_with("  - {table: http_events, maxBytes: 1Gi, memoryPercent: 10}\n"),
            expect: &["spec.tables[0]", "set maxBytes or memoryPercent, not both"],
        },
        Bad {
            what: "a table entry that sets nothing",
            yaml: retention_with("  - {table: http_events}\n"),
            expect: &[
                "spec.tables[0]",
                "set at least one of maxBytes, memoryPercent or maxAge",
            ],
        },
        Bad {
            what: "share above 100%",
            yaml: retention_with("  - {table: http_events, memoryPercent: 150}\n"),
            expect: &["spec.tables[0].memoryPercent", "less than or equal to 100"],
        },
        Bad {
            what: "byte budget that is not a quantity",
            yaml: retention_with("  - {table: http_events, maxBytes: lots}\n"),
            expect: &["spec.tables[0].maxBytes", "should match"],
        },
        Bad {
            what: "the same table twice",
            yaml: retention_with(
                "  - {table: http_events, maxAge: 1h}\n  - {table: http_events, maxAge: 2h}\n",
            ),
            expect: &["spec.tables", "each table may appear only once"],
        },
    ]
}

#[tokio::test]
async fn bad_objects_are_refused_with_a_message_naming_the_field() {
    let cluster = cluster_with_crds().await;
    let mut wrong = Vec::new();
    for bad in bad_objects() {
        let out = apply(&cluster, &bad.yaml).await;
        let missing: Vec<&str> = bad
            .expect
            .iter()
            .copied()
            .filter(|e| !out.stderr.contains(e))
            .collect();
        if out.success() || !missing.is_empty() {
            wrong.push(format!(
                "{}: exit {} missing {missing:?}\nstdout: {}stderr: {}",
                bad.what, out.code, out.stdout, out.stderr
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    // Nothing bad was stored.
    let out = cluster.kubectl(&["get", "px", "-A"]).await.unwrap();
    assert_eq!(out.stderr, "No resources found\n", "{out:?}");
    cluster.stop().await;
}
