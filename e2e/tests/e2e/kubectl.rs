//! The emulator driven by the real kubectl, checking what a user would see.

use px_e2e::eventually;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::fixtures::{SETTLE, apply, cluster_with_crd, ok, table, tracepoint};

#[tokio::test]
async fn get_prints_the_crd_printer_columns() {
    let cluster = cluster_with_crd().await;
    let out = apply(&cluster, &tracepoint("tp1", 2)).await;
    assert_eq!(out.stdout, "tracepoint.px.dev/tp1 created\n", "{out:?}");
    for resource in ["tracepoints", "tracepoint", "tp", "tracepoints.px.dev"] {
        let rows = table(&ok(&cluster, &["get", resource]).await);
        assert_eq!(rows[0], ["NAME", "PROBE", "REPLICAS", "STATE", "AGE"]);
        assert_eq!(rows[1][..3], ["tp1", "http_events", "2"]);
        assert!(rows[1][3].ends_with('s'), "age column: {rows:?}");
    }
    // Applying the same manifest again changes nothing.
    let again = apply(&cluster, &tracepoint("tp1", 2)).await;
    assert_eq!(again.stdout, "tracepoint.px.dev/tp1 unchanged\n");
    cluster.stop().await;
}

#[tokio::test]
async fn schema_violations_read_as_on_a_real_cluster() {
    let cluster = cluster_with_crd().await;
    let wrong_type = "apiVersion: px.dev/v1alpha1\nkind: Tracepoint\nmetadata:\n  name: bad\nspec:\n  probe: http_events\n  replicas: three\n";
    let out = apply(&cluster, wrong_type).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "The Tracepoint \"bad\" is invalid: spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"\n"
    );

    let several = "apiVersion: px.dev/v1alpha1\nkind: Tracepoint\nmetadata:\n  name: bad\nspec:\n  probe: Not-Valid\n  mode: ftp\n  replicas: 0\n";
    let out = apply(&cluster, several).await;
    assert_eq!(
        out.stderr,
        "The Tracepoint \"bad\" is invalid: \n\
         * spec.mode: Unsupported value: \"ftp\": supported values: \"http\", \"dns\"\n\
         * spec.probe: Invalid value: \"Not-Valid\": spec.probe in body should match '^[a-z_]+$'\n\
         * spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1\n"
    );

    let missing = "apiVersion: px.dev/v1alpha1\nkind: Tracepoint\nmetadata:\n  name: bad\nspec:\n  mode: dns\n";
    let out = apply(&cluster, missing).await;
    assert_eq!(
        out.stderr,
        "The Tracepoint \"bad\" is invalid: spec.probe: Required value\n"
    );

    // The CEL rule in x-kubernetes-validations.
    let out = apply(&cluster, &tracepoint("bad", 11)).await;
    assert_eq!(
        out.stderr,
        "The Tracepoint \"bad\" is invalid: spec: Invalid value: \"object\": replicas must be at most 10\n"
    );

    // kubectl validates strictly by default; the server reports unknown fields.
    let unknown = "apiVersion: px.dev/v1alpha1\nkind: Tracepoint\nmetadata:\n  name: bad\nspec:\n  probe: http_events\n  bogus: 1\n";
    let out = apply(&cluster, unknown).await;
    assert_eq!(
        out.stderr,
        "Error from server (BadRequest): error when creating \"STDIN\": Tracepoint in version \"v1alpha1\" cannot be handled as a Tracepoint: strict decoding error: unknown field \"spec.bogus\"\n"
    );
    // A transition rule (oldSelf) holds on updates.
    assert!(apply(&cluster, &tracepoint("tp1", 1)).await.success());
    let out = apply(
        &cluster,
        &tracepoint("tp1", 1).replace("mode: http", "mode: dns"),
    )
    .await;
    assert_eq!(
        out.stderr,
        "The Tracepoint \"tp1\" is invalid: spec.mode: Invalid value: \"string\": mode is immutable\n"
    );
    ok(&cluster, &["delete", "tracepoint", "tp1"]).await;
    // Nothing invalid was stored.
    let out = cluster.kubectl(&["get", "tracepoints"]).await.unwrap();
    assert_eq!(out.stderr, "No resources found in default namespace.\n");
    cluster.stop().await;
}

