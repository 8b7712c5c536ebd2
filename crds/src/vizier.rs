//! `Vizier`: one deployment of the system (PEMs on every node, Kelvin, their RBAC).
//!
//! The spec keeps the field names of Pixie's own `px.dev/v1alpha1` Vizier, so a manifest
//! written for Pixie's operator applies unchanged. Fields that only mean something to
//! Pixie Cloud are accepted and listed by [`VizierSpec::ignored_fields`], which the
//! operator reports in the `IgnoredFields` condition.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::{
    ConditionStatus, DEGRADED, DesiredCondition, IGNORED_FIELDS, READY, RECONCILING, STALLED,
    toggle,
};

/// A memory quantity that is not negative: `2Gi`, `512Mi`, `1.5G`, `1073741824`.
pub(crate) const MEMORY_QUANTITY_PATTERN: &str = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// The desired state of a Vizier: what to run, with how much memory, where.
// Several `printcolumn(type_ = "string", ..)` look like duplicated attributes to clippy.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "px.dev",
    version = "v1alpha1",
    kind = "Vizier",
    namespaced,
    status = "VizierStatus",
    shortname = "vz",
    category = "px",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Vizier deploys the PEMs (one per node) and Kelvin, the query node, in its namespace. The spec keeps the field names of Pixie's Vizier resource.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.vizierPhase",
        description = "High-level phase: Healthy, Updating, Degraded, Unhealthy"
    ),
    printcolumn(
        name = "PEMs",
        type_ = "string",
        json_path = ".status.pemsReady",
        description = "PEMs ready / desired"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "Version running"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VizierSpec {
    /// Version of the PEM and Kelvin images to run. Empty means the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub version: Option<String>,
    /// Display name of the cluster, shown by clients. Defaults to the Vizier's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub cluster_name: Option<String>,
    /// Memory limit of each PEM container (a Kubernetes quantity, e.g. `2Gi`; default
    /// `2Gi`). The tables' byte budgets are derived from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = MEMORY_QUANTITY_PATTERN))]
    pub pem_memory_limit: Option<String>,
    /// Memory request of each PEM container (a quantity). Defaults to `pemMemoryLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = MEMORY_QUANTITY_PATTERN))]
    pub pem_memory_request: Option<String>,
    /// Level of data scripts may read: `Full` (default), `Restricted` (sensitive columns
    /// redacted) or `PIIRestricted` (best-effort redaction of personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_access: Option<DataAccess>,
    /// Settings of the PEMs' data collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_collector_params: Option<DataCollectorParams>,
    /// Labels, annotations, resources and placement of the pods the operator creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodPolicy>,
    /// Image registry to pull from instead of the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub registry: Option<String>,
    /// Strategic merge patches (JSON or YAML text) applied to the generated objects,
    /// keyed by the name of the object they patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<BTreeMap<String, String>>,
    /// Issue the certificates inside the Vizier (the PEMs', Kelvin's, the operator's)
    /// from a cert-manager issuer instead of the operator's own CA in the `px-tls`
    /// Secret. Not a field of Pixie's Vizier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManager>,

    /// Pixie Cloud only: the deploy key linking the Vizier to a Pixie Cloud org.
    /// Accepted and ignored (there is no cloud here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_key: Option<String>,
    /// Pixie Cloud only: secret holding the deploy key. Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_deploy_key_secret: Option<String>,
    /// Pixie Cloud only: automatic updates from the cloud. Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_auto_update: Option<bool>,
    /// Pixie only: etcd as the metadata store. There is no metadata service here.
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_etcd_operator: Option<bool>,
    /// Pixie Cloud only: the cloud's address. Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_addr: Option<String>,
    /// Pixie Cloud only: namespace of a development cloud. Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_cloud_namespace: Option<String>,
    /// Pixie only: timestamp conversion routine (`default` or `grpc`). Accepted and
    /// ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_converter: Option<ClockConverter>,
    /// Pixie only: leader election of Pixie's own control-plane pods. Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leadership_election_params: Option<LeadershipElectionParams>,
    /// Pixie only: GKE Autopilot variant of Pixie's manifests. Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autopilot: Option<bool>,
}

impl VizierSpec {
    /// The Pixie-Cloud-only fields set in this spec, by their field names, in a fixed
    /// order. They are accepted so that Pixie's manifests apply, and have no effect.
    pub fn ignored_fields(&self) -> Vec<&'static str> {
        [
            ("deployKey", self.deploy_key.is_some()),
            (
                "customDeployKeySecret",
                self.custom_deploy_key_secret.is_some(),
            ),
            ("disableAutoUpdate", self.disable_auto_update.is_some()),
            ("useEtcdOperator", self.use_etcd_operator.is_some()),
            ("cloudAddr", self.cloud_addr.is_some()),
            ("devCloudNamespace", self.dev_cloud_namespace.is_some()),
            ("clockConverter", self.clock_converter.is_some()),
            (
                "leadershipElectionParams",
                self.leadership_election_params.is_some(),
            ),
            ("autopilot", self.autopilot.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// The fields set in this spec that this implementation accepts and does not apply
    /// yet, by their paths: listed in the `IgnoredFields` condition rather than dropped
    /// silently.
    pub fn unhonoured_fields(&self) -> Vec<&'static str> {
        let spike = self
            .data_collector_params
            .as_ref()
            .is_some_and(|p| p.datastream_buffer_spike_size.is_some());
        [("dataCollectorParams.datastreamBufferSpikeSize", spike)]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect()
    }

    /// The `IgnoredFields` condition for this spec: True, naming the fields not applied
    /// (not honoured yet, and Pixie Cloud's), when any is set; False otherwise.
    pub fn ignored_fields_condition(&self) -> DesiredCondition {
        let ignored = self.ignored_fields();
        let unhonoured = self.unhonoured_fields();
        if !unhonoured.is_empty() {
            let mut message = format!(
                "these fields are accepted and not applied yet: {}",
                unhonoured.join(", ")
            );
            if !ignored.is_empty() {
                message.push_str(&format!(
                    "; these only mean something to Pixie Cloud and are ignored: {}",
                    ignored.join(", ")
                ));
            }
            return DesiredCondition::new(
                IGNORED_FIELDS,
                ConditionStatus::True,
                "NotHonoured",
                message,
            );
        }
        if ignored.is_empty() {
            DesiredCondition::new(
                IGNORED_FIELDS,
                ConditionStatus::False,
                "NoIgnoredFields",
                "",
            )
        } else {
            DesiredCondition::new(
                IGNORED_FIELDS,
                ConditionStatus::True,
                "PixieCloudFields",
                format!(
                    "these fields only mean something to Pixie Cloud and are ignored: {}",
                    ignored.join(", ")
                ),
            )
        }
    }
}

/// Certificates from cert-manager: the operator makes a `Certificate` for the PEMs and
/// one for Kelvin (cert-manager writes and renews their Secrets `<vizier>-pem-tls` and
/// `<vizier>-kelvin-tls`) and a `CertificateRequest` for its own client certificate,
/// whose key never leaves the operator. The issuer must write the CA certificate it
/// signs with as `ca.crt` (CA, Vault and self-signed issuers do): the PEMs trust it for
/// their clients, Kelvin and the operator for the PEMs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManager {
    /// The issuer, as cert-manager's `issuerRef`.
    pub issuer_ref: IssuerRef,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (in the Vizier's namespace, the default) or `ClusterIssuer`, or an
    /// external issuer's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub kind: Option<String>,
    /// Its API group (default `cert-manager.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub group: Option<String>,
}

/// Level of data scripts may read: `Full` (the default: every column as recorded),
/// `Restricted` (columns that may hold sensitive data, such as HTTP bodies, redacted) or
/// `PIIRestricted` (best-effort redaction of personal data).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DataAccess {
    /// Every column as recorded.
    Full,
    /// Columns that may hold sensitive data (e.g. HTTP bodies) are redacted.
    Restricted,
    /// Best-effort redaction of IPs, emails, MAC addresses, card numbers and IMEIs.
    #[serde(rename = "PIIRestricted")]
    PiiRestricted,
}

/// Pixie only: timestamp conversion routine, `default` or `grpc`. Accepted and ignored.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClockConverter {
    /// The default routine.
    Default,
    /// The gRPC clock-sync integration.
    Grpc,
}

