//! The scenario later issues extend: CRDs applied, a Deployment and a DaemonSet run as
//! processes on two simulated nodes, one node's process killed and restarted, and
//! everything torn down with nothing left behind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use px_e2e::{Cluster, ClusterConfig, NodeSpec, eventually};

use super::fixtures::{SETTLE, apply, ok, project_crd_files, table};

fn workloads(out_dir: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: kelvin
  namespace: px
spec:
  replicas: 1
  selector:
    matchLabels: {{app: kelvin}}
  template:
    metadata:
      labels: {{app: kelvin}}
    spec:
      containers:
      - name: kelvin
        image: px/kelvin:dev
        args: ["1000"]
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: vizier-pem
  namespace: px
spec:
  selector:
    matchLabels: {{app: pem}}
  template:
    metadata:
      labels: {{app: pem}}
    spec:
      containers:
      - name: pem
        image: px/pem:dev
        command: ["sh", "-c"]
        args: ["echo \"$MY_NODE $MY_POD $MY_NS $MY_IP $GREETING $PX_PEM_CGROUP\" > $(OUT)/pem-$MY_NODE.env; exec sleep 1000"]
        env:
        - {{name: OUT, value: "{out_dir}"}}
        - {{name: GREETING, value: hello}}
        - name: MY_NODE
          valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}
        - name: MY_POD
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        - name: MY_NS
          valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
        - name: MY_IP
          valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
"#
    )
}

/// `kubectl get pods -o wide` rows (without the header) once all are Running and ready.
async fn running_pods(cluster: &Cluster, count: usize) -> Vec<Vec<String>> {
    eventually(SETTLE, || async {
        let rows = table(&ok(cluster, &["get", "pods", "-n", "px", "-o", "wide"]).await);
        let pods: Vec<Vec<String>> = rows.into_iter().skip(1).collect();
        (pods.len() == count && pods.iter().all(|r| r[1] == "1/1" && r[2] == "Running"))
            .then_some(pods)
    })
    .await
    .expect("pods running and ready")
}

