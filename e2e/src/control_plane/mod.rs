//! The real control plane: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler, built from their Go modules (`e2e/control-plane/`), run as child
//! processes on one loopback address of their own, with TLS, client-certificate
//! authentication, RBAC and Node authorization, service-account tokens and the default
//! admission plugins (plus NodeRestriction, as kubeadm enables it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::Error;

mod kubeconfig;
mod pki;

pub(crate) use kubeconfig::{Credentials, client, write_kubeconfig};
pub(crate) use pki::Pki;

/// The Service CIDR (the `kubernetes` Service gets its first address).
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// How long the API server may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A node is marked unready this long after its last heartbeat (kubelet's default is
/// 40 s; shorter here so a test of a silent node is quick).
pub(crate) const NODE_GRACE: Duration = Duration::from_secs(8);

/// The directory with the four binaries, built on first use by
/// `e2e/control-plane/build.sh` (once per machine: it caches them).
fn binaries() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PX_E2E_CONTROL_PLANE") {
            return Ok(PathBuf::from(dir));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("control-plane/build.sh");
        let out = std::process::Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!("{} failed ({})", script.display(), out.status));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    dir.clone().map_err(|message| Error::ControlPlane {
        component: "build".into(),
        message,
    })
}

/// A port nobody listens on at `ip` now (the address is this cluster's own, so nothing
/// else races for it).
fn free_port(ip: Ipv4Addr) -> Result<u16, Error> {
    std::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| Error::Bind { source })
}

/// One component's process; killed when dropped.
struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Component {
    fn spawn(name: &'static str, bin: &Path, args: &[String], dir: &Path) -> Result<Self, Error> {
        let log = dir.join(format!("{name}.log"));
        let file = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| Error::WriteFile {
                    path: p.to_path_buf(),
                    source,
                })
        };
        let (out, err) = (file(&log)?, file(&log)?);
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        // SAFETY: prctl(2) in the forked child before exec: no memory is shared. The
        // component dies with the thread that started it, so a test process killed
        // before it cleans up leaves no control plane behind.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| Error::ControlPlane {
            component: name.into(),
            message: format!("starting {}: {e}", bin.display()),
        })?;
        Ok(Self { name, child, log })
    }

    /// An error naming the component, with the end of its log.
    fn failure(&self, message: &str) -> Error {
        Error::ControlPlane {
            component: self.name.into(),
            message: format!(
                "{message}; the end of {}:\n{}",
                self.log.display(),
                tail(&self.log)
            ),
        }
    }

    fn check_running(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(self.failure(&format!("exited ({status})"))),
            _ => Ok(()),
        }
    }
}

/// The last 30 lines of a log.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Requests of the control plane's own components and of the nodes are not audited;
/// everyone else's are, once each, at the Metadata level (who, what, the answer's code).
const AUDIT_POLICY: &str = r#"{
  "apiVersion": "audit.k8s.io/v1",
  "kind": "Policy",
  "omitStages": ["RequestReceived", "ResponseStarted"],
  "rules": [
    {"level": "None", "users": ["system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"]},
    {"level": "None", "userGroups": ["system:nodes", "system:serviceaccounts:kube-system"]},
    {"level": "Metadata"}
  ]
}"#;

/// A running control plane. Dropping it kills every component.
pub(crate) struct ControlPlane {
    components: Vec<Component>,
    pub(crate) pki: Pki,
    /// `https://<ip>:<port>` of the API server.
    pub(crate) server: String,
    /// The admin kubeconfig (group `system:masters`).
    pub(crate) admin_kubeconfig: PathBuf,
    pub(crate) admin: kube::Client,
    dir: PathBuf,
    _etcd_data: crate::harness::TempDir,
}