/// Settings of the PEMs' data collection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataCollectorParams {
    /// Bytes the PEM buffers per connection and direction while a message's head (request
    /// or status line and headers) is incomplete: 1024 to 1048576 (default 8 KiB; a longer
    /// head is not parsed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastream_buffer_size: Option<u32>,
    /// Largest temporary size a connection's buffer may reach before it is processed.
    /// Accepted and not applied (listed in `IgnoredFields`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastream_buffer_spike_size: Option<u32>,
    /// Extra environment variables for the PEM container (Pixie's `PL_*` flags).
    #[serde(
        default,
        rename = "customPEMFlags",
        skip_serializing_if = "Option::is_none"
    )]
    pub custom_pem_flags: Option<BTreeMap<String, String>>,
    /// Record the values of credential headers (`Authorization`, `Cookie`, `Set-Cookie`,
    /// `Proxy-Authorization`, `X-Api-Key`) in `http_events`. By default (false) they are
    /// recorded as present with the value `[REDACTED]`. Not a field of Pixie's Vizier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_credential_headers: Option<bool>,
}

/// Pixie's leader election settings (accepted, ignored).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeadershipElectionParams {
    /// How often an election runs, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_period_ms: Option<i64>,
}

/// Labels, annotations, resources and placement of the pods the operator creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodPolicy {
    /// Labels added to every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Resource requests and limits of the containers (the PEM's memory comes from
    /// `pemMemoryLimit` / `pemMemoryRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels a pod's node must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Security context of the pods that need no privileges (Kelvin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
}

