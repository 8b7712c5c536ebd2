//! Kubernetes metadata in PxL: `df.ctx[...]` and the `px.upid_to_*`, `px.pod_id_to_*`,
//! `px.ip_to_*` functions, with Pixie's semantics. A pod or a service is written
//! `namespace/name`; a pod behind several services names them as a JSON list; what is
//! unknown resolves to an empty string.
//!
//! The compiler knows nothing of where metadata comes from: the caller hands it a
//! [`MetadataLookup`] (Kelvin's cluster cache, or `px local`'s process table), consulted
//! when the plan runs, not when it is compiled.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, Int64Array, StringArray,
    TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// What is known of one process, by its UPID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessMeta {
    /// Its command line.
    pub cmdline: String,
    /// The UID of its pod; empty for a process of the host.
    pub pod_uid: String,
    /// Its container's id (without the runtime's `containerd://` prefix); empty on the host.
    pub container_id: String,
    /// Its container's name in the pod spec, when the pod is known.
    pub container_name: String,
}

/// What is known of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The node it is scheduled on.
    pub node: String,
    /// When it started, ns since the epoch (0: not yet).
    pub start_time_ns: i64,
    /// `status.phase` (`Running`, `Pending`, ...).
    pub phase: String,
    /// `status.message`, `status.reason`: why it is in that phase.
    pub message: String,
    /// `status.reason`.
    pub reason: String,
    /// Whether its Ready condition is True.
    pub ready: bool,
    /// The UIDs of the services it is an endpoint of.
    pub service_uids: Vec<String>,
    /// The Deployment that owns it through a ReplicaSet, as `namespace/name`.
    pub deployment: String,
    /// The ReplicaSet that owns it, as `namespace/name`.
    pub replica_set: String,
    /// Its own address (empty for a pod on the host's network).
    pub ip: String,
}

/// The state of one container, as Pixie names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    /// `Running`, `Waiting`, `Terminated` or `Unknown`.
    pub state: String,
    /// Why it is in that state.
    pub reason: String,
    /// The state's message.
    pub message: String,
}

/// What is known of one service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceMeta {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Where PxL's metadata functions find their answers. Every method answers `None` when
/// it does not know; the functions turn that into Pixie's empty string.
pub trait MetadataLookup: Send + Sync + std::fmt::Debug {
    /// The process with this UPID.
    fn process(&self, upid: u128) -> Option<ProcessMeta>;
    /// The node whose PEM writes UPIDs with this ASID.
    fn asid_node(&self, asid: u32) -> Option<String>;
    /// The state of the container with this id.
    fn container_status(&self, _id: &str) -> Option<ContainerMeta> {
        None
    }
    /// The pod with this UID.
    fn pod(&self, _uid: &str) -> Option<PodMeta> {
        None
    }
    /// The UID of the pod `namespace/name`.
    fn pod_uid_by_name(&self, _namespaced: &str) -> Option<String> {
        None
    }
    /// The UID of the pod that has this IP address (not one on the host's network).
    fn pod_uid_by_ip(&self, _ip: &str) -> Option<String> {
        None
    }
    /// The service with this UID.
    fn service(&self, _uid: &str) -> Option<ServiceMeta> {
        None
    }
    /// The UID of the service `namespace/name`.
    fn service_uid_by_name(&self, _namespaced: &str) -> Option<String> {
        None
    }
    /// The UID of the service whose cluster IP this is.
    fn service_uid_by_ip(&self, _ip: &str) -> Option<String> {
        None
    }
    /// The node that has this IP address.
    fn node_by_ip(&self, _ip: &str) -> Option<String> {
        None
    }
}

/// A lookup that knows nothing: every function answers an empty string.
#[derive(Debug)]
pub(crate) struct NoMetadata;

impl MetadataLookup for NoMetadata {
    fn process(&self, _upid: u128) -> Option<ProcessMeta> {
        None
    }
    fn asid_node(&self, _asid: u32) -> Option<String> {
        None
    }
}

/// `namespace/name`.
fn namespaced(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn pod_of(m: &dyn MetadataLookup, upid: u128) -> Option<(String, PodMeta)> {
    let uid = m.process(upid)?.pod_uid;
    let pod = m.pod(&uid)?;
    Some((uid, pod))
}

/// Pixie's way of naming several services: one as itself, more as a JSON list.
fn service_list(names: Vec<String>) -> String {
    match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        _ => serde_json::Value::from(names).to_string(),
    }
}