#[tokio::test]
async fn deployment_and_daemonset_run_as_processes_on_two_nodes() {
    let images = HashMap::from([
        ("px/kelvin".to_string(), PathBuf::from("/usr/bin/sleep")),
        ("px/pem:dev".to_string(), PathBuf::from("/bin/sh")),
    ]);
    let config = ClusterConfig {
        nodes: vec![NodeSpec::named("node-a"), NodeSpec::named("node-b")],
        images,
    };
    let cluster = Cluster::start(config).await.unwrap();
    let cgroup_a = cluster.node_cgroup("node-a").unwrap().to_path_buf();
    let cgroup_b = cluster.node_cgroup("node-b").unwrap().to_path_buf();
    assert_ne!(cgroup_a, cgroup_b);
    assert_ne!(cluster.node_ip("node-a"), cluster.node_ip("node-b"));

    let nodes = table(&ok(&cluster, &["get", "nodes"]).await);
    assert_eq!(nodes[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(nodes[1][..3], ["node-a", "Ready", "<none>"]);
    assert_eq!(nodes[2][..3], ["node-b", "Ready", "<none>"]);

    // The project's CRDs from crds/.
    let crd_files = project_crd_files();
    assert!(!crd_files.is_empty());
    for file in &crd_files {
        let out = cluster
            .kubectl(&["apply", "-f", &file.display().to_string()])
            .await
            .unwrap();
        assert!(out.success(), "{}: {out:?}", file.display());
    }
    let established = ok(
        &cluster,
        &[
            "get",
            "crd",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Established\")].status}",
        ],
    )
    .await;
    assert!(
        !established.is_empty() && established.split(' ').all(|s| s == "True"),
        "{established:?}"
    );
    assert!(
        apply(
            &cluster,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: px\n"
        )
        .await
        .success()
    );
    let out_dir = cluster.dir().display().to_string();
    let out = apply(&cluster, &workloads(&out_dir)).await;
    assert_eq!(
        out.stdout, "deployment.apps/kelvin created\ndaemonset.apps/vizier-pem created\n",
        "{out:?}"
    );

    let pods = running_pods(&cluster, 3).await;
    let pem_nodes: Vec<&str> = pods
        .iter()
        .filter(|r| r[0].starts_with("vizier-pem-"))
        .map(|r| r[6].as_str())
        .collect();
    let mut sorted = pem_nodes.clone();
    sorted.sort();
    assert_eq!(sorted, ["node-a", "node-b"], "{pods:?}");
    assert!(pods.iter().any(|r| r[0].starts_with("kelvin-")));
    let ds = table(&ok(&cluster, &["get", "daemonset", "-n", "px"]).await);
    assert_eq!(ds[1][..6], ["vizier-pem", "2", "2", "2", "2", "2"]);
    let deploy = table(&ok(&cluster, &["get", "deployment", "-n", "px"]).await);
    assert_eq!(deploy[1][..4], ["kelvin", "1/1", "1", "1"]);

    // Each PEM got its pod's environment and its own node's cgroup, and runs in it.
    for (node, cgroup) in [("node-a", &cgroup_a), ("node-b", &cgroup_b)] {
        let pod = &pods
            .iter()
            .find(|r| r[0].starts_with("vizier-pem-") && r[6] == node)
            .unwrap()[0];
        let env = eventually(SETTLE, || async {
            std::fs::read_to_string(format!("{out_dir}/pem-{node}.env")).ok()
        })
        .await
        .unwrap();
        // Its own address (each pod has one, as in a pod network), not its node's.
        let pod_ip = ok(
            &cluster,
            &[
                "get",
                "pod",
                "-n",
                "px",
                pod,
                "-o",
                "jsonpath={.status.podIP}",
            ],
        )
        .await;
        assert_ne!(Some(pod_ip.as_str()), cluster.node_ip(node));
        assert_eq!(
            env.trim(),
            format!("{node} {pod} px {pod_ip} hello {}", cgroup.display())
        );
        let container_id = ok(
            &cluster,
            &[
                "get",
                "pod",
                "-n",
                "px",
                pod,
                "-o",
                "jsonpath={.status.containerStatuses[0].containerID}",
            ],
        )
        .await;
        let container_id = container_id
            .strip_prefix("containerd://")
            .unwrap_or_else(|| panic!("{container_id:?} is not containerd's"));
        assert_eq!(container_id.len(), 64, "{container_id}");
        // In its container's cgroup, below its pod's and its node's, named as kubelet
        // names them.
        let uid = ok(
            &cluster,
            &[
                "get",
                "pod",
                "-n",
                "px",
                pod,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        )
        .await;
        let container_cgroup = cgroup.join(format!("pod{uid}")).join(container_id);
        let procs = std::fs::read_to_string(container_cgroup.join("cgroup.procs")).unwrap();
        let pid: i32 = procs.lines().next().unwrap().trim().parse().unwrap();
        assert!(
            cluster.node_pids(node).contains(&pid),
            "pid {pid} not in {}",
            cgroup.display()
        );
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            own.trim_end()
                .ends_with(&format!("/{node}/pod{uid}/{container_id}")),
            "{own}"
        );
    }

    // Kill node-b's PEM: the node agent restarts it and reports one restart.
    let pem_b = pods
        .iter()
        .find(|r| r[0].starts_with("vizier-pem-") && r[6] == "node-b")
        .unwrap()[0]
        .clone();
    let id = ok(
        &cluster,
        &[
            "get",
            "pod",
            "-n",
            "px",
            &pem_b,
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID}",
        ],
    )
    .await;
    let pid = cluster
        .container_pid("px", &pem_b)
        .await
        .unwrap()
        .to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let restarted = eventually(SETTLE, || async {
        let out = ok(&cluster, &["get", "pod", "-n", "px", &pem_b, "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready} {.status.containerStatuses[0].containerID}"]).await;
        (out.starts_with("1 true ") && !out.ends_with(&id)).then_some(out)
    })
    .await;
    assert!(restarted.is_some(), "no restart seen");
    let row = table(&ok(&cluster, &["get", "pod", "-n", "px", &pem_b]).await).remove(1);
    assert_eq!(row[1..4], ["1/1", "Running", "1"]);
    assert!(row[4].starts_with('('), "RESTARTS shows when: {row:?}");
    let last_exit = ok(
        &cluster,
        &[
            "get",
            "pod",
            "-n",
            "px",
            &pem_b,
            "-o",
            "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}",
        ],
    )
    .await;
    assert_eq!(last_exit, "137");
    // node-a's PEM was left alone.
    let pem_a_restarts = ok(
        &cluster,
        &[
            "get",
            "pods",
            "-n",
            "px",
            "-l",
            "app=pem",
            "--field-selector",
            "spec.nodeName=node-a",
            "-o",
            "jsonpath={.items[0].status.containerStatuses[0].restartCount}",
        ],
    )
    .await;
    assert_eq!(pem_a_restarts, "0");

    // Tear down through the API: pods go, their processes with them.
    ok(&cluster, &["delete", "namespace", "px"]).await;
    ok(&cluster, &["delete", "crd", "--all"]).await;
    let emptied = eventually(SETTLE, || async {
        (cluster.node_pids("node-a").is_empty() && cluster.node_pids("node-b").is_empty())
            .then_some(())
    })
    .await;
    assert!(
        emptied.is_some(),
        "processes left: {:?} {:?}",
        cluster.node_pids("node-a"),
        cluster.node_pids("node-b")
    );
    let out = cluster.kubectl(&["get", "pods", "-A"]).await.unwrap();
    assert_eq!(out.stderr, "No resources found\n");
    let dir = cluster.dir().to_path_buf();
    let server = cluster.server().to_string();
    let running = processes_mentioning(&dir.display().to_string());
    assert!(
        running.iter().any(|c| c.contains("kube-apiserver")),
        "the control plane runs from the cluster's directory: {running:?}"
    );
    cluster.stop().await;
    assert!(
        !cgroup_a.exists() && !cgroup_b.exists(),
        "cgroups left behind"
    );
    assert!(
        !cgroup_a.parent().unwrap().exists(),
        "cluster cgroup left behind"
    );
    assert!(!dir.exists(), "temporary directory left behind");
    // No component is left running, and its port is free again.
    let left = processes_mentioning(&dir.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let address = server.trim_start_matches("https://");
    assert!(
        std::net::TcpListener::bind(address).is_ok(),
        "{address} is still taken"
    );
}

/// The command lines of the processes whose arguments mention `text` (zombies apart).
fn processes_mentioning(text: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(text).then_some(cmdline)
        })
        .collect()
}