/// Security context for the pods that need no privileges.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    /// Whether to set a security context at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Supplemental group applied to all containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
    /// UID the containers run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    /// GID the containers run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
}

/// The observed state of a Vizier: Pixie's status fields beside the standard ones.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VizierStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Ready`, `Reconciling`, `Stalled`, `Degraded`, `IgnoredFields`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Version actually running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// High-level phase (Pixie's `vizierPhase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vizier_phase: Option<VizierPhase>,
    /// Machine-readable reason for the phase, e.g. `PEMsSomeInsufficientMemory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vizier_reason: Option<String>,
    /// Where the operator is in deploying the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciliation_phase: Option<ReconciliationPhase>,
    /// When `reconciliationPhase` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconciliation_phase_time: Option<Time>,
    /// Human-readable text for the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Version of the operator that wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_version: Option<String>,
    /// Checksum of the last spec deployed (Pixie's field; base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// PEM counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pems: Option<PemCounts>,
    /// `ready/desired` PEMs, for `kubectl get vz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pems_ready: Option<String>,
}

/// How many PEMs should run, run the current spec, and are ready.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PemCounts {
    /// Nodes that should run a PEM.
    pub desired: i32,
    /// PEMs running the current spec.
    #[serde(default)]
    pub updated: i32,
    /// PEMs ready.
    pub ready: i32,
}

impl PemCounts {
    /// `ready/desired`, the PEMS column of `kubectl get vz`.
    pub fn summary(&self) -> String {
        format!("{}/{}", self.ready, self.desired)
    }
}