fn services_of(m: &dyn MetadataLookup, pod: &PodMeta, ids: bool) -> String {
    let mut names: Vec<String> = pod
        .service_uids
        .iter()
        .filter_map(|uid| {
            if ids {
                Some(uid.clone())
            } else {
                m.service(uid).map(|s| namespaced(&s.namespace, &s.name))
            }
        })
        .collect();
    names.sort();
    service_list(names)
}

fn pod_status_json(pod: &PodMeta) -> String {
    serde_json::json!({
        "phase": pod.phase,
        "message": pod.message,
        "reason": pod.reason,
        "ready": pod.ready,
    })
    .to_string()
}

fn asid_of(upid: u128) -> u32 {
    // Bits 96..128: the truncation keeps exactly them.
    (upid >> 96) as u32
}

/// What a function takes and how it answers.
#[derive(Clone, Copy)]
enum Resolver {
    /// A UPID to text.
    Upid(fn(&dyn MetadataLookup, u128) -> Option<String>),
    /// Text (a pod id, a name, an address) to text.
    Text(fn(&dyn MetadataLookup, &str) -> Option<String>),
    /// Text to a time (ns since the epoch).
    TextToTime(fn(&dyn MetadataLookup, &str) -> Option<i64>),
}

/// Every metadata function, by its `px.` name.
fn resolver(name: &str) -> Option<Resolver> {
    use Resolver::{Text, TextToTime, Upid};
    Some(match name {
        "upid_to_pod_id" => Upid(|m, u| m.process(u).map(|p| p.pod_uid)),
        "upid_to_pod_name" => {
            Upid(|m, u| pod_of(m, u).map(|(_, p)| namespaced(&p.namespace, &p.name)))
        }
        "upid_to_namespace" => Upid(|m, u| pod_of(m, u).map(|(_, p)| p.namespace)),
        "upid_to_node_name" | "upid_to_hostname" => Upid(|m, u| {
            pod_of(m, u)
                .map(|(_, p)| p.node)
                .filter(|n| !n.is_empty())
                .or_else(|| m.asid_node(asid_of(u)))
        }),
        "upid_to_service_name" => Upid(|m, u| pod_of(m, u).map(|(_, p)| services_of(m, &p, false))),
        "upid_to_service_id" => Upid(|m, u| pod_of(m, u).map(|(_, p)| services_of(m, &p, true))),
        "upid_to_container_name" => Upid(|m, u| m.process(u).map(|p| p.container_name)),
        "upid_to_container_id" => Upid(|m, u| m.process(u).map(|p| p.container_id)),
        "upid_to_cmdline" => Upid(|m, u| m.process(u).map(|p| p.cmdline)),
        "upid_to_deployment_name" => Upid(|m, u| pod_of(m, u).map(|(_, p)| p.deployment)),
        "upid_to_replicaset_name" => Upid(|m, u| pod_of(m, u).map(|(_, p)| p.replica_set)),
        "upid_to_pod_status" => Upid(|m, u| pod_of(m, u).map(|(_, p)| pod_status_json(&p))),
        "ip_to_pod_id" => Text(|m, ip| m.pod_uid_by_ip(ip)),
        "ip_to_service_id" => Text(|m, ip| m.service_uid_by_ip(ip)),
        "ip_to_node_name" => Text(|m, ip| m.node_by_ip(ip)),
        // Pixie's JSON; a container nobody knows is in state Unknown.
        "container_id_to_status" => Text(|m, id| {
            let status = m.container_status(id).unwrap_or_else(|| ContainerMeta {
                state: "Unknown".to_owned(),
                ..ContainerMeta::default()
            });
            Some(
                serde_json::json!({
                    "state": status.state,
                    "message": status.message,
                    "reason": status.reason,
                })
                .to_string(),
            )
        }),
        "pod_id_to_pod_name" => Text(|m, id| m.pod(id).map(|p| namespaced(&p.namespace, &p.name))),
        "pod_id_to_namespace" => Text(|m, id| m.pod(id).map(|p| p.namespace)),
        "pod_id_to_node_name" => Text(|m, id| m.pod(id).map(|p| p.node)),
        "pod_id_to_service_name" => Text(|m, id| m.pod(id).map(|p| services_of(m, &p, false))),
        "pod_id_to_service_id" => Text(|m, id| m.pod(id).map(|p| services_of(m, &p, true))),
        "pod_id_to_deployment_name" => Text(|m, id| m.pod(id).map(|p| p.deployment)),
        "pod_id_to_replicaset_name" => Text(|m, id| m.pod(id).map(|p| p.replica_set)),
        "pod_name_to_pod_id" => Text(|m, name| m.pod_uid_by_name(name)),
        "pod_name_to_namespace" => Text(|m, name| {
            m.pod_uid_by_name(name)
                .and_then(|id| m.pod(&id))
                .map(|p| p.namespace)
        }),
        "pod_name_to_node_name" => Text(|m, name| {
            m.pod_uid_by_name(name)
                .and_then(|id| m.pod(&id))
                .map(|p| p.node)
        }),
        "pod_name_to_service_name" => Text(|m, name| {
            let pod = m.pod(&m.pod_uid_by_name(name)?)?;
            Some(services_of(m, &pod, false))
        }),
        "pod_name_to_service_id" => Text(|m, name| {
            let pod = m.pod(&m.pod_uid_by_name(name)?)?;
            Some(services_of(m, &pod, true))
        }),
        "pod_name_to_pod_ip" => Text(|m, name| m.pod(&m.pod_uid_by_name(name)?).map(|p| p.ip)),
        "pod_id_to_pod_ip" => Text(|m, id| m.pod(id).map(|p| p.ip)),
        "pod_name_to_status" => Text(|m, name| {
            let pod = m.pod(&m.pod_uid_by_name(name)?)?;
            Some(pod_status_json(&pod))
        }),
        "pod_name_to_start_time" => TextToTime(|m, name| {
            let pod = m.pod(&m.pod_uid_by_name(name)?)?;
            Some(pod.start_time_ns)
        }),
        "service_id_to_service_name" => {
            Text(|m, id| m.service(id).map(|s| namespaced(&s.namespace, &s.name)))
        }
        "service_name_to_service_id" => Text(|m, name| m.service_uid_by_name(name)),
        "service_name_to_namespace" => Text(|_, name| {
            Some(
                name.split_once('/')
                    .map(|(ns, _)| ns.to_owned())
                    .unwrap_or_default(),
            )
        }),
        // Pixie resolves an address through DNS; here, through what the cluster knows:
        // the pod or service that has it, else the address itself.
        "nslookup" => Text(|m, ip| {
            m.pod_uid_by_ip(ip)
                .and_then(|id| m.pod(&id))
                .map(|p| namespaced(&p.namespace, &p.name))
                .or_else(|| {
                    m.service_uid_by_ip(ip)
                        .and_then(|id| m.service(&id))
                        .map(|s| namespaced(&s.namespace, &s.name))
                })
                .or_else(|| Some(ip.to_owned()))
        }),
        _ => return None,
    })
}

