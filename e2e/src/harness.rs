//! The test harness: an emulator (and, with [`ClusterConfig::nodes`], simulated nodes) in
//! a private temporary directory, with a kubeconfig and a `kubectl` runner for it.
//! Dropping or stopping the [`Cluster`] ends every process and removes what it created.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::cgroup::ClusterCgroup;
use crate::error::Error;
use crate::node::{NodeAgent, NodeContext, NodeSpec};
use crate::server::{Emulator, EmulatorConfig};

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
    /// Emulator settings.
    pub emulator: EmulatorConfig,
    /// Simulated nodes; each gets a Node object, an agent and a cgroup.
    pub nodes: Vec<NodeSpec>,
    /// Container image (`name` or `name:tag`) to the local executable that runs it.
    pub images: HashMap<String, PathBuf>,
}

/// A private directory removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Result<Self, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
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
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running emulator and its simulated nodes for one test, with a kubeconfig and kubectl.
pub struct Cluster {
    agents: Vec<NodeAgent>,
    cgroup: Option<ClusterCgroup>,
    node_cgroups: BTreeMap<String, PathBuf>,
    node_ips: BTreeMap<String, String>,
    emulator: Option<Emulator>,
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
    dir: TempDir,
}

impl Cluster {
    /// Starts the emulator and writes its kubeconfig into a fresh temporary directory.
    pub async fn start(config: ClusterConfig) -> Result<Self, Error> {
        let dir = TempDir::new("px-e2e")?;
        let emulator = Emulator::start(config.emulator).await?;
        let kubeconfig = dir.path().join("kubeconfig");
        emulator.write_kubeconfig(&kubeconfig)?;
        let mut cluster = Self {
            agents: Vec::new(),
            cgroup: None,
            node_cgroups: BTreeMap::new(),
            node_ips: BTreeMap::new(),
            emulator: Some(emulator),
            kubeconfig,
            cache_dir: dir.path().join("kube-cache"),
            dir,
        };
        if !config.nodes.is_empty() {
            let name = dir_name(cluster.dir.path());
            let mut cgroup = ClusterCgroup::create(&name, cluster.dir.path())?;
            let images = Arc::new(config.images);
            static CLUSTERS: AtomicU64 = AtomicU64::new(0);
            let number = CLUSTERS.fetch_add(1, Ordering::Relaxed);
            for (index, spec) in config.nodes.iter().enumerate() {
                let ip = crate::node::node_ip(number, index)
                    .ok_or_else(|| Error::Refused {
                        what: format!("node {}", spec.name),
                        message: "at most 254 nodes per cluster".into(),
                    })?
                    .to_string();
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
                let ctx = NodeContext {
                    shared: Arc::clone(cluster.emulator().shared()),
                    name: spec.name.clone(),
                    ip,
                    cgroup: cgroup_dir,
                    images: Arc::clone(&images),
                    kubeconfig: cluster.kubeconfig.clone(),
                    dir: node_dir,
                };
                cluster.agents.push(NodeAgent::start(ctx, spec)?);
            }
            cluster.cgroup = Some(cgroup);
        }
        Ok(cluster)
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

    /// The environment the process of a pod's first container runs with, as `NAME=value`
    /// entries (`/proc/<pid>/environ`: the container id `px-e2e://<pid>` names the
    /// process); empty while the pod or its container is not running.
    pub fn container_env(&self, namespace: &str, pod: &str) -> Vec<String> {
        let pid = {
            let store = self.emulator().shared().lock();
            store
                .resource("", "v1", "pods")
                .and_then(|res| store.get(&res, "v1", namespace, pod).ok())
                .and_then(|p| {
                    p.pointer("/status/containerStatuses/0/containerID")?
                        .as_str()?
                        .strip_prefix("px-e2e://")?
                        .parse::<i32>()
                        .ok()
                })
        };
        let raw = pid
            .and_then(|pid| std::fs::read(format!("/proc/{pid}/environ")).ok())
            .unwrap_or_default();
        raw.split(|b| *b == 0)
            .filter(|e| !e.is_empty())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect()
    }

    /// The kubeconfig file for this cluster.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster's private temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The emulator itself (for test hooks such as [`Emulator::compact`]).
    pub fn emulator(&self) -> &Emulator {
        // Only `stop` takes the emulator out, and it consumes the cluster.
        match &self.emulator {
            Some(e) => e,
            None => unreachable!("the emulator is present until stop"),
        }
    }

    /// A `kubectl` command pointed at this cluster, with a private discovery cache.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl to completion.
    pub async fn kubectl(&self, args: &[&str]) -> Result<KubectlOutput, Error> {
        self.kubectl_stdin(args, None).await
    }

    /// Runs kubectl with `stdin` as its input (for `apply -f -`).
    pub async fn kubectl_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<KubectlOutput, Error> {
        let mut cmd = self.kubectl_command(args);
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

    /// Starts kubectl without waiting (for `get -w`); it is killed when dropped.
    pub fn kubectl_spawn(&self, args: &[&str]) -> Result<Child, Error> {
        self.kubectl_command(args)
            .spawn()
            .map_err(|source| Error::Kubectl { source })
    }

    /// Stops the nodes (killing every pod process), removes the cgroups, stops the
    /// emulator and removes the temporary directory.
    pub async fn stop(mut self) {
        for agent in self.agents.drain(..) {
            agent.stop().await;
        }
        if let Some(mut cgroup) = self.cgroup.take() {
            cgroup.remove();
        }
        if let Some(e) = self.emulator.take() {
            e.stop().await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Aborted agents kill their process groups; the cgroup kill catches the rest,
        // including anything a container started in a new process group.
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