/// High-level phase (Pixie's `vizierPhase`): `Healthy`, `Updating`, `Degraded`
/// (queryable, some PEMs failing), `Unhealthy` or `Disconnected` (Pixie only).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VizierPhase {
    /// Kept for Pixie compatibility; not set by this operator (there is no cloud).
    Disconnected,
    /// Every PEM and Kelvin ready.
    Healthy,
    /// Being created or rolled.
    Updating,
    /// Not queryable.
    Unhealthy,
    /// Queryable, but some PEMs fail: data from their nodes is missing.
    Degraded,
}

impl VizierPhase {
    /// The phase Pixie gives a `vizierReason` (its `ReasonToPhase`): no reason is
    /// `Healthy`; `CloudConnectorMissing` is `Disconnected`; too little memory on some
    /// PEMs, incompatible kernels or a high PEM failure rate are `Degraded`; any other
    /// reason is `Unhealthy`. `Updating` is set while rolling, not derived from a reason.
    pub fn from_reason(reason: &str) -> Self {
        match reason {
            "" => Self::Healthy,
            "CloudConnectorMissing" => Self::Disconnected,
            "PEMsSomeInsufficientMemory" | "KernelVersionsIncompatible" | "PEMsHighFailureRate" => {
                Self::Degraded
            }
            _ => Self::Unhealthy,
        }
    }

    /// The `Ready`, `Reconciling`, `Stalled` and `Degraded` conditions for this phase,
    /// with `reason` (CamelCase; the phase's name when empty) and `message`.
    ///
    /// Healthy: Ready. Updating: Reconciling. Degraded: Degraded (not Ready, since not
    /// every node is covered, though the Vizier answers queries). Unhealthy and
    /// Disconnected: Stalled.
    pub fn conditions(self, reason: &str, message: &str) -> Vec<DesiredCondition> {
        let name = match self {
            Self::Disconnected => "Disconnected",
            Self::Healthy => "Healthy",
            Self::Updating => "Updating",
            Self::Unhealthy => "Unhealthy",
            Self::Degraded => "Degraded",
        };
        let reason = if reason.is_empty() { name } else { reason };
        let (ready, reconciling, stalled, degraded) = match self {
            Self::Healthy => (true, false, false, false),
            Self::Degraded => (false, false, false, true),
            Self::Updating => (false, true, false, false),
            Self::Unhealthy | Self::Disconnected => (false, false, true, false),
        };
        vec![
            if ready {
                DesiredCondition::new(READY, true, name, message)
            } else {
                DesiredCondition::new(READY, false, reason, message)
            },
            toggle(RECONCILING, reconciling, reason, message, "Settled"),
            toggle(STALLED, stalled, reason, message, "NotStalled"),
            toggle(DEGRADED, degraded, reason, message, "NotDegraded"),
        ]
    }
}