/// Every metadata function's name, return type and argument types (Pixie's type names),
/// for `px.GetUDFList()`.
pub(crate) fn signatures()
-> impl Iterator<Item = (&'static str, &'static str, &'static [&'static str])> {
    METADATA_FUNCTIONS.iter().filter_map(|name| {
        Some(match resolver(name)? {
            Resolver::Upid(_) => (*name, "STRING", &["UINT128"][..]),
            Resolver::Text(_) => (*name, "STRING", &["STRING"][..]),
            Resolver::TextToTime(_) => (*name, "TIME64NS", &["STRING"][..]),
        })
    })
}

/// Whether `px.<name>` is a metadata function.
pub(crate) fn is_metadata_function(name: &str) -> bool {
    resolver(name).is_some()
}

/// The function `df.ctx[key]` stands for in a DataFrame of pods (with `pod_id`, no
/// `upid`): `"pod_id"` for the id itself.
pub(crate) fn pod_context_function(key: &str) -> Option<&'static str> {
    Some(match key {
        "pod" | "pod_name" => "pod_id_to_pod_name",
        "pod_id" => "pod_id",
        "namespace" => "pod_id_to_namespace",
        "service" | "service_name" => "pod_id_to_service_name",
        "service_id" => "pod_id_to_service_id",
        "node" | "node_name" | "hostname" | "host" => "pod_id_to_node_name",
        "deployment" | "deployment_name" => "pod_id_to_deployment_name",
        "replicaset" | "replica_set" | "replicaset_name" => "pod_id_to_replicaset_name",
        _ => return None,
    })
}