impl ControlPlane {
    /// Starts etcd, the API server, then the controller-manager and the scheduler, on
    /// `ip`, with their files under `dir`; returns once the API server is ready and the
    /// controllers have created the `default` ServiceAccount. With `static_nodes`, the
    /// node lifecycle and pod garbage collection controllers are off.
    pub(crate) async fn start(ip: Ipv4Addr, dir: &Path, static_nodes: bool) -> Result<Self, Error> {
        // Runs the build script (a hash check once built): blocking work, off the runtime.
        let bin =
            tokio::task::spawn_blocking(binaries)
                .await
                .map_err(|e| Error::ControlPlane {
                    component: "build".into(),
                    message: e.to_string(),
                })??;
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir).map_err(|source| Error::WriteFile {
            path: pki_dir.clone(),
            source,
        })?;
        let pki = Pki::create(&pki_dir)?;
        let ip_addr = IpAddr::V4(ip);
        let serving = pki.serving(
            "kube-apiserver",
            &[ip_addr, IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1))],
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        let file = |name: &str, contents: &str| -> Result<String, Error> {
            let path = pki_dir.join(name);
            pki::write(&path, contents)?;
            Ok(path.display().to_string())
        };
        let tls_cert = file("apiserver.crt", &serving.cert)?;
        let tls_key = file("apiserver.key", &serving.key)?;
        // How the API server authenticates to the kubelets (for logs), as kubeadm sets it.
        let kubelet_client = pki.client("kube-apiserver-kubelet-client", Some("system:masters"))?;
        let kubelet_cert = file("apiserver-kubelet-client.crt", &kubelet_client.cert)?;
        let kubelet_key = file("apiserver-kubelet-client.key", &kubelet_client.key)?;
        let ca = pki.ca_file.display().to_string();
        let sa_key = pki.service_account_key_file.display().to_string();
        let sa_pub = pki.service_account_public_key_file.display().to_string();

        // etcd's data lives in memory where it can: it is thrown away with the cluster.
        let etcd_data = crate::harness::TempDir::new_in(
            Path::new("/dev/shm")
                .is_dir()
                .then_some(Path::new("/dev/shm")),
            "px-e2e-etcd",
        )?;
        let (etcd_client, etcd_peer) = (free_port(ip)?, free_port(ip)?);
        let client_url = format!("http://{ip}:{etcd_client}");
        let peer_url = format!("http://{ip}:{etcd_peer}");
        let etcd = Component::spawn(
            "etcd",
            &bin.join("etcd"),
            &[
                "--name=px-e2e".into(),
                format!("--data-dir={}", etcd_data.path().display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=px-e2e={peer_url}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            dir,
        )?;

        let port = free_port(ip)?;
        let server = format!("https://{ip}:{port}");
        // An audit log of what the tests' own identities do (the operator's
        // ServiceAccount among them), for tests that check which requests were refused.
        let audit_policy = dir.join("audit-policy.yaml");
        pki::write(&audit_policy, AUDIT_POLICY)?;
        let audit_log = dir.join("audit.log");
        let apiserver = Component::spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={client_url}"),
                format!("--bind-address={ip}"),
                format!("--advertise-address={ip}"),
                format!("--secure-port={port}"),
                format!("--tls-cert-file={tls_cert}"),
                format!("--tls-private-key-file={tls_key}"),
                format!("--client-ca-file={ca}"),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={sa_pub}"),
                format!("--service-account-signing-key-file={sa_key}"),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                // The endpoints of the `kubernetes` Service would be this loopback
                // address, which Endpoints refuse; nothing here routes to them anyway.
                "--endpoint-reconciler-type=none".into(),
                "--allow-privileged=true".into(),
                format!("--kubelet-client-certificate={kubelet_cert}"),
                format!("--kubelet-client-key={kubelet_key}"),
                format!("--kubelet-certificate-authority={ca}"),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--profiling=false".into(),
                format!("--cert-dir={}", pki_dir.display()),
                format!("--audit-policy-file={}", audit_policy.display()),
                format!("--audit-log-path={}", audit_log.display()),
                "--audit-log-format=json".into(),
            ],
            dir,
        )?;
        let mut components = vec![etcd, apiserver];

        let admin_kubeconfig = dir.join("kubeconfig");
        let admin_cert = pki.client("px-e2e-admin", Some("system:masters"))?;
        write_kubeconfig(
            &admin_kubeconfig,
            &server,
            pki.ca_pem(),
            "px-e2e-admin",
            Credentials::Certificate(&admin_cert),
        )?;
        let admin = client(&admin_kubeconfig).await?;
        wait_ready(&admin, &mut components).await?;

        let component_kubeconfig = |user: &str| -> Result<String, Error> {
            let path = dir.join(format!("{user}.kubeconfig"));
            let cert = pki.client(&format!("system:{user}"), None)?;
            write_kubeconfig(
                &path,
                &server,
                pki.ca_pem(),
                user,
                Credentials::Certificate(&cert),
            )?;
            Ok(path.display().to_string())
        };
        let kcm_config = component_kubeconfig("kube-controller-manager")?;
        let controllers = if static_nodes {
            "--controllers=*,-node-lifecycle-controller,-pod-garbage-collector-controller"
        } else {
            "--controllers=*"
        };
        components.push(Component::spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                controllers.into(),
                format!("--kubeconfig={kcm_config}"),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                // Each controller acts as its own ServiceAccount, as kubeadm sets it up.
                "--use-service-account-credentials=true".into(),
                format!("--service-account-private-key-file={sa_key}"),
                format!("--root-ca-file={ca}"),
                format!("--cluster-signing-cert-file={ca}"),
                format!(
                    "--cluster-signing-key-file={}",
                    pki_dir.join("ca.key").display()
                ),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--node-monitor-period=1s".into(),
                format!("--node-monitor-grace-period={}s", NODE_GRACE.as_secs()),
                "--profiling=false".into(),
            ],
            dir,
        )?);
        let scheduler_config = component_kubeconfig("kube-scheduler")?;
        components.push(Component::spawn(
            "kube-scheduler",
            &bin.join("kube-scheduler"),
            &[
                format!("--kubeconfig={scheduler_config}"),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                "--profiling=false".into(),
            ],
            dir,
        )?);
        let mut plane = Self {
            components,
            pki,
            server,
            admin_kubeconfig,
            admin,
            dir: dir.to_path_buf(),
            _etcd_data: etcd_data,
        };
        plane.wait_controllers().await?;
        Ok(plane)
    }

    /// Waits for the controller-manager's ServiceAccount controller to make `default`
    /// in `default`: pods cannot be created in a namespace before it exists.
    async fn wait_controllers(&mut self) -> Result<(), Error> {
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api = kube::Api::<ServiceAccount>::namespaced(self.admin.clone(), "default");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            for c in &mut self.components {
                c.check_running()?;
            }
            if matches!(api.get_opt("default").await, Ok(Some(_))) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let kcm = self
                    .components
                    .iter()
                    .find(|c| c.name == "kube-controller-manager");
                return Err(match kcm {
                    Some(c) => c.failure("no default ServiceAccount after 120 s"),
                    None => Error::ControlPlane {
                        component: "kube-controller-manager".into(),
                        message: "not started".into(),
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The API server's audit log (JSON lines, one event per request).
    pub(crate) fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The directory holding the components' logs and certificates.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills every component, the scheduler first and etcd last.
    pub(crate) async fn stop(mut self) {
        while let Some(mut c) = self.components.pop() {
            let _ = c.child.start_kill();
            let _ = c.child.wait().await;
        }
    }
}

/// Polls `/readyz` until the API server answers `ok`, failing early if etcd or the API
/// server exits.
async fn wait_ready(admin: &kube::Client, components: &mut [Component]) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        for c in components.iter_mut() {
            c.check_running()?;
        }
        let request = http::Request::get("/readyz").body(Vec::new());
        if let Ok(request) = request
            && let Ok(text) = admin.request_text(request).await
            && text.trim() == "ok"
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(components
                .iter()
                .find(|c| c.name == "kube-apiserver")
                .map(|c| c.failure("not ready after 120 s"))
                .unwrap_or(Error::ControlPlane {
                    component: "kube-apiserver".into(),
                    message: "not started".into(),
                }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