/// A cluster of one node, `n1`, with `image` mapped to the executable `path`.
async fn one_node_cluster(image: &str, path: &str) -> Cluster {
    let config = ClusterConfig {
        nodes: vec![NodeSpec::named("n1")],
        images: HashMap::from([(image.to_string(), PathBuf::from(path))]),
    };
    Cluster::start(config).await.unwrap()
}

#[tokio::test]
async fn dropping_the_cluster_kills_every_pod_process() {
    let cluster = one_node_cluster("sleeper", "/usr/bin/sleep").await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: sleeper\n    args: [\"1000\"]\n";
    assert!(apply(&cluster, pod).await.success());
    let pid = eventually(SETTLE, || async {
        cluster.node_pids("n1").first().copied()
    })
    .await
    .unwrap();
    let cgroup = cluster.node_cgroup("n1").unwrap().to_path_buf();
    drop(cluster);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z "),
        "process {pid} survived"
    );
    assert!(!cgroup.exists());
}

#[tokio::test]
async fn node_selectors_logs_exits_and_scaling() {
    let images = HashMap::from([
        ("shell".to_string(), PathBuf::from("/bin/sh")),
        ("sleeper".to_string(), PathBuf::from("/usr/bin/sleep")),
    ]);
    let edge = NodeSpec {
        name: "edge".to_string(),
        labels: [("role".to_string(), "edge".to_string())].into(),
    };
    let config = ClusterConfig {
        nodes: vec![edge, NodeSpec::named("core")],
        images,
    };
    let cluster = Cluster::start(config).await.unwrap();
    let daemonset = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: edge-only
spec:
  selector:
    matchLabels: {app: edge-only}
  template:
    metadata:
      labels: {app: edge-only}
    spec:
      nodeSelector: {role: edge}
      containers:
      - name: main
        image: shell
        command: ["sh", "-c", "echo started on $MY_NODE; exec sleep 1000"]
        env:
        - name: MY_NODE
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
"#;
    assert!(apply(&cluster, daemonset).await.success());
    let pod = eventually(SETTLE, || async {
        let rows = table(
            &ok(
                &cluster,
                &["get", "pods", "-l", "app=edge-only", "-o", "wide"],
            )
            .await,
        );
        (rows.len() == 2 && rows[1][2] == "Running").then(|| rows[1].clone())
    })
    .await
    .expect("one running pod");
    assert_eq!(pod[6], "edge");
    let logs = eventually(SETTLE, || async {
        let out = ok(&cluster, &["logs", &pod[0]]).await;
        (!out.is_empty()).then_some(out)
    })
    .await;
    assert_eq!(logs.as_deref(), Some("started on edge\n"));
    let ds = table(&ok(&cluster, &["get", "ds", "edge-only"]).await);
    assert_eq!(
        ds[1][..7],
        ["edge-only", "1", "1", "1", "1", "1", "role=edge"]
    );

    // A container that exits with restartPolicy Never is not restarted.
    let failing = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: once\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: shell\n    args: [\"-c\", \"exit 3\"]\n";
    assert!(apply(&cluster, failing).await.success());
    let row = eventually(SETTLE, || async {
        let rows = table(&ok(&cluster, &["get", "pod", "once"]).await);
        (rows[1][2] == "Error").then(|| rows[1].clone())
    })
    .await
    .expect("pod shown as Error");
    assert_eq!(row[1..4], ["0/1", "Error", "0"]);
    let phase = ok(
        &cluster,
        &[
            "get",
            "pod",
            "once",
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].state.terminated.exitCode}",
        ],
    )
    .await;
    assert_eq!(phase, "Failed 3");

    // An image nobody mapped cannot start.
    let unmapped = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nope\nspec:\n  containers:\n  - name: main\n    image: not/mapped\n";
    assert!(apply(&cluster, unmapped).await.success());
    let shown = eventually(SETTLE, || async {
        let rows = table(&ok(&cluster, &["get", "pod", "nope"]).await);
        (rows[1][2] == "ErrImagePull").then_some(())
    })
    .await;
    assert!(shown.is_some());

    // kubectl scale goes through the Deployment's scale subresource.
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: c\n        image: sleeper\n        args: [\"1000\"]\n";
    assert!(apply(&cluster, deployment).await.success());
    assert_eq!(
        ok(&cluster, &["scale", "deployment", "web", "--replicas=3"]).await,
        "deployment.apps/web scaled\n"
    );
    let ready = eventually(SETTLE, || async {
        let rows = table(&ok(&cluster, &["get", "deployment", "web"]).await);
        (rows[1][1] == "3/3").then_some(())
    })
    .await;
    assert!(ready.is_some(), "deployment not scaled to 3 ready pods");
    let status = ok(
        &cluster,
        &["rollout", "status", "deployment", "web", "--timeout=5s"],
    )
    .await;
    assert_eq!(status, "deployment \"web\" successfully rolled out\n");
    cluster.stop().await;
}

