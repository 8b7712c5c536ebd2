//! The kinds the emulator serves: the built-in ones and those installed by CRDs.

use serde_json::Value;

/// One printer column of a Table response (a CRD's `additionalPrinterColumns` entry).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PrinterColumn {
    pub(crate) name: String,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean` or `date`.
    pub(crate) type_: String,
    pub(crate) json_path: String,
    pub(crate) description: String,
    pub(crate) priority: i64,
    pub(crate) format: String,
}

/// A served resource: names, scope, subresources and, for CRDs, schema and columns.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub(crate) group: String,
    /// Every served version; the first is where objects are stored.
    pub(crate) versions: Vec<String>,
    pub(crate) kind: String,
    pub(crate) plural: String,
    pub(crate) singular: String,
    pub(crate) short_names: Vec<String>,
    pub(crate) categories: Vec<String>,
    pub(crate) namespaced: bool,
    pub(crate) has_status: bool,
    /// Whether `metadata.generation` is tracked (bumped on spec changes).
    pub(crate) tracks_generation: bool,
    /// The structural schema of a CRD version (`openAPIV3Schema`), per version.
    pub(crate) schemas: Vec<(String, Value)>,
    /// A CRD's columns, or the built-in columns for a few kinds; NAME always comes first.
    pub(crate) columns: Vec<PrinterColumn>,
    /// Whether this resource comes from a CRD (and so is removed with it).
    pub(crate) from_crd: bool,
}

impl Resource {
    /// `v1` or `apps/v1` for the given version.
    pub(crate) fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The version objects are stored at.
    pub(crate) fn storage_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    pub(crate) fn schema(&self, version: &str) -> Option<&Value> {
        self.schemas
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, s)| s)
    }

    pub(crate) fn qualified(&self) -> crate::status::Qualified<'_> {
        crate::status::Qualified {
            group: &self.group,
            plural: &self.plural,
            kind: &self.kind,
        }
    }
}

fn column(name: &str, type_: &str, json_path: &str, priority: i64) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        json_path: json_path.into(),
        description: String::new(),
        priority,
        format: String::new(),
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    has_status: bool,
    all: bool,
}

// One line per kind reads as a table.
#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    Builtin { group: "", version: "v1", kind: "Namespace", plural: "namespaces", short: &["ns"], namespaced: false, has_status: true, all: false },
    Builtin { group: "", version: "v1", kind: "Node", plural: "nodes", short: &["no"], namespaced: false, has_status: true, all: false },
    Builtin { group: "", version: "v1", kind: "Pod", plural: "pods", short: &["po"], namespaced: true, has_status: true, all: true },
    Builtin { group: "", version: "v1", kind: "Service", plural: "services", short: &["svc"], namespaced: true, has_status: true, all: true },
    Builtin { group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", short: &["sa"], namespaced: true, has_status: false, all: false },
    Builtin { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", short: &["cm"], namespaced: true, has_status: false, all: false },
    Builtin { group: "", version: "v1", kind: "Secret", plural: "secrets", short: &[], namespaced: true, has_status: false, all: false },
    Builtin { group: "", version: "v1", kind: "Event", plural: "events", short: &["ev"], namespaced: true, has_status: false, all: false },
    Builtin { group: "apps", version: "v1", kind: "DaemonSet", plural: "daemonsets", short: &["ds"], namespaced: true, has_status: true, all: true },
    Builtin { group: "apps", version: "v1", kind: "Deployment", plural: "deployments", short: &["deploy"], namespaced: true, has_status: true, all: true },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRole", plural: "clusterroles", short: &[], namespaced: false, has_status: false, all: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRoleBinding", plural: "clusterrolebindings", short: &[], namespaced: false, has_status: false, all: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "Role", plural: "roles", short: &[], namespaced: true, has_status: false, all: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "RoleBinding", plural: "rolebindings", short: &[], namespaced: true, has_status: false, all: false },
    Builtin { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", short: &[], namespaced: true, has_status: false, all: false },
    Builtin { group: "events.k8s.io", version: "v1", kind: "Event", plural: "events", short: &["ev"], namespaced: true, has_status: false, all: false },
    Builtin { group: "apiextensions.k8s.io", version: "v1", kind: "CustomResourceDefinition", plural: "customresourcedefinitions", short: &["crd", "crds"], namespaced: false, has_status: true, all: false },
];

/// The columns real printers use for the kinds a user lists most; NAME/AGE otherwise.
fn builtin_columns(kind: &str) -> Vec<PrinterColumn> {
    let age = column("Age", "date", ".metadata.creationTimestamp", 0);
    let mut cols = match kind {
        // Computed columns (READY, STATUS, ...) are filled in by `table`.
        "Pod" => vec![
            column("Ready", "string", "", 0),
            column("Status", "string", "", 0),
            column("Restarts", "string", "", 0),
            age,
            column("IP", "string", ".status.podIP", 1),
            column("Node", "string", ".spec.nodeName", 1),
            column("Nominated Node", "string", ".status.nominatedNodeName", 1),
            column("Readiness Gates", "string", ".spec.readinessGates", 1),
        ],
        "Deployment" => vec![
            column("Ready", "string", "", 0),
            column("Up-to-date", "integer", ".status.updatedReplicas", 0),
            column("Available", "integer", ".status.availableReplicas", 0),
            age,
        ],
        "DaemonSet" => vec![
            column("Desired", "integer", ".status.desiredNumberScheduled", 0),
            column("Current", "integer", ".status.currentNumberScheduled", 0),
            column("Ready", "integer", ".status.numberReady", 0),
            column("Up-to-date", "integer", ".status.updatedNumberScheduled", 0),
            column("Available", "integer", ".status.numberAvailable", 0),
            column("Node Selector", "string", "", 0),
            age,
        ],
        "Node" => vec![
            column("Status", "string", "", 0),
            column("Roles", "string", "", 0),
            age,
            column("Version", "string", ".status.nodeInfo.kubeletVersion", 0),
        ],
        "Namespace" => vec![column("Status", "string", ".status.phase", 0), age],
        "Service" => vec![
            column("Type", "string", ".spec.type", 0),
            column("Cluster-IP", "string", ".spec.clusterIP", 0),
            column("External-IP", "string", "", 0),
            column("Port(s)", "string", "", 0),
            age,
            column("Selector", "string", "", 1),
        ],
        "ConfigMap" => vec![column("Data", "integer", "", 0), age],
        // As `kubectl get events` shows them; the name column is dropped below.
        "Event" => vec![
            column("Last Seen", "string", "", 0),
            column("Type", "string", "", 0),
            column("Reason", "string", "", 0),
            column("Object", "string", "", 0),
            column("Message", "string", "", 0),
        ],
        _ => vec![age],
    };
    let mut name = column("Name", "string", ".metadata.name", 0);
    name.format = "name".into();
    // The event printer shows NAME last, and only with `-o wide`.
    if kind == "Event" {
        name.priority = 1;
        cols.push(name);
    } else {
        cols.insert(0, name);
    }
    cols
}

/// The built-in resources, in discovery order.
pub(crate) fn builtins() -> Vec<Resource> {
    BUILTINS
        .iter()
        .map(|b| Resource {
            group: b.group.into(),
            versions: vec![b.version.into()],
            kind: b.kind.into(),
            plural: b.plural.into(),
            singular: b.kind.to_lowercase(),
            short_names: b.short.iter().map(|s| s.to_string()).collect(),
            categories: if b.all { vec!["all".into()] } else { vec![] },
            namespaced: b.namespaced,
            has_status: b.has_status,
            tracks_generation: matches!(
                b.kind,
                "Deployment" | "DaemonSet" | "Pod" | "CustomResourceDefinition"
            ),
            schemas: vec![],
            columns: builtin_columns(b.kind),
            from_crd: false,
        })
        .collect()
}

/// The default columns of a custom resource without `additionalPrinterColumns`.
pub(crate) fn crd_columns(additional: &[PrinterColumn]) -> Vec<PrinterColumn> {
    let mut name = column("Name", "string", ".metadata.name", 0);
    name.format = "name".into();
    let mut cols = vec![name];
    if additional.is_empty() {
        cols.push(column("Age", "date", ".metadata.creationTimestamp", 0));
    } else {
        cols.extend(additional.iter().cloned());
    }
    cols
}