/// The function `df.ctx[key]` stands for (`None`: a key resolved otherwise, or unknown).
pub(crate) fn context_function(key: &str) -> Option<&'static str> {
    Some(match key {
        "pod" | "pod_name" => "upid_to_pod_name",
        "pod_id" => "upid_to_pod_id",
        "namespace" => "upid_to_namespace",
        "service" | "service_name" => "upid_to_service_name",
        "service_id" => "upid_to_service_id",
        "node" | "node_name" | "hostname" | "host" => "upid_to_node_name",
        "container" | "container_name" => "upid_to_container_name",
        "container_id" => "upid_to_container_id",
        "cmdline" | "cmd" => "upid_to_cmdline",
        "deployment" | "deployment_name" => "upid_to_deployment_name",
        "replicaset" | "replica_set" | "replicaset_name" => "upid_to_replicaset_name",
        _ => return None,
    })
}

/// One metadata function over one lookup.
pub(crate) struct MetadataFunction {
    name: &'static str,
    resolver: Resolver,
    signature: Signature,
    lookup: Arc<dyn MetadataLookup>,
}

impl std::fmt::Debug for MetadataFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetadataFunction({})", self.name)
    }
}

// One lookup per compiled script: equal when the name and the lookup are.
impl PartialEq for MetadataFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.lookup, &other.lookup)
    }
}

impl Eq for MetadataFunction {}

impl std::hash::Hash for MetadataFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        Arc::as_ptr(&self.lookup).cast::<()>().hash(state);
    }
}

impl MetadataFunction {
    /// `px.<name>` over `lookup`, if `name` is a metadata function.
    pub(crate) fn udf(name: &str, lookup: Arc<dyn MetadataLookup>) -> Option<Arc<ScalarUDF>> {
        let resolver = resolver(name)?;
        // The name as a 'static: the same strings `resolver` matched.
        let name = METADATA_FUNCTIONS.iter().copied().find(|n| *n == name)?;
        let arg = match resolver {
            Resolver::Upid(_) => DataType::FixedSizeBinary(16),
            Resolver::Text(_) | Resolver::TextToTime(_) => DataType::Utf8,
        };
        Some(Arc::new(ScalarUDF::new_from_impl(Self {
            name,
            resolver,
            signature: Signature::exact(vec![arg], Volatility::Stable),
            lookup,
        })))
    }
}

/// The names [`resolver`] knows, for `px.GetUDFList()` and for 'static names.
pub(crate) const METADATA_FUNCTIONS: &[&str] = &[
    "upid_to_pod_id",
    "container_id_to_status",
    "upid_to_pod_name",
    "upid_to_namespace",
    "upid_to_node_name",
    "upid_to_hostname",
    "upid_to_service_name",
    "upid_to_service_id",
    "upid_to_container_name",
    "upid_to_container_id",
    "upid_to_cmdline",
    "upid_to_deployment_name",
    "upid_to_replicaset_name",
    "upid_to_pod_status",
    "ip_to_pod_id",
    "ip_to_service_id",
    "ip_to_node_name",
    "pod_id_to_pod_name",
    "pod_id_to_namespace",
    "pod_id_to_node_name",
    "pod_id_to_service_name",
    "pod_id_to_service_id",
    "pod_id_to_deployment_name",
    "pod_id_to_replicaset_name",
    "pod_name_to_pod_id",
    "pod_name_to_namespace",
    "pod_name_to_node_name",
    "pod_name_to_service_name",
    "pod_name_to_service_id",
    "pod_name_to_status",
    "pod_name_to_start_time",
    "pod_name_to_pod_ip",
    "pod_id_to_pod_ip",
    "service_id_to_service_name",
    "service_name_to_service_id",
    "service_name_to_namespace",
    "nslookup",
];