#[tokio::test]
async fn deleted_pods_get_sigterm_then_sigkill_after_the_grace_period() {
    let cluster = one_node_cluster("shell", "/bin/sh").await;
    let out_dir = cluster.dir().display().to_string();
    let pods = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: polite\nspec:\n  containers:\n  - name: main\n    image: shell\n    args: [\"-c\", \"trap 'echo terminated > {out_dir}/polite; exit 0' TERM; while true; do sleep 0.05; done\"]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: stubborn\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: shell\n    args: [\"-c\", \"trap '' TERM; exec sleep 1000\"]\n"
    );
    assert!(apply(&cluster, &pods).await.success());
    let pid = |name: &'static str| {
        let cluster = &cluster;
        async move {
            eventually(SETTLE, || cluster.container_pid("default", name))
                .await
                .unwrap()
        }
    };
    let (polite, stubborn) = (pid("polite").await, pid("stubborn").await);
    ok(&cluster, &["delete", "pod", "polite", "stubborn"]).await;
    let said = eventually(SETTLE, || async {
        std::fs::read_to_string(format!("{out_dir}/polite")).ok()
    })
    .await;
    assert_eq!(said.as_deref(), Some("terminated\n"));
    // The one that ignores SIGTERM is killed once its one-second grace period is over.
    let gone = eventually(SETTLE, || async {
        (!cluster.node_pids("n1").contains(&stubborn)).then_some(())
    })
    .await;
    assert!(gone.is_some(), "pid {stubborn} still in the node cgroup");
    assert!(!cluster.node_pids("n1").contains(&polite));
    cluster.stop().await;
}