/// Where the operator is in deploying the spec (Pixie's `reconciliationPhase`):
/// `Updating`, `Ready` or `Failed`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReconciliationPhase {
    /// The spec is deployed.
    Ready,
    /// The spec is being deployed.
    Updating,
    /// Deploying the spec failed.
    Failed,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::conditions::ConditionStatus;

    #[test]
    fn pixie_cloud_fields_are_listed_as_ignored() {
        let spec: VizierSpec = serde_json::from_value(serde_json::json!({
            "version": "0.14.0",
            "deployKey": "px-dep-123",
            "cloudAddr": "withpixie.ai:443",
            "useEtcdOperator": true,
            "pemMemoryLimit": "2Gi",
        }))
        .unwrap();
        assert_eq!(
            spec.ignored_fields(),
            ["deployKey", "useEtcdOperator", "cloudAddr"]
        );
        let cond = spec.ignored_fields_condition();
        assert_eq!(cond.type_, "IgnoredFields");
        assert_eq!(cond.status, ConditionStatus::True);
        assert!(
            cond.message
                .ends_with("deployKey, useEtcdOperator, cloudAddr"),
            "{}",
            cond.message
        );
    }

    #[test]
    fn fields_accepted_and_not_applied_are_named() {
        let spec: VizierSpec = serde_json::from_value(serde_json::json!({
            "dataAccess": "Restricted",
            "dataCollectorParams": {"datastreamBufferSize": 65536, "datastreamBufferSpikeSize": 1},
            "deployKey": "k",
        }))
        .unwrap();
        let cond = spec.ignored_fields_condition();
        assert_eq!(
            (cond.status, cond.reason.as_str()),
            (ConditionStatus::True, "NotHonoured")
        );
        assert_eq!(
            cond.message,
            "these fields are accepted and not applied yet: dataCollectorParams.datastreamBufferSpikeSize; these only mean something to Pixie Cloud and are ignored: deployKey"
        );
        for access in ["Full", "Restricted", "PIIRestricted"] {
            let spec: VizierSpec =
                serde_json::from_value(serde_json::json!({ "dataAccess": access })).unwrap();
            assert!(
                spec.unhonoured_fields().is_empty(),
                "the PEMs apply {access}"
            );
        }
    }

    #[test]
    fn a_spec_without_cloud_fields_ignores_nothing() {
        let spec = VizierSpec {
            pem_memory_limit: Some("1Gi".into()),
            ..VizierSpec::default()
        };
        assert!(spec.ignored_fields().is_empty());
        assert_eq!(
            spec.ignored_fields_condition().status,
            ConditionStatus::False
        );
    }

    #[test]
    fn pixie_names_round_trip() {
        let json = serde_json::json!({
            "dataAccess": "PIIRestricted",
            "clockConverter": "grpc",
            "dataCollectorParams": {"customPEMFlags": {"PL_TABLE_STORE_DATA_LIMIT_MB": "1024"}},
        });
        let spec: VizierSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(spec.data_access, Some(DataAccess::PiiRestricted));
        assert_eq!(spec.clock_converter, Some(ClockConverter::Grpc));
        assert_eq!(serde_json::to_value(&spec).unwrap(), json);
    }

    #[test]
    fn pixie_reasons_map_to_pixie_phases() {
        assert_eq!(VizierPhase::from_reason(""), VizierPhase::Healthy);
        assert_eq!(
            VizierPhase::from_reason("PEMsHighFailureRate"),
            VizierPhase::Degraded
        );
        assert_eq!(
            VizierPhase::from_reason("CloudConnectorMissing"),
            VizierPhase::Disconnected
        );
        assert_eq!(
            VizierPhase::from_reason("PEMsAllFailing"),
            VizierPhase::Unhealthy
        );
    }

    fn status_of(conds: &[DesiredCondition], t: &str) -> ConditionStatus {
        conds.iter().find(|c| c.type_ == t).unwrap().status
    }

    #[test]
    fn phases_give_the_conditions_kstatus_reads() {
        use ConditionStatus::{False, True};
        let table = [
            (VizierPhase::Healthy, [True, False, False, False]),
            (VizierPhase::Updating, [False, True, False, False]),
            (VizierPhase::Degraded, [False, False, False, True]),
            (VizierPhase::Unhealthy, [False, False, True, False]),
        ];
        for (phase, want) in table {
            let conds = phase.conditions("", "");
            let got = [READY, RECONCILING, STALLED, DEGRADED].map(|t| status_of(&conds, t));
            assert_eq!(got, want, "{phase:?}");
        }
        let conds = VizierPhase::Degraded.conditions("PEMsHighFailureRate", "2 of 5 PEMs crash");
        let degraded = conds.iter().find(|c| c.type_ == DEGRADED).unwrap();
        assert_eq!(degraded.reason, "PEMsHighFailureRate");
        assert_eq!(degraded.message, "2 of 5 PEMs crash");
        let stalled = conds.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(
            (stalled.reason.as_str(), stalled.message.as_str()),
            ("NotStalled", "")
        );
    }

    #[test]
    fn pems_summary_is_ready_over_desired() {
        let counts = PemCounts {
            desired: 5,
            updated: 5,
            ready: 3,
        };
        assert_eq!(counts.summary(), "3/5");
    }
}