impl ScalarUDFImpl for MetadataFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.resolver {
            Resolver::TextToTime(_) => DataType::Timestamp(TimeUnit::Nanosecond, None),
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("px.{} takes one argument", self.name);
        };
        let array = arg.to_array(args.number_rows)?;
        let lookup = self.lookup.as_ref();
        let out: ArrayRef = match self.resolver {
            Resolver::Upid(f) => {
                let Some(upids) = array.as_any().downcast_ref::<FixedSizeBinaryArray>() else {
                    return exec_err!("px.{} takes a UPID column", self.name);
                };
                let values: StringArray = (0..upids.len())
                    .map(|i| {
                        let upid = <[u8; 16]>::try_from(upids.value(i)).ok()?;
                        upids
                            .is_valid(i)
                            .then(|| f(lookup, u128::from_be_bytes(upid)).unwrap_or_default())
                    })
                    .collect();
                Arc::new(values)
            }
            Resolver::Text(f) => {
                let text = strings(&array, self.name)?;
                let values: StringArray = text
                    .iter()
                    .map(|v| v.map(|v| f(lookup, v).unwrap_or_default()))
                    .collect();
                Arc::new(values)
            }
            Resolver::TextToTime(f) => {
                let text = strings(&array, self.name)?;
                let values: TimestampNanosecondArray = text
                    .iter()
                    .map(|v| v.map(|v| f(lookup, v).unwrap_or_default()))
                    .collect();
                Arc::new(values)
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

fn strings<'a>(array: &'a ArrayRef, name: &str) -> Result<&'a StringArray> {
    match array.as_any().downcast_ref::<StringArray>() {
        Some(s) => Ok(s),
        None => exec_err!("px.{name} takes a string column"),
    }
}

/// `px.upid_to_asid(upid)`: the ASID in a UPID's top 32 bits.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct UpidToAsid {
    signature: Signature,
}

impl UpidToAsid {
    pub(crate) fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            signature: Signature::exact(vec![DataType::FixedSizeBinary(16)], Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for UpidToAsid {
    fn name(&self) -> &str {
        "upid_to_asid"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("px.upid_to_asid takes one argument");
        };
        let array = arg.to_array(args.number_rows)?;
        let Some(upids) = array.as_any().downcast_ref::<FixedSizeBinaryArray>() else {
            return exec_err!("px.upid_to_asid takes a UPID column");
        };
        let values: Int64Array = (0..upids.len())
            .map(|i| {
                let upid = <[u8; 16]>::try_from(upids.value(i)).ok()?;
                upids
                    .is_valid(i)
                    .then(|| i64::from(asid_of(u128::from_be_bytes(upid))))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(values)))
    }
}

/// `px.has_service_name(service, name)`: whether a row's service (one name, or Pixie's
/// JSON list of names) includes `name`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct HasServiceName {
    signature: Signature,
}

impl HasServiceName {
    pub(crate) fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Utf8],
                Volatility::Immutable,
            ),
        }))
    }
}

/// Whether `services` (a name or a JSON list of names) includes `name`.
pub(crate) fn includes_service(services: &str, name: &str) -> bool {
    if services.starts_with('[') {
        serde_json::from_str::<Vec<String>>(services)
            .is_ok_and(|list| list.iter().any(|s| s == name))
    } else {
        services == name
    }
}

impl ScalarUDFImpl for HasServiceName {
    fn name(&self) -> &str {
        "has_service_name"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [services, name] = args.args.as_slice() else {
            return exec_err!("px.has_service_name takes a service column and a name");
        };
        let services = services.to_array(args.number_rows)?;
        let names = name.to_array(args.number_rows)?;
        let (services, names) = (
            strings(&services, "has_service_name")?,
            strings(&names, "has_service_name")?,
        );
        let values: BooleanArray = services
            .iter()
            .zip(names.iter())
            .map(|(s, n)| Some(includes_service(s?, n?)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_services_are_a_json_list_one_is_its_name() {
        assert_eq!(service_list(vec![]), "");
        assert_eq!(service_list(vec!["a/x".into()]), "a/x");
        assert_eq!(
            service_list(vec!["a/x".into(), "a/y".into()]),
            r#"["a/x","a/y"]"#
        );
        assert!(includes_service(r#"["a/x","a/y"]"#, "a/y"));
        assert!(includes_service("a/x", "a/x"));
        assert!(!includes_service("a/x", "a/y"));
        assert!(!includes_service("[broken", "a/y"));
    }

    #[test]
    fn every_listed_function_resolves_and_every_resolver_is_listed() {
        for name in METADATA_FUNCTIONS {
            assert!(resolver(name).is_some(), "{name}");
            assert!(
                MetadataFunction::udf(name, Arc::new(NoMetadata)).is_some(),
                "{name}"
            );
        }
        assert!(resolver("upid_to_nothing").is_none());
    }
}
