//! What a Vizier becomes: pure functions from the Vizier (and the PEM pods observed) to
//! the objects the operator applies. No client, no clock.
//!
//! Decisions written down here, once:
//!
//! - **PEM discovery.** Kelvin watches the Vizier's PEM pods itself
//!   (`kelvin --pems-from-pods`, its Role's list/watch on pods), so a PEM that comes,
//!   goes or moves changes Kelvin's set without a restart, and Kelvin's Deployment does
//!   not depend on the PEM pods: at thousands of nodes a node joining rolls nothing.
//! - **TLS everywhere inside the Vizier.** The PEMs serve only mutual TLS (their
//!   certificate, and the Vizier's CA for their clients); Kelvin serves its public API
//!   over TLS and presents its certificate to the PEMs; the operator presents one it
//!   issues itself. The PEMs' token travels only inside TLS. The certificates come
//!   from the namespace's `px-tls` Secret ([`crate::tls`]), mounted at [`TLS_DIR`]
//!   (each pod its own keys only), and are read again by the binaries when the operator
//!   renews them.
//! - **Kelvin's API key.** Kelvin requires `pixie-api-key` on every query; the key comes
//!   from the Secret [`api_key_secret`] (`<vizier>-api-key`, key `key`), which the
//!   operator creates once with a random value and never rewrites, and reaches Kelvin as
//!   `PX_API_KEY` through `secretKeyRef`, so it is in no object but the Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HostPathVolumeSource, KeyToPath,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, ResourceRequirements, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;
use px_crds::Vizier;

use crate::error::Error;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "px-operator";
/// Label on every object the operator makes: the Vizier's name.
pub const VIZIER_LABEL: &str = "px.dev/vizier";
/// Annotation on the PEM pod template: a checksum of what the PEMs are started with.
pub const PEM_CHECKSUM_ANNOTATION: &str = "px.dev/pem-config-checksum";
/// Port the PEM serves Kelvin's scans on.
pub const PEM_PORT: u16 = 50400;
/// Port Kelvin serves the query API on.
pub const KELVIN_PORT: u16 = 50300;
/// Default image registry.
pub const DEFAULT_REGISTRY: &str = "px";
/// The key of the API-key Secret's `data` that holds the key.
pub const API_KEY_SECRET_KEY: &str = "key";
/// The environment variable Kelvin reads its API key from (never a command-line flag).
pub const API_KEY_ENV: &str = "PX_API_KEY";
/// The Secret, one per namespace, holding the PEMs' service token of each Vizier there,
/// under the Vizier's name as data key. A fixed name, so that the operator's RBAC can
/// read and patch this Secret and no other (`resourceNames`); each Vizier is one of its
/// owners, so it goes only with the last of them.
pub const PEM_TOKEN_SECRET: &str = "px-pem-token";
/// The environment variable in which the PEMs (`--service-token`) and Kelvin
/// (`--pem-token`) get it.
pub const PEM_TOKEN_ENV: &str = "PX_PEM_SERVICE_TOKEN";
/// Where the PEM and Kelvin pods find their certificate (`tls.crt`, `tls.key`) and the
/// Vizier's CA (`ca.crt`).
pub const TLS_DIR: &str = "/var/run/secrets/px.dev/tls";
/// Default PEM memory limit (Pixie's).
pub const DEFAULT_PEM_MEMORY_LIMIT: &str = "2Gi";

/// Names of the objects a Vizier becomes; one Vizier's objects never clash with
/// another's in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// PEM DaemonSet, ServiceAccount, Role and RoleBinding.
    pub pem: String,
    /// Kelvin Deployment, Service, ServiceAccount, Role and RoleBinding.
    pub kelvin: String,
    /// The Secret holding Kelvin's API key.
    pub api_key: String,
    /// The Secret holding the token the PEMs require of Kelvin and the operator.
    pub pem_token: String,
}

impl Names {
    /// The names for the Vizier called `vizier`.
    pub fn of(vizier: &str) -> Self {
        Self {
            pem: format!("{vizier}-pem"),
            kelvin: format!("{vizier}-kelvin"),
            api_key: format!("{vizier}-api-key"),
            pem_token: PEM_TOKEN_SECRET.to_string(),
        }
    }
}

/// Everything the operator applies for one Vizier, in the order it applies them.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// PEM then Kelvin.
    pub service_accounts: Vec<ServiceAccount>,
    /// PEM then Kelvin.
    pub roles: Vec<Role>,
    /// PEM then Kelvin.
    pub role_bindings: Vec<RoleBinding>,
    /// The PEMs, one per node.
    pub pem: DaemonSet,
    /// Kelvin.
    pub kelvin: Deployment,
    /// Kelvin's Service.
    pub kelvin_service: Service,
}

/// The Vizier's identity, checked once.
struct Owner<'a> {
    name: &'a str,
    namespace: &'a str,
    reference: OwnerReference,
}

fn owner(vz: &Vizier) -> Result<Owner<'_>, Error> {
    let name = vz
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata { field: "name" })?;
    let namespace = vz
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingMetadata { field: "namespace" })?;
    let reference = vz
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata { field: "uid" })?;
    Ok(Owner {
        name,
        namespace,
        reference,
    })
}

/// `vz` as the controlling owner of what the operator makes for it.
pub fn owner_reference(vz: &Vizier) -> Result<OwnerReference, Error> {
    Ok(owner(vz)?.reference)
}

/// The labels that select one component's pods (stable: never change them, a
/// DaemonSet's and Deployment's selector is immutable).
pub fn selector_labels(vizier: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), component.to_string()),
        ("app.kubernetes.io/instance".to_string(), vizier.to_string()),
    ])
}

/// The labels on every object made for `component` of Vizier `vizier`.
fn labels(vizier: &str, component: &str, version: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(vizier, component);
    labels.extend([
        ("app.kubernetes.io/part-of".to_string(), "px".to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            FIELD_MANAGER.to_string(),
        ),
        ("app.kubernetes.io/version".to_string(), version.to_string()),
        (VIZIER_LABEL.to_string(), vizier.to_string()),
    ]);
    labels
}

fn meta(o: &Owner<'_>, name: &str, component: &str, version: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(o.namespace.to_string()),
        labels: Some(labels(o.name, component, version)),
        owner_references: Some(vec![o.reference.clone()]),
        ..ObjectMeta::default()
    }
}

/// The version the Vizier runs: `spec.version`, else the operator's own.
pub fn version(vz: &Vizier) -> String {
    vz.spec
        .version
        .clone()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

/// The cluster's name: `spec.clusterName`, else the Vizier's name.
pub fn cluster_name(vz: &Vizier) -> String {
    vz.spec
        .cluster_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| vz.metadata.name.clone().unwrap_or_default())
}