#[tokio::test]
async fn secret_and_config_map_keys_reach_the_environment_once_they_exist() {
    let cluster = one_node_cluster("sleep", "/usr/bin/sleep").await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: keyed\nspec:\n  containers:\n  - name: main\n    image: sleep\n    args: [\"1000\"]\n    env:\n    - name: API_KEY\n      valueFrom: {secretKeyRef: {name: creds, key: key}}\n    - name: MODE\n      valueFrom: {configMapKeyRef: {name: settings, key: mode}}\n    - name: UNSET\n      valueFrom: {secretKeyRef: {name: absent, key: key, optional: true}}\n    - name: DERIVED\n      value: \"$(API_KEY)-$(MODE)\"\n";
    assert!(apply(&cluster, pod).await.success());
    let waiting = |want: &'static str| {
        let cluster = &cluster;
        async move {
            eventually(SETTLE, || async {
                let w = ok(
                    cluster,
                    &[
                        "get",
                        "pod",
                        "keyed",
                        "-o",
                        "jsonpath={.status.phase} {.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}",
                    ],
                )
                .await;
                w.contains(want).then_some(w)
            })
            .await
        }
    };
    let why = waiting("secret \"creds\" not found").await;
    assert_eq!(
        why.as_deref(),
        Some("Pending CreateContainerConfigError: secret \"creds\" not found")
    );
    ok(
        &cluster,
        &[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=key=s3cr3t",
        ],
    )
    .await;
    // Retried by the node agent: now the ConfigMap is what is missing.
    let why = waiting("configmap").await;
    assert!(why.is_some(), "the container was not retried");
    ok(
        &cluster,
        &[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
        ],
    )
    .await;
    let env = eventually(SETTLE, || async {
        let env = cluster.container_env("default", "keyed").await;
        (!env.is_empty()).then_some(env)
    })
    .await
    .expect("the container never started");
    for expected in ["API_KEY=s3cr3t", "MODE=fast", "DERIVED=s3cr3t-fast"] {
        assert!(env.iter().any(|e| e == expected), "{expected}: {env:?}");
    }
    assert!(!env.iter().any(|e| e.starts_with("UNSET=")), "{env:?}");
    cluster.stop().await;
}