#[tokio::test]
async fn describe_patch_status_and_delete() {
    let cluster = cluster_with_crd().await;
    let no_replicas = "apiVersion: px.dev/v1alpha1\nkind: Tracepoint\nmetadata:\n  name: tp1\n  labels:\n    team: obs\nspec:\n  probe: http_events\n";
    assert!(apply(&cluster, no_replicas).await.success());

    let described = ok(&cluster, &["describe", "tracepoint", "tp1"]).await;
    let lines: Vec<&str> = described.lines().map(str::trim).collect();
    assert!(lines.contains(&"Name:         tp1"), "{described}");
    assert!(lines.contains(&"Labels:       team=obs"), "{described}");
    // The schema default was applied.
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().eq(["Replicas:", "1"])),
        "{described}"
    );

    assert_eq!(generation(&cluster).await, "1");
    assert_eq!(
        ok(
            &cluster,
            &[
                "patch",
                "tp",
                "tp1",
                "--type=merge",
                "-p",
                r#"{"spec":{"replicas":3}}"#
            ]
        )
        .await,
        "tracepoint.px.dev/tp1 patched\n"
    );
    assert_eq!(generation(&cluster).await, "2");
    assert_eq!(
        ok(
            &cluster,
            &[
                "patch",
                "tp",
                "tp1",
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#
            ]
        )
        .await,
        "tracepoint.px.dev/tp1 patched\n"
    );
    assert_eq!(generation(&cluster).await, "3");

    // Status goes through its subresource and leaves the generation alone; the main
    // resource ignores status.
    ok(
        &cluster,
        &[
            "patch",
            "tp",
            "tp1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"state":"Running"}}"#,
        ],
    )
    .await;
    ok(
        &cluster,
        &[
            "patch",
            "tp",
            "tp1",
            "--type=merge",
            "-p",
            r#"{"status":{"state":"Ignored"}}"#,
        ],
    )
    .await;
    assert_eq!(generation(&cluster).await, "3");
    let rows = table(&ok(&cluster, &["get", "tp"]).await);
    assert_eq!(rows[1][..4], ["tp1", "http_events", "4", "Running"]);

    // Label and field selectors.
    assert_eq!(
        table(&ok(&cluster, &["get", "tp", "-l", "team=obs", "-o", "name"]).await),
        [["tracepoint.px.dev/tp1"]]
    );
    let none = cluster
        .kubectl(&["get", "tp", "-l", "team!=obs"])
        .await
        .unwrap();
    assert_eq!(none.stderr, "No resources found in default namespace.\n");
    assert_eq!(
        ok(
            &cluster,
            &[
                "get",
                "tp",
                "--field-selector",
                "metadata.name=tp1",
                "-o",
                "name"
            ]
        )
        .await,
        "tracepoint.px.dev/tp1\n"
    );

    assert_eq!(
        ok(&cluster, &["delete", "tp", "tp1"]).await,
        "tracepoint.px.dev \"tp1\" deleted\n"
    );
    let gone = cluster.kubectl(&["get", "tp", "tp1"]).await.unwrap();
    assert_eq!(
        gone.stderr,
        "Error from server (NotFound): tracepoints.px.dev \"tp1\" not found\n"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let cluster = cluster_with_crd().await;
    assert!(apply(&cluster, &tracepoint("tp1", 1)).await.success());
    let old = ok(&cluster, &["get", "tp", "tp1", "-o", "json"]).await;
    ok(
        &cluster,
        &[
            "patch",
            "tp",
            "tp1",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":2}}"#,
        ],
    )
    .await;
    let out = cluster
        .kubectl_stdin(&["replace", "-f", "-"], Some(&old))
        .await
        .unwrap();
    assert_eq!(
        out.stderr,
        "Error from server (Conflict): error when replacing \"STDIN\": Operation cannot be fulfilled on tracepoints.px.dev \"tp1\": the object has been modified; please apply your changes to the latest version and try again\n"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn server_side_apply_conflicts_and_force() {
    let cluster = cluster_with_crd().await;
    let out = cluster
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
            Some(&tracepoint("tp1", 1)),
        )
        .await
        .unwrap();
    assert_eq!(
        out.stdout, "tracepoint.px.dev/tp1 serverside-applied\n",
        "{out:?}"
    );
    let out = cluster
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
            Some(&tracepoint("tp1", 5)),
        )
        .await
        .unwrap();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(
            "error: Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas\n"
        ),
        "{}",
        out.stderr
    );
    let out = cluster
        .kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=bob",
                "--force-conflicts",
                "-f",
                "-",
            ],
            Some(&tracepoint("tp1", 5)),
        )
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    let managers = ok(
        &cluster,
        &[
            "get",
            "tp",
            "tp1",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ],
    )
    .await;
    assert_eq!(managers, "alice bob");
    assert_eq!(
        ok(
            &cluster,
            &["get", "tp", "tp1", "-o", "jsonpath={.spec.replicas}"]
        )
        .await,
        "5"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn get_watch_streams_changes() {
    let cluster = cluster_with_crd().await;
    assert!(apply(&cluster, &tracepoint("tp1", 1)).await.success());
    let mut watcher = cluster
        .kubectl_spawn(&["get", "tracepoints", "-w"])
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert_eq!(
        table(&next(&mut lines).await)[0],
        ["NAME", "PROBE", "REPLICAS", "STATE", "AGE"]
    );
    assert_eq!(
        table(&next(&mut lines).await)[0][..3],
        ["tp1", "http_events", "1"]
    );
    ok(
        &cluster,
        &[
            "patch",
            "tp",
            "tp1",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":7}}"#,
        ],
    )
    .await;
    assert_eq!(
        table(&next(&mut lines).await)[0][..3],
        ["tp1", "http_events", "7"]
    );
    assert!(apply(&cluster, &tracepoint("tp2", 2)).await.success());
    assert_eq!(
        table(&next(&mut lines).await)[0][..3],
        ["tp2", "http_events", "2"]
    );
    watcher.kill().await.unwrap();
    cluster.stop().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let cluster = cluster_with_crd().await;
    let with_finalizer = "apiVersion: px.dev/v1alpha1\nkind: Tracepoint\nmetadata:\n  name: tp1\n  finalizers: [px.dev/unload]\nspec:\n  probe: http_events\n";
    assert!(apply(&cluster, with_finalizer).await.success());
    assert_eq!(
        ok(&cluster, &["delete", "tp", "tp1", "--wait=false"]).await,
        "tracepoint.px.dev \"tp1\" deleted\n"
    );
    let stamp = ok(
        &cluster,
        &[
            "get",
            "tp",
            "tp1",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
    )
    .await;
    assert!(stamp.ends_with('Z'), "deletionTimestamp: {stamp:?}");
    ok(
        &cluster,
        &[
            "patch",
            "tp",
            "tp1",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ],
    )
    .await;
    let gone = cluster.kubectl(&["get", "tp", "tp1"]).await.unwrap();
    assert_eq!(
        gone.stderr,
        "Error from server (NotFound): tracepoints.px.dev \"tp1\" not found\n"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn dependents_are_garbage_collected_and_namespaces_emptied() {
    let cluster = cluster_with_crd().await;
    assert!(
        apply(
            &cluster,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: px\n"
        )
        .await
        .success()
    );
    assert!(
        cluster
            .kubectl_stdin(
                &["apply", "-n", "px", "-f", "-"],
                Some(&tracepoint("owner", 1))
            )
            .await
            .unwrap()
            .success()
    );
    let uid = ok(
        &cluster,
        &[
            "get",
            "-n",
            "px",
            "tp",
            "owner",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    )
    .await;
    let dependent = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe-config\n  namespace: px\n  ownerReferences:\n  - apiVersion: px.dev/v1alpha1\n    kind: Tracepoint\n    name: owner\n    uid: {uid}\ndata:\n  a: b\n"
    );
    assert!(apply(&cluster, &dependent).await.success());
    assert!(
        apply(
            &cluster,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unowned\n  namespace: px\n"
        )
        .await
        .success()
    );
    ok(&cluster, &["delete", "-n", "px", "tp", "owner"]).await;
    let collected = eventually(SETTLE, || async {
        let out = cluster
            .kubectl(&["get", "-n", "px", "configmaps", "-o", "name"])
            .await
            .unwrap();
        (out.stdout == "configmap/unowned\n").then_some(())
    })
    .await;
    assert!(
        collected.is_some(),
        "the dependent ConfigMap was not collected"
    );

    // In the foreground, the owner stays (marked) until its dependents are gone; here the
    // dependent holds on with a finalizer of its own.
    assert!(
        cluster
            .kubectl_stdin(
                &["apply", "-n", "px", "-f", "-"],
                Some(&tracepoint("owner2", 1))
            )
            .await
            .unwrap()
            .success()
    );
    let uid2 = ok(
        &cluster,
        &[
            "get",
            "-n",
            "px",
            "tp",
            "owner2",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    )
    .await;
    let dependent2 = dependent
        .replace("probe-config", "probe-config-2")
        .replace("name: owner", "name: owner2")
        .replace(&uid, &uid2)
        .replace(
            "  namespace: px\n",
            "  namespace: px\n  finalizers: [px.dev/hold]\n",
        );
    assert!(apply(&cluster, &dependent2).await.success());
    ok(
        &cluster,
        &[
            "delete",
            "-n",
            "px",
            "tp",
            "owner2",
            "--cascade=foreground",
            "--wait=false",
        ],
    )
    .await;
    let owner_finalizers = ok(
        &cluster,
        &[
            "get",
            "-n",
            "px",
            "tp",
            "owner2",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ],
    )
    .await;
    assert_eq!(owner_finalizers, r#"["foregroundDeletion"]"#);
    let marked = eventually(SETTLE, || async {
        let stamp = ok(
            &cluster,
            &[
                "get",
                "-n",
                "px",
                "cm",
                "probe-config-2",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ],
        )
        .await;
        (!stamp.is_empty()).then_some(())
    })
    .await;
    assert!(marked.is_some(), "the dependent was not deleted");
    ok(
        &cluster,
        &[
            "patch",
            "-n",
            "px",
            "cm",
            "probe-config-2",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    )
    .await;
    let owner_gone = eventually(SETTLE, || async {
        let out = cluster
            .kubectl(&["get", "-n", "px", "tp", "owner2"])
            .await
            .unwrap();
        out.stderr.contains("NotFound").then_some(())
    })
    .await;
    assert!(owner_gone.is_some(), "the owner outlived its dependents");

    // Deleting the namespace deletes what is in it, then the namespace.
    assert_eq!(
        ok(&cluster, &["delete", "namespace", "px"]).await,
        "namespace \"px\" deleted\n"
    );
    let out = cluster.kubectl(&["get", "namespace", "px"]).await.unwrap();
    assert_eq!(
        out.stderr,
        "Error from server (NotFound): namespaces \"px\" not found\n"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn deployments_get_pods_and_strategic_merge_patches_keep_containers() {
    let cluster = cluster_with_crd().await;
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: c\n        image: sleep\n        env:\n        - {name: A, value: \"1\"}\n";
    assert_eq!(
        apply(&cluster, deployment).await.stdout,
        "deployment.apps/web created\n"
    );
    let pods = eventually(SETTLE, || async {
        let rows = table(&ok(&cluster, &["get", "pods", "-l", "app=web"]).await);
        (rows.len() == 3).then_some(rows)
    })
    .await
    .expect("two pods");
    assert_eq!(pods[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(pods[1][1..4], ["0/1", "Pending", "0"]);
    let rows = table(&ok(&cluster, &["get", "deployment", "web"]).await);
    assert_eq!(rows[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(rows[1][..4], ["web", "0/2", "2", "0"]);

    // A strategic merge patch adds an env var by name and keeps the image.
    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","env":[{"name":"B","value":"2"}]}]}}}}"#;
    ok(&cluster, &["patch", "deployment", "web", "-p", patch]).await;
    let env = ok(&cluster, &["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[*].name}"]).await;
    assert_eq!(env, "sleep A B");

    // Deleting the deployment collects its pods.
    ok(&cluster, &["delete", "deployment", "web"]).await;
    let emptied = eventually(SETTLE, || async {
        let out = cluster.kubectl(&["get", "pods"]).await.unwrap();
        (out.stderr == "No resources found in default namespace.\n").then_some(())
    })
    .await;
    assert!(emptied.is_some());
    cluster.stop().await;
}

async fn generation(cluster: &px_e2e::Cluster) -> String {
    ok(
        cluster,
        &["get", "tp", "tp1", "-o", "jsonpath={.metadata.generation}"],
    )
    .await
}

async fn next(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(SETTLE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn built_in_kinds_read_back_with_server_defaults() {
    let cluster = cluster_with_crd().await;
    let manifests = "apiVersion: v1\nkind: Service\nmetadata:\n  name: kelvin\nspec:\n  selector: {app: kelvin}\n  ports:\n  - {name: grpc, port: 59300}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: token\nstringData:\n  key: hello world\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - {name: c, image: 'px/web:1.0'}\n";
    let out = apply(&cluster, manifests).await;
    assert_eq!(
        out.stdout, "service/kelvin created\nsecret/token created\ndeployment.apps/web created\n",
        "{out:?}"
    );

    let services = table(&ok(&cluster, &["get", "services"]).await);
    assert_eq!(
        services[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(
        services[1][..5],
        ["kelvin", "ClusterIP", "10.96.0.2", "<none>", "59300/TCP"]
    );
    assert_eq!(
        services[2][..5],
        ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"]
    );

    let secret = ok(
        &cluster,
        &[
            "get",
            "secret",
            "token",
            "-o",
            "jsonpath={.type} {.data.key}",
        ],
    )
    .await;
    assert_eq!(secret, "Opaque aGVsbG8gd29ybGQ=");
    let spec = ok(
        &cluster,
        &["get", "deployment", "web", "-o", "jsonpath={.spec.replicas} {.spec.strategy.type} {.spec.template.spec.restartPolicy} {.spec.template.spec.containers[0].imagePullPolicy}"],
    )
    .await;
    assert_eq!(spec, "1 RollingUpdate Always IfNotPresent");
    // Re-applying the same manifests is a no-op despite the defaults. The Secret reads
    // "configured", as on a real server: stringData is never stored, so kubectl's patch
    // is never empty.
    let again = apply(&cluster, manifests).await;
    assert_eq!(
        again.stdout,
        "service/kelvin unchanged\nsecret/token configured\ndeployment.apps/web unchanged\n"
    );
    let label = ok(
        &cluster,
        &[
            "get",
            "namespace",
            "default",
            "-o",
            "jsonpath={.metadata.labels.kubernetes\\.io/metadata\\.name}",
        ],
    )
    .await;
    assert_eq!(label, "default");
    cluster.stop().await;
}

#[tokio::test]
async fn changing_a_crd_changes_what_is_served() {
    let cluster = cluster_with_crd().await;
    assert!(apply(&cluster, &tracepoint("tp1", 2)).await.success());
    // A new printer column and a tighter maximum.
    let changed = super::fixtures::TRACEPOINT_CRD
        .replace(
            "    - name: Age\n",
            "    - name: Mode\n      type: string\n      jsonPath: .spec.mode\n    - name: Age\n",
        )
        .replace(
            "                minimum: 1\n",
            "                minimum: 1\n                maximum: 5\n",
        );
    assert_ne!(changed, super::fixtures::TRACEPOINT_CRD);
    let out = apply(&cluster, &changed).await;
    assert_eq!(
        out.stdout, "customresourcedefinition.apiextensions.k8s.io/tracepoints.px.dev configured\n",
        "{out:?}"
    );
    let rows = table(&ok(&cluster, &["get", "tp"]).await);
    assert_eq!(
        rows[0],
        ["NAME", "PROBE", "REPLICAS", "STATE", "MODE", "AGE"]
    );
    assert_eq!(rows[1][..4], ["tp1", "http_events", "2", "http"]);
    let out = apply(&cluster, &tracepoint("tp1", 7)).await;
    assert_eq!(
        out.stderr,
        "The Tracepoint \"tp1\" is invalid: spec.replicas: Invalid value: 7: spec.replicas in body should be less than or equal to 5\n"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn create_generators_for_simple_kinds_work() {
    let cluster = super::fixtures::cluster_with_crd().await;
    assert_eq!(
        ok(&cluster, &["create", "namespace", "px"]).await,
        "namespace/px created\n"
    );
    assert_eq!(
        ok(
            &cluster,
            &[
                "create",
                "configmap",
                "cfg",
                "-n",
                "px",
                "--from-literal=mode=http"
            ]
        )
        .await,
        "configmap/cfg created\n"
    );
    assert_eq!(
        ok(
            &cluster,
            &[
                "create",
                "secret",
                "generic",
                "token",
                "-n",
                "px",
                "--from-literal=key=hello world"
            ]
        )
        .await,
        "secret/token created\n"
    );
    assert_eq!(
        ok(
            &cluster,
            &["create", "serviceaccount", "px-operator", "-n", "px"]
        )
        .await,
        "serviceaccount/px-operator created\n"
    );
    let got = ok(
        &cluster,
        &[
            "get",
            "-n",
            "px",
            "configmap/cfg",
            "secret/token",
            "-o",
            "jsonpath={.items[0].data.mode} {.items[1].data.key}",
        ],
    )
    .await;
    assert_eq!(got, "http aGVsbG8gd29ybGQ=");
    let rows = table(&ok(&cluster, &["get", "namespace", "px"]).await);
    assert_eq!(rows[1][..2], ["px", "Active"]);
    // Deeper kinds are refused, with a message that says why.
    let out = cluster
        .kubectl(&["create", "deployment", "web", "--image=x"])
        .await
        .unwrap();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("the body of the request was in an unknown format"),
        "{}",
        out.stderr
    );
    cluster.stop().await;
}