/// `<registry>/<component>:<version>`.
pub fn image(vz: &Vizier, component: &str) -> String {
    let registry = vz
        .spec
        .registry
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_REGISTRY)
        .trim_end_matches('/');
    format!("{registry}/{component}:{}", version(vz))
}

fn bytes(field: &'static str, value: &str) -> Result<u64, Error> {
    use px_crds::quantity_bytes;
    quantity_bytes(value)
        .filter(|b| *b > 0)
        .ok_or_else(|| Error::InvalidQuantity {
            field,
            value: value.to_string(),
        })
}

/// The PEM's memory limit and request as written in the spec, and the limit in bytes.
/// The request defaults to the limit and may not exceed it.
pub fn pem_memory(vz: &Vizier) -> Result<PemMemory, Error> {
    let limit = vz
        .spec
        .pem_memory_limit
        .clone()
        .unwrap_or_else(|| DEFAULT_PEM_MEMORY_LIMIT.to_string());
    let request = vz
        .spec
        .pem_memory_request
        .clone()
        .unwrap_or_else(|| limit.clone());
    let limit_bytes = bytes("pemMemoryLimit", &limit)?;
    let request_bytes = bytes("pemMemoryRequest", &request)?;
    if request_bytes > limit_bytes {
        return Err(Error::RequestAboveLimit {
            request: request_bytes,
            limit: limit_bytes,
        });
    }
    Ok(PemMemory {
        limit,
        request,
        limit_bytes,
    })
}

/// The PEM's memory, from `pemMemoryLimit` and `pemMemoryRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemMemory {
    /// The limit as written (`2Gi`).
    pub limit: String,
    /// The request as written.
    pub request: String,
    /// The limit in bytes: what `--memory-limit` gets, and the tables' budgets with it.
    pub limit_bytes: u64,
}

/// The PEM's arguments and extra environment from the spec: `--memory-limit` from
/// `pemMemoryLimit`, and Pixie's `customPEMFlags` that have a PEM flag mapped to it
/// (`PL_TABLE_STORE_DATA_LIMIT_MB` to `--table-store-limit`,
/// `PL_TABLE_STORE_HTTP_EVENTS_PERCENT` to `--http-events-percent`). Other
/// `customPEMFlags` are passed as environment variables, as Pixie does.
pub fn pem_args(vz: &Vizier, memory: &PemMemory) -> (Vec<String>, Vec<EnvVar>) {
    let mut args = vec![
        format!("--listen=$(POD_IP):{PEM_PORT}"),
        format!("--memory-limit={}", memory.limit_bytes),
        // Mutual TLS only: a client needs a certificate from the Vizier's CA.
        format!("--tls-cert={TLS_DIR}/tls.crt"),
        format!("--tls-key={TLS_DIR}/tls.key"),
        format!("--tls-client-ca={TLS_DIR}/ca.crt"),
    ];
    let params = vz.spec.data_collector_params.as_ref();
    if params.and_then(|p| p.keep_credential_headers) == Some(true) {
        args.push("--keep-credential-headers".to_string());
    }
    // The PEM redacts as rows enter its tables: no query sees more than this.
    match vz.spec.data_access {
        None | Some(px_crds::DataAccess::Full) => {}
        Some(px_crds::DataAccess::Restricted) => args.push("--data-access=Restricted".to_string()),
        Some(px_crds::DataAccess::PiiRestricted) => {
            args.push("--data-access=PIIRestricted".to_string());
        }
    }
    let mut env = Vec::new();
    let flags = params.and_then(|p| p.custom_pem_flags.as_ref());
    for (name, value) in flags.into_iter().flatten() {
        match name.as_str() {
            "PL_TABLE_STORE_DATA_LIMIT_MB" => args.push(format!("--table-store-limit={value}Mi")),
            "PL_TABLE_STORE_HTTP_EVENTS_PERCENT" => {
                args.push(format!("--http-events-percent={value}"));
            }
            _ => env.push(EnvVar {
                name: name.clone(),
                value: Some(value.clone()),
                ..EnvVar::default()
            }),
        }
    }
    (args, env)
}

fn pod_ip_env() -> EnvVar {
    downward_env("POD_IP", "status.podIP")
}

