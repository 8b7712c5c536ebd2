//! The test harness: an emulator (and, with [`ClusterConfig::nodes`], simulated nodes) in
//! a private temporary directory, with a kubeconfig and a `kubectl` runner for it.
//! Dropping or stopping the [`Cluster`] ends every process and removes what it created.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::Error;
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

/// A running emulator for one test, with a kubeconfig and kubectl.
pub struct Cluster {
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
        Ok(Self {
            emulator: Some(emulator),
            kubeconfig,
            cache_dir: dir.path().join("kube-cache"),
            dir,
        })
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

    /// Stops everything and removes the temporary directory.
    pub async fn stop(mut self) {
        if let Some(e) = self.emulator.take() {
            e.stop().await;
        }
    }
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
