//! The test harness: a real control plane (and, with [`ClusterConfig::nodes`], simulated
//! nodes) in a private temporary directory, with an admin kubeconfig, a `kubectl`
//! runner, and credentials for any identity a test acts as. Dropping or stopping the
//! [`Cluster`] ends every process and removes what it created.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use tokio::process::{Child, Command};

use crate::cgroup::ClusterCgroup;
use crate::control_plane::{ControlPlane, Credentials, write_kubeconfig};
use crate::error::Error;
use crate::kubelet::{NodeAgent, NodeContext, NodeCredentials, NodeSpec, ServerIdentity};

/// What a kubectl run printed and how it ended.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl KubectlOutput {
    /// Whether kubectl exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// How to set up a test cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// Simulated nodes; each gets a Node object, a kubelet and a cgroup.
    pub nodes: Vec<NodeSpec>,
    /// Container image (`name` or `name:tag`) to the local executable that runs it.
    pub images: HashMap<String, PathBuf>,
}

/// A private directory removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Result<Self, Error> {
        Self::new_in(None, prefix)
    }

    /// A new directory under `parent` (the system's temporary directory if `None`).
    pub(crate) fn new_in(parent: Option<&Path>, prefix: &str) -> Result<Self, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let path = parent.join(format!(
            "{prefix}-{}-{n}-{}",
            std::process::id(),
            crate::time::now_secs()
        ));
        std::fs::create_dir_all(&path).map_err(|source| Error::WriteFile {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // PX_E2E_KEEP=1 keeps the logs of the control plane and the pods, to debug.
        if std::env::var_os("PX_E2E_KEEP").is_some() {
            eprintln!("px-e2e: kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The loopback address of the control plane of cluster `number`: 127.P.C.254, beside
/// its nodes' 127.P.C.N (see [`crate::kubelet`]), so no port of it can clash with
/// another cluster's.
fn control_plane_ip(number: u64) -> Ipv4Addr {
    let process = u8::try_from(std::process::id() % 250 + 1).unwrap_or(1);
    let cluster = u8::try_from(number % 256).unwrap_or(0);
    Ipv4Addr::new(127, process, cluster, 254)
}

/// A running control plane and its simulated nodes for one test, with kubeconfigs and
/// kubectl.
pub struct Cluster {
    agents: BTreeMap<String, NodeAgent>,
    cgroup: Option<ClusterCgroup>,
    node_cgroups: BTreeMap<String, PathBuf>,
    node_ips: BTreeMap<String, String>,
    plane: Option<ControlPlane>,
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
    dir: TempDir,
}

impl Cluster {
    /// Starts etcd, the API server, the controller-manager and the scheduler, then the
    /// simulated nodes, in a fresh temporary directory; returns once the control plane
    /// is ready and every node is registered.
    pub async fn start(config: ClusterConfig) -> Result<Self, Error> {
        Self::start_plane(config, false).await
    }

    /// Like [`Cluster::start`], for Node objects that no kubelet keeps alive (a
    /// simulation of many nodes): the controllers that act on silent nodes (node
    /// lifecycle, pod garbage collection) do not run, so those nodes and the pods bound
    /// to them stay as the test writes them.
    pub async fn start_for_static_nodes(config: ClusterConfig) -> Result<Self, Error> {
        Self::start_plane(config, true).await
    }

    async fn start_plane(config: ClusterConfig, static_nodes: bool) -> Result<Self, Error> {
        static CLUSTERS: AtomicU64 = AtomicU64::new(0);
        let number = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let dir = TempDir::new("px-e2e")?;
        let plane = ControlPlane::start(control_plane_ip(number), dir.path(), static_nodes).await?;
        let mut cluster = Self {
            agents: BTreeMap::new(),
            cgroup: None,
            node_cgroups: BTreeMap::new(),
            node_ips: BTreeMap::new(),
            kubeconfig: plane.admin_kubeconfig.clone(),
            plane: Some(plane),
            cache_dir: dir.path().join("kube-cache"),
            dir,
        };
        if !config.nodes.is_empty() {
            let name = dir_name(cluster.dir.path());
            let mut cgroup = ClusterCgroup::create(&name, cluster.dir.path())?;
            let images = Arc::new(config.images);
            let pod_ips = Arc::new(crate::kubelet::PodIps::for_cluster(number));
            for (index, spec) in config.nodes.iter().enumerate() {
                let ip_addr =
                    crate::kubelet::node_ip(number, index).ok_or_else(|| Error::Refused {
                        what: format!("node {}", spec.name),
                        message: "at most 253 nodes per cluster".into(),
                    })?;
                let ip = ip_addr.to_string();
                let node_dir = cluster.dir.path().join("nodes").join(&spec.name);
                std::fs::create_dir_all(&node_dir).map_err(|source| Error::WriteFile {
                    path: node_dir.clone(),
                    source,
                })?;
                let cgroup_dir = cgroup.add_node(&spec.name)?;
                cluster
                    .node_cgroups
                    .insert(spec.name.clone(), cgroup_dir.clone());
                cluster.node_ips.insert(spec.name.clone(), ip.clone());
                let plane = cluster.plane();
                // The node's own identity, as a kubelet's client certificate has it.
                let node_kubeconfig = node_dir.join("kubelet.kubeconfig");
                let cert = plane
                    .pki
                    .client(&format!("system:node:{}", spec.name), Some("system:nodes"))?;
                write_kubeconfig(
                    &node_kubeconfig,
                    &plane.server,
                    plane.pki.ca_pem(),
                    &spec.name,
                    Credentials::Certificate(&cert),
                )?;
                let (heartbeat, online) = tokio::sync::watch::channel(true);
                let ctx = NodeContext {
                    client: crate::control_plane::client(&node_kubeconfig).await?,
                    name: spec.name.clone(),
                    ip,
                    cgroup: cgroup_dir,
                    images: Arc::clone(&images),
                    dir: node_dir,
                    server: plane.server.clone(),
                    ca_pem: plane.pki.ca_pem().to_string(),
                    online,
                    pod_ips: Arc::clone(&pod_ips),
                };
                let serving = plane.pki.serving(
                    &spec.name,
                    &[std::net::IpAddr::V4(ip_addr)],
                    &[&spec.name],
                )?;
                let credentials = NodeCredentials {
                    serving: ServerIdentity {
                        cert: serving.cert_der,
                        key: serving.key_der,
                        ca: plane.pki.ca_der().to_vec(),
                    },
                };
                let agent = NodeAgent::start(ctx, spec, credentials, heartbeat).await?;
                cluster.agents.insert(spec.name.clone(), agent);
            }
            cluster.cgroup = Some(cgroup);
        }
        Ok(cluster)
    }

    fn plane(&self) -> &ControlPlane {
        // Only `stop` takes the control plane out, and it consumes the cluster.
        match &self.plane {
            Some(p) => p,
            None => unreachable!("the control plane is present until stop"),
        }
    }

    /// A client acting as the cluster's admin (group `system:masters`).
    pub fn client(&self) -> kube::Client {
        self.plane().admin.clone()
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.plane().server
    }

    /// The API server's audit events for requests made as `user` (e.g.
    /// `system:serviceaccount:px-system:px-operator`): every request of the tests' own
    /// identities is audited once, with its verb, resource and response code.
    pub fn audit_events(&self, user: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.plane().audit_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e.pointer("/user/username").and_then(|u| u.as_str()) == Some(user))
            .collect()
    }

    /// Where the control plane's components write their logs (`<component>.log`).
    pub fn logs_dir(&self) -> &Path {
        self.plane().dir()
    }

    /// The absolute path of a simulated node's cgroup v2 directory (what the node's
    /// processes get as `PX_PEM_CGROUP`).
    pub fn node_cgroup(&self, node: &str) -> Option<&Path> {
        self.node_cgroups.get(node).map(PathBuf::as_path)
    }

    /// A simulated node's loopback address (its InternalIP and its pods' IPs).
    pub fn node_ip(&self, node: &str) -> Option<&str> {
        self.node_ips.get(node).map(String::as_str)
    }

    /// The pids currently in a node's cgroup.
    pub fn node_pids(&self, node: &str) -> Vec<i32> {
        self.node_cgroup(node)
            .map(crate::cgroup::pids)
            .unwrap_or_default()
    }

    /// Stops (`false`) or resumes (`true`) a node's heartbeats (its Lease and status),
    /// as when a node loses touch with the API server; its pods keep running.
    pub fn set_node_heartbeat(&self, node: &str, on: bool) {
        if let Some(agent) = self.agents.get(node) {
            agent.set_heartbeat(on);
        }
    }

    /// The first process of a pod's first container (found in the container's cgroup,
    /// `<node>/pod<uid>/<container id>`); none while it is not running.
    pub async fn container_pid(&self, namespace: &str, pod: &str) -> Option<i32> {
        let pod = Api::<Pod>::namespaced(self.client(), namespace)
            .get_opt(pod)
            .await
            .ok()
            .flatten()?;
        let uid = pod.metadata.uid.clone()?;
        let node = pod.spec.as_ref()?.node_name.clone()?;
        let id = pod
            .status?
            .container_statuses?
            .into_iter()
            .next()?
            .container_id?;
        let id = id.strip_prefix("containerd://")?;
        let dir = self
            .node_cgroups
            .get(&node)?
            .join(format!("pod{uid}"))
            .join(id);
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
        procs.lines().next()?.trim().parse().ok()
    }

    /// The environment the process of a pod's first container runs with, as `NAME=value`
    /// entries (its `/proc/<pid>/environ`); empty while the pod or its container is not
    /// running.
    pub async fn container_env(&self, namespace: &str, pod: &str) -> Vec<String> {
        let pid = self.container_pid(namespace, pod).await;
        let raw = pid
            .and_then(|pid| std::fs::read(format!("/proc/{pid}/environ")).ok())
            .unwrap_or_default();
        raw.split(|b| *b == 0)
            .filter(|e| !e.is_empty())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect()
    }

    /// The admin kubeconfig file for this cluster.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster's private temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A token of ServiceAccount `namespace/name`, from the TokenRequest API (valid for
    /// an hour), so a test can act as that identity.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<String, Error> {
        let request = crate::kubelet::token_request(None);
        let response = Api::<ServiceAccount>::namespaced(self.client(), namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|e| Error::Refused {
                what: format!("a token for service account {namespace}/{name}"),
                message: e.to_string(),
            })?;
        Ok(response.status.and_then(|s| s.token).unwrap_or_default())
    }

    /// A kubeconfig (in the cluster's directory) that acts as ServiceAccount
    /// `namespace/name`.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, Error> {
        let token = self.service_account_token(namespace, name).await?;
        let path = self.dir().join(format!("sa-{namespace}-{name}.kubeconfig"));
        let plane = self.plane();
        write_kubeconfig(
            &path,
            &plane.server,
            plane.pki.ca_pem(),
            &format!("system:serviceaccount:{namespace}:{name}"),
            Credentials::Token(&token),
        )?;
        Ok(path)
    }

    /// A kubeconfig (in the cluster's directory) that acts as user `user`, in `group`
    /// if given, with a client certificate from the cluster's CA: a person with no
    /// permission but those RBAC grants that user or group.
    pub fn user_kubeconfig(&self, user: &str, group: Option<&str>) -> Result<PathBuf, Error> {
        let plane = self.plane();
        let cert = plane.pki.client(user, group)?;
        let path = self.dir().join(format!("user-{user}.kubeconfig"));
        write_kubeconfig(
            &path,
            &plane.server,
            plane.pki.ca_pem(),
            user,
            Credentials::Certificate(&cert),
        )?;
        Ok(path)
    }

    /// A client for a kubeconfig (one of [`Self::user_kubeconfig`],
    /// [`Self::service_account_kubeconfig`]).
    pub async fn client_for(&self, kubeconfig: &Path) -> Result<kube::Client, Error> {
        crate::control_plane::client(kubeconfig).await
    }

    /// A `kubectl` command pointed at this cluster as admin, with a private discovery
    /// cache.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        self.kubectl_command_as(&self.kubeconfig, args)
    }

    /// A `kubectl` command acting with `kubeconfig`.
    pub fn kubectl_command_as(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl (as admin) to completion.
    pub async fn kubectl(&self, args: &[&str]) -> Result<KubectlOutput, Error> {
        self.kubectl_stdin(args, None).await
    }

    /// Runs kubectl (as admin) with `stdin` as its input (for `apply -f -`).
    pub async fn kubectl_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<KubectlOutput, Error> {
        run_kubectl(self.kubectl_command(args), stdin).await
    }

    /// Runs kubectl acting with `kubeconfig`, with `stdin` as its input if given.
    pub async fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<KubectlOutput, Error> {
        run_kubectl(self.kubectl_command_as(kubeconfig, args), stdin).await
    }

    /// Starts kubectl without waiting (for `get -w`); it is killed when dropped.
    pub fn kubectl_spawn(&self, args: &[&str]) -> Result<Child, Error> {
        self.kubectl_command(args)
            .spawn()
            .map_err(|source| Error::Kubectl { source })
    }

    /// Stops the nodes (killing every pod process), removes the cgroups, stops the
    /// control plane and removes the temporary directory.
    pub async fn stop(mut self) {
        let agents = std::mem::take(&mut self.agents);
        for agent in agents.into_values() {
            agent.stop().await;
        }
        if let Some(mut cgroup) = self.cgroup.take() {
            cgroup.remove();
        }
        if let Some(plane) = self.plane.take() {
            plane.stop().await;
        }
    }
}

async fn run_kubectl(mut cmd: Command, stdin: Option<&str>) -> Result<KubectlOutput, Error> {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|source| Error::Kubectl { source })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|source| Error::Kubectl { source })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| Error::Kubectl { source })?;
    Ok(KubectlOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Aborted agents kill their process groups; the cgroup kill catches the rest,
        // including anything a container started in a new process group. The control
        // plane's processes are killed when it drops.
        self.agents.clear();
        if let Some(mut cgroup) = self.cgroup.take() {
            cgroup.remove();
        }
    }
}

fn dir_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "px-e2e".to_string())
}

/// Polls `check` every 50 ms until it returns `Some`, or gives up after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