/// `name` from the downward API's `field_path`.
fn downward_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// FNV-1a, 64 bits: a checksum that stays the same across Rust and operator versions
/// (std's hasher does not promise that), so upgrading the operator does not roll PEMs.
fn checksum(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The `px-tls` Secret as `role`'s pods see it at [`TLS_DIR`]: their own certificate
/// and key as `tls.crt` and `tls.key`, the CA's certificate as `ca.crt`, and nothing
/// else (never the CA's key, nor another Vizier's). Readable by the owner and the
/// pod's group only: Kelvin's pod gets `fsGroup` for it.
///
/// With `spec.certManager`, the Secret cert-manager writes for `role` instead, whose
/// keys already have those names.
fn tls_volume(vz: &Vizier, vizier: &str, role: crate::certs::Role) -> (Volume, VolumeMount) {
    let item = |key: String, path: &str| KeyToPath {
        key,
        path: path.to_string(),
        ..KeyToPath::default()
    };
    let r = role.key();
    let (secret_name, items) = if vz.spec.cert_manager.is_some() {
        (
            crate::cert_manager::secret_name(vizier, role),
            ["tls.crt", "tls.key", "ca.crt"]
                .map(|k| item(k.to_string(), k))
                .to_vec(),
        )
    } else {
        let key = |part: &str| crate::tls::data_key(vizier, part);
        (
            crate::certs::TLS_SECRET.to_string(),
            vec![
                item(key(&format!("{r}.crt")), "tls.crt"),
                item(key(&format!("{r}.key")), "tls.key"),
                item(key("ca.crt"), "ca.crt"),
            ],
        )
    };
    (
        Volume {
            name: "tls".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name),
                items: Some(items),
                default_mode: Some(0o440),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: "tls".to_string(),
            mount_path: TLS_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )
}

fn host_path(name: &str, path: &str) -> (Volume, VolumeMount) {
    (
        Volume {
            name: name.to_string(),
            host_path: Some(HostPathVolumeSource {
                path: path.to_string(),
                type_: Some("Directory".to_string()),
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: name.to_string(),
            mount_path: path.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )
}

fn pod_policy_meta(
    vz: &Vizier,
    mut labels: BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let pod = vz.spec.pod.as_ref();
    let mut annotations = BTreeMap::new();
    if let Some(extra) = pod.and_then(|p| p.labels.as_ref()) {
        // The selector labels win: a user label may not take a pod out of its DaemonSet.
        for (k, v) in extra {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if let Some(extra) = pod.and_then(|p| p.annotations.as_ref()) {
        annotations.extend(extra.clone());
    }
    (labels, annotations)
}

/// The PEM DaemonSet: one PEM per node matching `pod.nodeSelector`.
///
/// Privileges, each named instead of `privileged: true`:
/// - `CAP_BPF`: create BPF maps and load the programs (Linux 5.8+).
/// - `CAP_PERFMON`: attach kprobes, uprobes and tracepoints through perf events and read
///   kernel and user memory from the programs (Linux 5.8+; older kernels need
///   `CAP_SYS_ADMIN` instead, which this operator does not grant).
/// - `CAP_SYS_RESOURCE`: lift `RLIMIT_MEMLOCK`, which Linux before 5.11 charges BPF maps to.
/// - `CAP_SYS_PTRACE`: read `/proc/<pid>/exe`, `maps` and `root` of other users' and more
///   privileged processes, to resolve the binaries and symbols uprobes attach to.
/// - `CAP_SYS_ADMIN` is **not** granted: tracefs comes from the host by a read-only
///   mount, so nothing is mounted, and perf-event attach needs only `CAP_PERFMON`.
///
/// Host access: `hostPID` so that the container's `/proc` lists every process of the
/// node (the PEM names processes and resolves their binaries from it; without it, it
/// would see only itself); `/sys/kernel/tracing` read-only for tracepoint ids; and
/// `/sys/fs/cgroup` read-only to map pods to cgroup ids. No host network: the PEM traces
/// through the kernel whatever its network namespace.
pub fn pem_daemonset(vz: &Vizier) -> Result<DaemonSet, Error> {
    let o = owner(vz)?;
    let names = Names::of(o.name);
    let version = version(vz);
    let memory = pem_memory(vz)?;
    let (mut args, extra_env) = pem_args(vz, &memory);
    if let Some(size) = vz
        .spec
        .data_collector_params
        .as_ref()
        .and_then(|p| p.datastream_buffer_size)
    {
        if !(1 << 10..=1 << 20).contains(&size) {
            return Err(Error::DatastreamBuffer(size));
        }
        args.push(format!("--datastream-buffer={size}"));
    }
    // POD_IP: the PEM listens there (`--listen`), where Kelvin and the operator reach
    // it. NODE_NAME: the node it reports probes and tables for.
    // PX_PEM_SERVICE_TOKEN: callers without it cannot read the tables or load probes.
    let mut env = vec![
        pod_ip_env(),
        downward_env("NODE_NAME", "spec.nodeName"),
        secret_key_env(PEM_TOKEN_ENV, &names.pem_token, o.name),
    ];
    env.extend(extra_env);

    let mut resources = vz
        .spec
        .pod
        .as_ref()
        .and_then(|p| p.resources.clone())
        .unwrap_or_default();
    resources
        .limits
        .get_or_insert_with(BTreeMap::new)
        .insert("memory".to_string(), Quantity(memory.limit.clone()));
    resources
        .requests
        .get_or_insert_with(BTreeMap::new)
        .insert("memory".to_string(), Quantity(memory.request.clone()));

    let mounts = [
        host_path("tracefs", "/sys/kernel/tracing"),
        host_path("cgroup", "/sys/fs/cgroup"),
        tls_volume(vz, o.name, crate::certs::Role::Pem),
    ];
    let container = Container {
        name: "pem".to_string(),
        image: Some(image(vz, "vizier-pem")),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("pem".to_string()),
            container_port: i32::from(PEM_PORT),
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            // Root inside the container: the capabilities below are granted to uid 0.
            run_as_user: Some(0),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: Some(
                    ["BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE"]
                        .map(String::from)
                        .to_vec(),
                ),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts.iter().map(|(_, m)| m.clone()).collect()),
        ..Container::default()
    };
    let pod = vz.spec.pod.as_ref();
    let pod_spec = PodSpec {
        service_account_name: Some(names.pem.clone()),
        // The PEM calls no Kubernetes API: no token in its pods.
        automount_service_account_token: Some(false),
        host_pid: Some(true),
        containers: vec![container],
        volumes: Some(mounts.into_iter().map(|(v, _)| v).collect()),
        node_selector: pod.and_then(|p| p.node_selector.clone()),
        tolerations: pod.and_then(|p| p.tolerations.clone()),
        ..PodSpec::default()
    };
    let (pod_labels, mut annotations) = pod_policy_meta(vz, labels(o.name, "vizier-pem", &version));
    // A digest of the pod spec as it will run: any change to the PEMs' arguments, memory
    // or image gives a new annotation, hence a new template, hence a rollout, even when a
    // field the API server or a mutating webhook normalises would hide the change.
    let encoded = serde_json::to_string(&pod_spec).map_err(|source| Error::Encode {
        what: "the PEM pod spec",
        source,
    })?;
    annotations.insert(PEM_CHECKSUM_ANNOTATION.to_string(), checksum(&encoded));
    Ok(DaemonSet {
        metadata: meta(&o, &names.pem, "vizier-pem", &version),
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels(o.name, "vizier-pem")),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DaemonSetSpec::default()
        },
        status: None,
    })
}

/// The label selector of Vizier `vizier`'s PEM pods, as Kelvin watches them.
pub fn pem_pod_selector(vizier: &str) -> String {
    selector_labels(vizier, "vizier-pem")
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The Kelvin Deployment: one replica, finding the PEMs by watching their pods.
pub fn kelvin_deployment(vz: &Vizier) -> Result<Deployment, Error> {
    let o = owner(vz)?;
    let names = Names::of(o.name);
    let version = version(vz);
    let pod = vz.spec.pod.as_ref();
    let container = Container {
        name: "kelvin".to_string(),
        image: Some(image(vz, "kelvin")),
        args: Some(vec![
            format!("--listen=$(POD_IP):{KELVIN_PORT}"),
            // TLS with Kelvin's certificate for its Service names. The API key is
            // required (no `--allow-unauthenticated`): it comes from the Secret, in
            // `PX_API_KEY`.
            format!("--tls-cert={TLS_DIR}/tls.crt"),
            format!("--tls-key={TLS_DIR}/tls.key"),
            // Names pods, services and nodes in results, from its own watch of the
            // cluster (the chart's `<release>-kelvin-metadata` ClusterRole).
            "--cluster-metadata".to_string(),
            format!("--cluster-name={}", cluster_name(vz)),
            // The PEMs, from a watch of their pods in Kelvin's namespace.
            format!("--pems-from-pods={}", pem_pod_selector(o.name)),
            format!("--pem-port={PEM_PORT}"),
            // Mutual TLS to the PEMs: the same certificate, as a client.
            format!("--pem-tls-ca={TLS_DIR}/ca.crt"),
            format!("--pem-tls-cert={TLS_DIR}/tls.crt"),
            format!("--pem-tls-key={TLS_DIR}/tls.key"),
            format!(
                "--pem-tls-server-name={}",
                crate::certs::pem_server_name(o.namespace, o.name)
            ),
        ]),
        volume_mounts: Some(vec![tls_volume(vz, o.name, crate::certs::Role::Kelvin).1]),
        env: Some(vec![
            pod_ip_env(),
            downward_env("POD_NAMESPACE", "metadata.namespace"),
            secret_env(API_KEY_ENV, &names.api_key),
            secret_key_env(PEM_TOKEN_ENV, &names.pem_token, o.name),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("query".to_string()),
            container_port: i32::from(KELVIN_PORT),
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        resources: pod.and_then(|p| p.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            // `nobody`, unless `pod.securityContext` names a user (a container's
            // setting would override the pod's).
            run_as_user: kelvin_pod_security(vz)
                .and_then(|p| p.run_as_user)
                .is_none()
                .then_some(65534),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let (pod_labels, annotations) = pod_policy_meta(vz, labels(o.name, "kelvin", &version));
    Ok(Deployment {
        metadata: meta(&o, &names.kelvin, "kelvin", &version),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector_labels(o.name, "kelvin")),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names.kelvin.clone()),
                    security_context: Some(kelvin_pod_security_with_group(vz)),
                    containers: vec![container],
                    volumes: Some(vec![tls_volume(vz, o.name, crate::certs::Role::Kelvin).0]),
                    node_selector: pod.and_then(|p| p.node_selector.clone()),
                    tolerations: pod.and_then(|p| p.tolerations.clone()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    })
}

/// `name` from the `key` of Secret `secret`. A reference, not the value: the key stays
/// out of the Deployment (readable by anyone who may read Deployments) and a Secret the
/// user replaces reaches the pods at their next start.
fn secret_env(name: &str, secret: &str) -> EnvVar {
    secret_key_env(name, secret, API_KEY_SECRET_KEY)
}

/// `name` from data key `key` of Secret `secret`.
fn secret_key_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The Secret holding Kelvin's API key `key` (`<vizier>-api-key`, type Opaque, data
/// `key`), owned by the Vizier so that deleting the Vizier deletes it. The caller
/// generates the key: this stays pure, and the Secret is created once, never applied
/// again (a new value on every reconcile would lock out every client).
pub fn api_key_secret(vz: &Vizier, key: &str) -> Result<Secret, Error> {
    let o = owner(vz)?;
    let names = Names::of(o.name);
    key_secret(vz, &names.api_key, "kelvin", key)
}

/// This Vizier's part of the namespace's `px-pem-token` Secret: its token under its own
/// name as data key, and the Vizier as one owner among those of the other Viziers of the
/// namespace (not the controller: the Secret goes when its last owner does, so deleting
/// one Vizier never takes another's token). Applied once per Vizier, under its own field
/// manager ([`shared_secret_manager`]), so the Viziers' parts merge.
pub fn pem_token_secret(vz: &Vizier, token: &str) -> Result<Secret, Error> {
    let o = owner(vz)?;
    shared_secret(
        vz,
        PEM_TOKEN_SECRET,
        "vizier-pem",
        BTreeMap::from([(o.name.to_string(), ByteString(token.as_bytes().to_vec()))]),
    )
}

/// This Vizier's part of the namespace's TLS Secret ([`crate::certs::TLS_SECRET`]):
/// `data` (its CA and certificates, under keys that start with its name), shared with
/// the namespace's other Viziers as `px-pem-token` is.
pub fn tls_secret(vz: &Vizier, data: BTreeMap<String, ByteString>) -> Result<Secret, Error> {
    shared_secret(vz, crate::certs::TLS_SECRET, "vizier-tls", data)
}

/// A Secret shared by the Viziers of a namespace: `data` is this Vizier's part, and the
/// Vizier one owner among the others (not the controller: the Secret goes when its last
/// owner does).
fn shared_secret(
    vz: &Vizier,
    name: &str,
    component: &str,
    data: BTreeMap<String, ByteString>,
) -> Result<Secret, Error> {
    let o = owner(vz)?;
    let mut secret = key_secret(vz, name, component, "")?;
    secret.data = Some(data);
    // Only the labels every Vizier's part agrees on: the Secret is shared.
    secret.metadata.labels = Some(BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), component.to_string()),
        ("app.kubernetes.io/part-of".to_string(), "px".to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            FIELD_MANAGER.to_string(),
        ),
    ]));
    secret.metadata.owner_references = Some(vec![OwnerReference {
        controller: None,
        block_owner_deletion: None,
        ..o.reference
    }]);
    Ok(secret)
}

/// The field manager of Vizier `vizier`'s part of a Secret its namespace's Viziers share
/// (`px-pem-token`, `px-tls`).
pub fn shared_secret_manager(vizier: &str) -> String {
    format!("{FIELD_MANAGER}/{vizier}")
}

fn key_secret(vz: &Vizier, name: &str, component: &str, key: &str) -> Result<Secret, Error> {
    let o = owner(vz)?;
    Ok(Secret {
        metadata: meta(&o, name, component, &version(vz)),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            API_KEY_SECRET_KEY.to_string(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    })
}

/// The pod security context `pod.securityContext` asks for Kelvin (Pixie applies it to
/// the pods that need no privileges), when `enabled`. Never to the PEMs: they run as
/// root with the capabilities named on [`pem_daemonset`].
fn kelvin_pod_security(vz: &Vizier) -> Option<k8s_openapi::api::core::v1::PodSecurityContext> {
    let sc = vz.spec.pod.as_ref()?.security_context.as_ref()?;
    (sc.enabled == Some(true)).then(|| k8s_openapi::api::core::v1::PodSecurityContext {
        fs_group: sc.fs_group,
        run_as_user: sc.run_as_user,
        run_as_group: sc.run_as_group,
        run_as_non_root: Some(true),
        ..k8s_openapi::api::core::v1::PodSecurityContext::default()
    })
}

/// Kelvin's pod security context: the user's (`pod.securityContext`), with an
/// `fsGroup` (`nogroup`, unless the user chose one) so that its non-root process can
/// read its key, which the TLS volume makes readable by owner and group only.
fn kelvin_pod_security_with_group(vz: &Vizier) -> k8s_openapi::api::core::v1::PodSecurityContext {
    let mut sc = kelvin_pod_security(vz).unwrap_or_default();
    sc.fs_group = sc.fs_group.or(Some(65534));
    sc
}

/// Kelvin's Service (cluster IP, the query port).
pub fn kelvin_service(vz: &Vizier) -> Result<Service, Error> {
    let o = owner(vz)?;
    let names = Names::of(o.name);
    Ok(Service {
        metadata: meta(&o, &names.kelvin, "kelvin", &version(vz)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(o.name, "kelvin")),
            ports: Some(vec![ServicePort {
                name: Some("query".to_string()),
                port: i32::from(KELVIN_PORT),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// Everything for one Vizier: ServiceAccounts, Roles and RoleBindings (PEM, then
/// Kelvin), the PEM DaemonSet, the Kelvin Deployment and Service.
///
/// RBAC, written by hand and within what the operator itself holds (it may not grant
/// more). The PEM calls no Kubernetes API (the operator brings it its probes and
/// retention; it learns its pods from cgroups and `/proc`): its ServiceAccount has no
/// Role and its pods no token (`automountServiceAccountToken: false`), so a compromised
/// PEM holds no credential for the API server. Kelvin lists and watches the Vizier's pods
/// (to find the PEMs, `--pems-from-pods`) in the Vizier's namespace; what it reads of the
/// whole cluster to name pods and services comes from the chart's ClusterRole.
pub fn children(vz: &Vizier) -> Result<Children, Error> {
    let o = owner(vz)?;
    let names = Names::of(o.name);
    let version = version(vz);
    let kelvin_rules = vec![rule("", &["pods"], &["list", "watch"])];
    let service_accounts = vec![
        ServiceAccount {
            metadata: meta(&o, &names.pem, "vizier-pem", &version),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        ServiceAccount {
            metadata: meta(&o, &names.kelvin, "kelvin", &version),
            ..ServiceAccount::default()
        },
    ];
    let name = &names.kelvin;
    let roles = vec![Role {
        metadata: meta(&o, name, "kelvin", &version),
        rules: Some(kelvin_rules),
    }];
    let role_bindings = vec![RoleBinding {
        metadata: meta(&o, name, "kelvin", &version),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "Role".to_string(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: name.clone(),
            namespace: Some(o.namespace.to_string()),
            ..Subject::default()
        }]),
    }];
    // `spec.patches`, by object name, on the workloads and Kelvin's Service (not on
    // RBAC: a patch must not widen what the Vizier's pods may do). The Deployment and
    // the Service share the name `<vizier>-kelvin`: each takes what its kind has.
    let patches = vz.spec.patches.as_ref();
    Ok(Children {
        service_accounts,
        roles,
        role_bindings,
        pem: crate::patches::patched(pem_daemonset(vz)?, "DaemonSet", &names.pem, patches)?,
        kelvin: crate::patches::patched(
            kelvin_deployment(vz)?,
            "Deployment",
            &names.kelvin,
            patches,
        )?,
        kelvin_service: crate::patches::patched(
            kelvin_service(vz)?,
            "Service",
            &names.kelvin,
            patches,
        )?,
    })
}

/// Resource requirements, for tests and callers that read them back.
pub fn container_resources(ds: &DaemonSet) -> Option<&ResourceRequirements> {
    ds.spec
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .resources
        .as_ref()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use k8s_openapi::api::core::v1::Toleration;
    use px_crds::{DataCollectorParams, PodPolicy, VizierSpec};

    fn vizier(spec: VizierSpec) -> Vizier {
        let mut vz = Vizier::new("pixie", spec);
        vz.metadata.namespace = Some("pl".into());
        vz.metadata.uid = Some("uid-1".into());
        vz
    }

    fn pem_container(ds: &DaemonSet) -> &Container {
        &ds.spec.template.spec.as_ref().unwrap().containers[0]
    }

    fn args(ds: &DaemonSet) -> Vec<String> {
        pem_container(ds).args.clone().unwrap()
    }

    fn checksum_of(ds: &DaemonSet) -> String {
        ds.spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[PEM_CHECKSUM_ANNOTATION]
            .clone()
    }

    #[test]
    fn pem_memory_comes_from_the_spec() {
        let ds = pem_daemonset(&vizier(VizierSpec {
            pem_memory_limit: Some("1Gi".into()),
            pem_memory_request: Some("512Mi".into()),
            ..VizierSpec::default()
        }))
        .unwrap();
        let res = container_resources(&ds).unwrap();
        assert_eq!(
            res.limits.as_ref().unwrap()["memory"],
            Quantity("1Gi".into())
        );
        assert_eq!(
            res.requests.as_ref().unwrap()["memory"],
            Quantity("512Mi".into())
        );
        assert!(
            args(&ds).contains(&"--memory-limit=1073741824".to_string()),
            "{:?}",
            args(&ds)
        );
    }

    #[test]
    fn pem_memory_defaults_to_2gi_with_the_request_equal_to_the_limit() {
        let m = pem_memory(&vizier(VizierSpec::default())).unwrap();
        assert_eq!((m.limit.as_str(), m.request.as_str()), ("2Gi", "2Gi"));
        assert_eq!(m.limit_bytes, 2 << 30);
        let m = pem_memory(&vizier(VizierSpec {
            pem_memory_limit: Some("1.5G".into()),
            ..VizierSpec::default()
        }))
        .unwrap();
        assert_eq!(m.limit_bytes, 1_500_000_000);
    }

    #[test]
    fn bad_memory_is_a_spec_error() {
        let err = pem_memory(&vizier(VizierSpec {
            pem_memory_limit: Some("1Gi".into()),
            pem_memory_request: Some("2Gi".into()),
            ..VizierSpec::default()
        }))
        .unwrap_err();
        assert!(matches!(err, Error::RequestAboveLimit { .. }), "{err}");
        assert!(err.is_spec_error());
        let err = pem_memory(&vizier(VizierSpec {
            pem_memory_limit: Some("0".into()),
            ..VizierSpec::default()
        }))
        .unwrap_err();
        assert_eq!(err.metric_label(), "invalid_quantity");
        assert!(err.to_string().contains("pemMemoryLimit"), "{err}");
    }

    #[test]
    fn image_from_registry_and_version() {
        let vz = vizier(VizierSpec {
            registry: Some("registry.example.com/pixie/".into()),
            version: Some("0.14.15".into()),
            ..VizierSpec::default()
        });
        assert_eq!(
            image(&vz, "vizier-pem"),
            "registry.example.com/pixie/vizier-pem:0.14.15"
        );
        let ds = pem_daemonset(&vz).unwrap();
        assert_eq!(
            pem_container(&ds).image.as_deref(),
            Some("registry.example.com/pixie/vizier-pem:0.14.15")
        );
        let default = vizier(VizierSpec::default());
        assert_eq!(
            image(&default, "kelvin"),
            format!("px/kelvin:{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn patches_reach_the_objects_they_name() {
        let vz = vizier(VizierSpec {
            patches: Some(BTreeMap::from([
                (
                    "pixie-kelvin".to_string(),
                    r#"{"spec": {"replicas": 2}, "metadata": {"annotations": {"team": "sre"}}}"#
                        .to_string(),
                ),
                (
                    "pixie-pem".to_string(),
                    "spec: {template: {spec: {priorityClassName: system-node-critical}}}"
                        .to_string(),
                ),
            ])),
            ..VizierSpec::default()
        });
        let c = children(&vz).unwrap();
        assert_eq!(c.kelvin.spec.replicas, Some(2));
        let note = |m: &ObjectMeta| m.annotations.as_ref().and_then(|a| a.get("team")).cloned();
        assert_eq!(note(&c.kelvin.metadata).as_deref(), Some("sre"));
        assert_eq!(
            note(&c.kelvin_service.metadata).as_deref(),
            Some("sre"),
            "the Service shares the name and takes what a Service has"
        );
        let pod = c.pem.spec.template.spec.unwrap();
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        assert!(
            children(&vizier(VizierSpec::default()))
                .unwrap()
                .pem
                .spec
                .template
                .spec
                .unwrap()
                .priority_class_name
                .is_none()
        );
    }

    #[test]
    fn credential_headers_are_kept_only_when_the_vizier_says_so() {
        let args = |keep| {
            let vz = vizier(VizierSpec {
                data_collector_params: Some(px_crds::DataCollectorParams {
                    keep_credential_headers: keep,
                    ..px_crds::DataCollectorParams::default()
                }),
                ..VizierSpec::default()
            });
            pem_container(&pem_daemonset(&vz).unwrap())
                .args
                .clone()
                .unwrap()
        };
        let flag = "--keep-credential-headers".to_owned();
        assert!(args(Some(true)).contains(&flag));
        assert!(!args(Some(false)).contains(&flag));
        assert!(!args(None).contains(&flag), "redacted by default");
    }

    #[test]
    fn the_data_access_mode_reaches_the_pems() {
        let args = |access| {
            let vz = vizier(VizierSpec {
                data_access: access,
                ..VizierSpec::default()
            });
            pem_container(&pem_daemonset(&vz).unwrap())
                .args
                .clone()
                .unwrap()
        };
        let with = |a: &[String]| {
            a.iter()
                .filter(|a| a.starts_with("--data-access"))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            with(&args(Some(px_crds::DataAccess::Restricted))),
            ["--data-access=Restricted"]
        );
        assert_eq!(
            with(&args(Some(px_crds::DataAccess::PiiRestricted))),
            ["--data-access=PIIRestricted"]
        );
        assert!(with(&args(Some(px_crds::DataAccess::Full))).is_empty());
        assert!(with(&args(None)).is_empty(), "Full by default");
    }

    #[test]
    fn the_datastream_buffer_size_reaches_the_pems_or_is_refused() {
        let with = |size| {
            vizier(VizierSpec {
                data_collector_params: Some(px_crds::DataCollectorParams {
                    datastream_buffer_size: Some(size),
                    ..px_crds::DataCollectorParams::default()
                }),
                ..VizierSpec::default()
            })
        };
        let ds = pem_daemonset(&with(65536)).unwrap();
        let args = pem_container(&ds).args.clone().unwrap();
        assert!(
            args.contains(&"--datastream-buffer=65536".to_owned()),
            "{args:?}"
        );
        let error = pem_daemonset(&with(1 << 24)).unwrap_err();
        assert!(error.is_spec_error());
        assert!(
            error.to_string().contains("between 1024 and 1048576"),
            "{error}"
        );
    }

    #[test]
    fn the_default_images_are_those_images_build_sh_makes() {
        // build.sh tags px/<stage>:<the chart's appVersion>.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let chart = std::fs::read_to_string(root.join("charts/px/Chart.yaml")).unwrap();
        let app_version = chart
            .lines()
            .find_map(|l| l.strip_prefix("appVersion:"))
            .unwrap()
            .trim()
            .trim_matches('"');
        let containerfile = std::fs::read_to_string(root.join("images/Containerfile")).unwrap();
        let default = vizier(VizierSpec::default());
        for component in ["vizier-pem", "kelvin"] {
            assert_eq!(
                image(&default, component),
                format!("px/{component}:{app_version}")
            );
            assert!(
                containerfile
                    .lines()
                    .any(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {component}"))),
                "images/Containerfile has no stage {component}"
            );
        }
    }

    #[test]
    fn pem_gets_named_capabilities_and_read_only_host_mounts_not_privileged() {
        let ds = pem_daemonset(&vizier(VizierSpec::default())).unwrap();
        let sc = pem_container(&ds).security_context.clone().unwrap();
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop.unwrap(), ["ALL"]);
        assert_eq!(
            caps.add.unwrap(),
            ["BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE"]
        );
        let spec = ds.spec.template.spec.as_ref().unwrap();
        assert_eq!(spec.host_pid, Some(true));
        assert_eq!(spec.host_network, None);
        let mounts = pem_container(&ds).volume_mounts.clone().unwrap();
        let paths: Vec<_> = mounts.iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(paths, ["/sys/kernel/tracing", "/sys/fs/cgroup", TLS_DIR]);
        assert!(mounts.iter().all(|m| m.read_only == Some(true)));
        let volumes = spec.volumes.as_ref().unwrap();
        assert!(volumes[..2].iter().all(|v| v.host_path.is_some()));
        assert!(volumes[2].secret.is_some());
        assert_eq!(spec.service_account_name.as_deref(), Some("pixie-pem"));
    }

    #[test]
    fn pod_policy_reaches_the_pem_pods_without_changing_the_selector() {
        let toleration = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("observability".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        };
        let ds = pem_daemonset(&vizier(VizierSpec {
            pod: Some(PodPolicy {
                labels: Some(BTreeMap::from([
                    ("team".into(), "obs".into()),
                    ("app.kubernetes.io/name".into(), "hijack".into()),
                ])),
                annotations: Some(BTreeMap::from([("example.com/owner".into(), "sre".into())])),
                node_selector: Some(BTreeMap::from([(
                    "kubernetes.io/os".into(),
                    "linux".into(),
                )])),
                tolerations: Some(vec![toleration.clone()]),
                ..PodPolicy::default()
            }),
            ..VizierSpec::default()
        }))
        .unwrap();
        let meta = ds.spec.template.metadata.as_ref().unwrap();
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "obs");
        assert_eq!(
            labels["app.kubernetes.io/name"], "vizier-pem",
            "selector label kept"
        );
        for (k, v) in ds.spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(labels.get(k), Some(v), "the template matches the selector");
        }
        assert_eq!(
            meta.annotations.as_ref().unwrap()["example.com/owner"],
            "sre"
        );
        let spec = ds.spec.template.spec.as_ref().unwrap();
        assert_eq!(
            spec.node_selector.as_ref().unwrap()["kubernetes.io/os"],
            "linux"
        );
        assert_eq!(spec.tolerations.as_ref().unwrap(), &vec![toleration]);
    }

    #[test]
    fn the_pem_listens_on_its_pod_ip_and_knows_its_node() {
        let ds = pem_daemonset(&vizier(VizierSpec::default())).unwrap();
        assert!(args(&ds).contains(&format!("--listen=$(POD_IP):{PEM_PORT}")));
        let env = pem_container(&ds).env.clone().unwrap();
        let from = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
                .map(|f| f.field_path.clone())
        };
        assert_eq!(from("POD_IP").as_deref(), Some("status.podIP"));
        assert_eq!(from("NODE_NAME").as_deref(), Some("spec.nodeName"));
    }

    #[test]
    fn custom_pem_flags_become_flags_or_environment() {
        let ds = pem_daemonset(&vizier(VizierSpec {
            data_collector_params: Some(DataCollectorParams {
                custom_pem_flags: Some(BTreeMap::from([
                    ("PL_TABLE_STORE_DATA_LIMIT_MB".into(), "1024".into()),
                    ("PL_TABLE_STORE_HTTP_EVENTS_PERCENT".into(), "30".into()),
                    ("PL_OTHER".into(), "x".into()),
                ])),
                ..DataCollectorParams::default()
            }),
            ..VizierSpec::default()
        }))
        .unwrap();
        let a = args(&ds);
        assert!(
            a.contains(&"--table-store-limit=1024Mi".to_string()),
            "{a:?}"
        );
        assert!(a.contains(&"--http-events-percent=30".to_string()), "{a:?}");
        let env = pem_container(&ds).env.clone().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "PL_OTHER" && e.value.as_deref() == Some("x"))
        );
        assert!(!env.iter().any(|e| e.name == "PL_TABLE_STORE_DATA_LIMIT_MB"));
    }

    #[test]
    fn a_memory_limit_change_changes_the_template_checksum_and_nothing_else_does() {
        let base = VizierSpec {
            pem_memory_limit: Some("1Gi".into()),
            ..VizierSpec::default()
        };
        let a = pem_daemonset(&vizier(base.clone())).unwrap();
        let again = pem_daemonset(&vizier(base.clone())).unwrap();
        assert_eq!(a, again, "deterministic");
        let b = pem_daemonset(&vizier(VizierSpec {
            pem_memory_limit: Some("2Gi".into()),
            ..base.clone()
        }))
        .unwrap();
        assert_ne!(checksum_of(&a), checksum_of(&b));
        let cloud = pem_daemonset(&vizier(VizierSpec {
            deploy_key: Some("px-dep".into()),
            ..base
        }))
        .unwrap();
        assert_eq!(
            checksum_of(&a),
            checksum_of(&cloud),
            "ignored fields roll nothing"
        );
    }

    #[test]
    fn every_child_is_owned_by_the_vizier_and_labelled() {
        let vz = vizier(VizierSpec::default());
        let c = children(&vz).unwrap();
        let metas: Vec<&ObjectMeta> = c
            .service_accounts
            .iter()
            .map(|s| &s.metadata)
            .chain(c.roles.iter().map(|r| &r.metadata))
            .chain(c.role_bindings.iter().map(|r| &r.metadata))
            .chain([
                &c.pem.metadata,
                &c.kelvin.metadata,
                &c.kelvin_service.metadata,
            ])
            .collect();
        assert_eq!(metas.len(), 7);
        for m in metas {
            let owners = m.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(
                (
                    owners[0].kind.as_str(),
                    owners[0].name.as_str(),
                    owners[0].uid.as_str()
                ),
                ("Vizier", "pixie", "uid-1")
            );
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(m.namespace.as_deref(), Some("pl"));
            let l = m.labels.as_ref().unwrap();
            assert_eq!(l["app.kubernetes.io/managed-by"], "px-operator");
            assert_eq!(l["app.kubernetes.io/instance"], "pixie");
            assert_eq!(l["app.kubernetes.io/part-of"], "px");
            assert_eq!(l[VIZIER_LABEL], "pixie");
        }
    }

    #[test]
    fn rbac_is_narrow_and_namespaced() {
        let c = children(&vizier(VizierSpec::default())).unwrap();
        for role in &c.roles {
            for r in role.rules.as_ref().unwrap() {
                for v in &r.verbs {
                    assert!(
                        ["get", "list", "watch"].contains(&v.as_str()),
                        "{v} in {r:?}"
                    );
                }
                assert!(
                    !r.resources
                        .as_ref()
                        .unwrap()
                        .iter()
                        .any(|x| x == "*" || x == "secrets")
                );
            }
        }
        let kelvin = &c.role_bindings[0];
        assert_eq!(kelvin.role_ref.name, "pixie-kelvin");
        let s = &kelvin.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", "pixie-kelvin", Some("pl"))
        );
        // The PEM uses no API: no Role, no token.
        assert_eq!(c.roles.len(), 1, "only Kelvin has a Role");
        let pem_sa = &c.service_accounts[0];
        assert_eq!(pem_sa.metadata.name.as_deref(), Some("pixie-pem"));
        assert_eq!(pem_sa.automount_service_account_token, Some(false));
        let pod = c.pem.spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn the_pod_security_context_applies_to_kelvin_only_when_enabled() {
        let spec = |enabled| VizierSpec {
            pod: Some(PodPolicy {
                security_context: Some(px_crds::PodSecurityContext {
                    enabled: Some(enabled),
                    fs_group: Some(2000),
                    run_as_user: Some(1000),
                    run_as_group: Some(1000),
                }),
                ..PodPolicy::default()
            }),
            ..VizierSpec::default()
        };
        let container = |d: &Deployment| {
            d.spec.template.spec.as_ref().unwrap().containers[0]
                .security_context
                .clone()
                .unwrap()
        };
        let on = kelvin_deployment(&vizier(spec(true))).unwrap();
        assert_eq!(container(&on).run_as_user, None, "the pod's user applies");
        let sc = on.spec.template.spec.unwrap().security_context.unwrap();
        assert_eq!(
            (sc.fs_group, sc.run_as_user, sc.run_as_group),
            (Some(2000), Some(1000), Some(1000))
        );
        let off = kelvin_deployment(&vizier(spec(false))).unwrap();
        assert_eq!(
            container(&off).run_as_user,
            Some(65534),
            "nobody by default"
        );
        let group_only = k8s_openapi::api::core::v1::PodSecurityContext {
            fs_group: Some(65534),
            ..Default::default()
        };
        assert_eq!(
            off.spec.template.spec.unwrap().security_context,
            Some(group_only),
            "only the group that may read the key"
        );
        let pem = pem_daemonset(&vizier(spec(true))).unwrap();
        assert_eq!(pem.spec.template.spec.unwrap().security_context, None);
    }

    #[test]
    fn the_pems_require_mutual_tls_and_each_pod_mounts_only_its_own_keys() {
        let vz = vizier(VizierSpec::default());
        let ds = pem_daemonset(&vz).unwrap();
        let pem_args = pem_container(&ds).args.clone().unwrap();
        for flag in [
            "--tls-cert=/var/run/secrets/px.dev/tls/tls.crt",
            "--tls-key=/var/run/secrets/px.dev/tls/tls.key",
            "--tls-client-ca=/var/run/secrets/px.dev/tls/ca.crt",
        ] {
            assert!(pem_args.contains(&flag.to_string()), "{pem_args:?}");
        }
        let d = kelvin_deployment(&vz).unwrap();
        let spec = d.spec.template.spec.as_ref().unwrap();
        let kelvin_args = spec.containers[0].args.clone().unwrap();
        for flag in [
            "--tls-cert=/var/run/secrets/px.dev/tls/tls.crt",
            "--pem-tls-ca=/var/run/secrets/px.dev/tls/ca.crt",
            "--pem-tls-cert=/var/run/secrets/px.dev/tls/tls.crt",
            "--pem-tls-server-name=pixie-pem.pl.svc",
        ] {
            assert!(kelvin_args.contains(&flag.to_string()), "{kelvin_args:?}");
        }
        for args in [&pem_args, &kelvin_args] {
            assert!(
                !args
                    .iter()
                    .any(|a| a.contains("disable-tls") || a.contains("plaintext")),
                "{args:?}"
            );
        }
        let items = |volumes: &[Volume]| -> Vec<(String, String)> {
            let secret = volumes.iter().find_map(|v| v.secret.clone()).unwrap();
            assert_eq!(secret.secret_name.as_deref(), Some("px-tls"));
            assert_eq!(secret.default_mode, Some(0o440));
            secret
                .items
                .unwrap()
                .into_iter()
                .map(|i| (i.key, i.path))
                .collect()
        };
        let pair = |k: &str, p: &str| (k.to_string(), p.to_string());
        let pem_spec = ds.spec.template.spec.as_ref().unwrap();
        assert_eq!(
            items(pem_spec.volumes.as_ref().unwrap()),
            [
                pair("pixie.pem.crt", "tls.crt"),
                pair("pixie.pem.key", "tls.key"),
                pair("pixie.ca.crt", "ca.crt")
            ]
        );
        assert_eq!(
            items(spec.volumes.as_ref().unwrap()),
            [
                pair("pixie.kelvin.crt", "tls.crt"),
                pair("pixie.kelvin.key", "tls.key"),
                pair("pixie.ca.crt", "ca.crt")
            ]
        );
    }

    #[test]
    fn kelvin_finds_the_pems_by_watching_their_pods() {
        let vz = vizier(VizierSpec::default());
        let d = kelvin_deployment(&vz).unwrap();
        let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
        let args = c.args.clone().unwrap();
        assert!(
            args.contains(
                &"--pems-from-pods=app.kubernetes.io/instance=pixie,app.kubernetes.io/name=vizier-pem"
                    .to_owned()
            ),
            "{args:?}"
        );
        let pem = pem_daemonset(&vz).unwrap();
        let pem_labels = pem.spec.template.metadata.unwrap().labels.unwrap();
        for pair in pem_pod_selector("pixie").split(',') {
            let (k, v) = pair.split_once('=').unwrap();
            assert_eq!(pem_labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(
            args.contains(&"--cluster-name=pixie".to_owned()),
            "{args:?}"
        );
        let named = vizier(VizierSpec {
            cluster_name: Some("prod-eu-1".into()),
            ..VizierSpec::default()
        });
        assert_eq!(cluster_name(&named), "prod-eu-1");
        let env = c.env.clone().unwrap();
        assert!(env.iter().all(|e| e.name != "PX_KELVIN_PEMS"), "{env:?}");
        assert!(env.iter().any(|e| e.name == "POD_NAMESPACE"), "{env:?}");
        assert_eq!(d.spec.replicas, Some(1), "no PEM is needed to start");
        let svc = kelvin_service(&vz).unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.selector.unwrap(), selector_labels("pixie", "kelvin"));
        assert_eq!(spec.ports.unwrap()[0].port, 50300);
    }
    #[test]
    fn kelvin_requires_the_api_key_from_the_secret() {
        let vz = vizier(VizierSpec::default());
        let d = kelvin_deployment(&vz).unwrap();
        let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
        let args = c.args.clone().unwrap();
        assert!(
            !args.iter().any(|a| a == "--allow-unauthenticated"),
            "{args:?}"
        );
        let env = c.env.clone().unwrap();
        assert_eq!(secret_ref(&env, "PX_API_KEY"), ("pixie-api-key", "key"));
        assert_eq!(
            secret_ref(&env, PEM_TOKEN_ENV),
            (PEM_TOKEN_SECRET, "pixie"),
            "Kelvin presents its Vizier's PEMs' token"
        );
    }

    #[test]
    fn the_pems_require_the_token_from_its_secret() {
        let ds = pem_daemonset(&vizier(VizierSpec::default())).unwrap();
        let env = pem_container(&ds).env.clone().unwrap();
        assert_eq!(secret_ref(&env, PEM_TOKEN_ENV), (PEM_TOKEN_SECRET, "pixie"));
        let token = pem_token_secret(&vizier(VizierSpec::default()), "t0k").unwrap();
        assert_eq!(token.metadata.name.as_deref(), Some(PEM_TOKEN_SECRET));
        let data = token.data.unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["pixie"],
            "its own key only"
        );
        let owners = token.metadata.owner_references.unwrap();
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].controller),
            ("Vizier", None)
        );
    }

    /// (Secret name, key) that env var `name` comes from; it must carry no value itself.
    fn secret_ref<'a>(env: &'a [EnvVar], name: &str) -> (&'a str, &'a str) {
        let var = env.iter().find(|e| e.name == name).unwrap();
        assert_eq!(
            var.value, None,
            "{name}: the value itself is not in the object"
        );
        let from = var
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(from.optional, Some(false));
        (from.name.as_str(), from.key.as_str())
    }

    #[test]
    fn the_api_key_secret_is_opaque_owned_by_the_vizier_and_holds_the_key() {
        let vz = vizier(VizierSpec::default());
        let secret = api_key_secret(&vz, "0123abcd").unwrap();
        let m = &secret.metadata;
        assert_eq!(m.name.as_deref(), Some("pixie-api-key"));
        assert_eq!(m.name.as_deref(), Some(Names::of("pixie").api_key.as_str()));
        assert_eq!(m.namespace.as_deref(), Some("pl"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data["key"].0, b"0123abcd");
        assert_eq!(secret.string_data, None);
        let owner = &m.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Vizier", "pixie", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(m.labels.as_ref().unwrap()[VIZIER_LABEL], "pixie");
        let mut nameless = vz.clone();
        nameless.metadata.uid = None;
        assert!(
            api_key_secret(&nameless, "k").is_err(),
            "no owner, no Secret"
        );
    }
}