#[tokio::test]
async fn cgroups_left_by_a_dead_test_process_are_swept() {
    let config = || ClusterConfig {
        nodes: vec![NodeSpec::named("n")],
        ..ClusterConfig::default()
    };
    let first = Cluster::start(config()).await.unwrap();
    let root = first
        .node_cgroup("n")
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    first.stop().await;
    // What a test killed with SIGKILL leaves: a cluster cgroup named after a pid that is
    // gone (above pid_max here), with a process still in it.
    let stale = root.join("px-e2e-4000000000-0-0");
    let node = stale.join("n");
    std::fs::create_dir_all(&node).unwrap();
    let mut orphan = tokio::process::Command::new("/usr/bin/sleep")
        .arg("1000")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    std::fs::write(node.join("cgroup.procs"), orphan.id().unwrap().to_string()).unwrap();

    let second = Cluster::start(config()).await.unwrap();
    assert!(!stale.exists(), "stale cgroup not removed");
    let status = tokio::time::timeout(SETTLE, orphan.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the orphan was not killed: {status:?}");
    second.stop().await;
}

#[tokio::test]
async fn logs_follow_a_running_container() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let images = HashMap::from([("shell".to_string(), PathBuf::from("/bin/sh"))]);
    let config = ClusterConfig {
        nodes: vec![NodeSpec::named("n")],
        images,
    };
    let cluster = Cluster::start(config).await.unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: talker\nspec:\n  containers:\n  - name: main\n    image: shell\n    args: [\"-c\", \"i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done\"]\n";
    assert!(apply(&cluster, pod).await.success());
    let running = eventually(SETTLE, || async {
        let phase = ok(
            &cluster,
            &["get", "pod", "talker", "-o", "jsonpath={.status.phase}"],
        )
        .await;
        (phase == "Running").then_some(())
    })
    .await;
    assert!(running.is_some());
    let mut follower = cluster.kubectl_spawn(&["logs", "-f", "talker"]).unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(SETTLE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, "line 1");
    // Everything past what the log holds now can only reach us by following it.
    let written_so_far = ok(&cluster, &["logs", "talker"]).await.lines().count() as u64;
    let mut last = 1;
    while last <= written_so_far + 5 {
        let line = tokio::time::timeout(SETTLE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let n: u64 = line.trim_start_matches("line ").parse().unwrap();
        assert_eq!(n, last + 1, "lines arrive in order, none lost");
        last = n;
    }
    follower.kill().await.unwrap();
    cluster.stop().await;
}

#[tokio::test]
async fn a_node_that_stops_heartbeating_goes_not_ready_and_comes_back() {
    let config = ClusterConfig {
        nodes: vec![NodeSpec::named("steady"), NodeSpec::named("flaky")],
        images: HashMap::from([("sleeper".to_string(), PathBuf::from("/usr/bin/sleep"))]),
    };
    let cluster = Cluster::start(config).await.unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  nodeName: flaky\n  containers:\n  - name: c\n    image: sleeper\n    args: [\"1000\"]\n";
    assert!(apply(&cluster, pod).await.success());
    let ready = |want: &'static str| {
        let cluster = &cluster;
        async move {
            eventually(Duration::from_secs(60), || async {
                let out = ok(
                    cluster,
                    &[
                        "get",
                        "pod",
                        "p",
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ],
                )
                .await;
                (out == want).then_some(())
            })
            .await
        }
    };
    assert!(ready("True").await.is_some(), "the pod never became ready");

    // The kubelet goes silent: the node lifecycle controller marks the node NotReady
    // (Unknown) once its Lease is older than the grace period, taints it unreachable and
    // marks its pods not ready. The pod's process keeps running.
    cluster.set_node_heartbeat("flaky", false);
    let lost = eventually(Duration::from_secs(60), || async {
        let rows = table(&ok(&cluster, &["get", "nodes"]).await);
        rows.iter()
            .any(|r| r[0] == "flaky" && r[1] == "NotReady")
            .then_some(rows)
    })
    .await
    .expect("the silent node never went NotReady");
    assert!(
        lost.iter().any(|r| r[0] == "steady" && r[1] == "Ready"),
        "{lost:?}"
    );
    let taints = || {
        ok(
            &cluster,
            &[
                "get",
                "node",
                "flaky",
                "-o",
                "jsonpath={.spec.taints[*].key}",
            ],
        )
    };
    let tainted = taints().await;
    assert!(
        tainted.contains("node.kubernetes.io/unreachable"),
        "{tainted}"
    );
    let reason = ok(
        &cluster,
        &[
            "get",
            "node",
            "flaky",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ],
    )
    .await;
    assert_eq!(reason, "NodeStatusUnknown");
    assert!(
        ready("False").await.is_some(),
        "the pod stayed ready on a lost node"
    );
    assert!(!cluster.node_pids("flaky").is_empty());

    // It comes back: Ready again, untainted, and its pod ready again.
    cluster.set_node_heartbeat("flaky", true);
    let back = eventually(Duration::from_secs(60), || async {
        let rows = table(&ok(&cluster, &["get", "nodes"]).await);
        rows.iter()
            .any(|r| r[0] == "flaky" && r[1] == "Ready")
            .then_some(())
    })
    .await;
    assert!(back.is_some(), "the node did not come back");
    let untainted = eventually(Duration::from_secs(60), || async {
        (!taints().await.contains("unreachable")).then_some(())
    })
    .await;
    assert!(untainted.is_some(), "the unreachable taint stayed");
    assert!(
        ready("True").await.is_some(),
        "the pod did not become ready again"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn readiness_probes_decide_readiness() {
    let cluster = one_node_cluster("shell", "/bin/sh").await;
    let flag = cluster.dir().join("ready-flag");
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: probed\nspec:\n  containers:\n  - name: main\n    image: shell\n    args: [\"-c\", \"exec sleep 1000\"]\n    readinessProbe:\n      exec:\n        command: [\"test\", \"-e\", \"{}\"]\n      periodSeconds: 1\n      failureThreshold: 1\n",
        flag.display()
    );
    assert!(apply(&cluster, &pod).await.success());
    let state = |want: &'static str| {
        let cluster = &cluster;
        async move {
            eventually(SETTLE, || async {
                let rows = table(&ok(cluster, &["get", "pod", "probed"]).await);
                (rows.len() == 2 && rows[1][1] == want && rows[1][2] == "Running").then_some(())
            })
            .await
        }
    };
    assert!(
        state("0/1").await.is_some(),
        "running but not ready while the probe fails"
    );
    std::fs::write(&flag, "").unwrap();
    assert!(state("1/1").await.is_some(), "ready once the probe passes");
    std::fs::remove_file(&flag).unwrap();
    assert!(state("0/1").await.is_some(), "unready again once it fails");
    cluster.stop().await;
}
