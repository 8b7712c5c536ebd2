//! The operator's errors.

/// What can go wrong while reconciling or electing a leader.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Vizier's memory quantity could not be turned into bytes.
    #[error("{field} {value:?} is not a positive memory quantity like 2Gi")]
    InvalidQuantity {
        /// The spec field (`pemMemoryLimit`, `pemMemoryRequest`).
        field: &'static str,
        /// What the spec said.
        value: String,
    },
    /// `pemMemoryRequest` is larger than `pemMemoryLimit`.
    #[error("pemMemoryRequest ({request} bytes) exceeds pemMemoryLimit ({limit} bytes)")]
    RequestAboveLimit {
        /// The request, in bytes.
        request: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// `dataCollectorParams.datastreamBufferSize` outside what the PEM accepts.
    #[error(
        "dataCollectorParams.datastreamBufferSize {0} must be between 1024 and 1048576 bytes: the PEM holds it per connection and direction"
    )]
    DatastreamBuffer(u32),
    /// A `spec.patches` entry cannot be applied.
    #[error(transparent)]
    Patch(#[from] crate::patches::PatchError),
    /// A shared watch has not listed its objects yet.
    #[error("the operator's watch of the {what} has not synced yet (its log says why)")]
    CacheNotSynced {
        /// What the watch is of.
        what: &'static str,
    },
    /// The object lacks a name, namespace or uid the API server always sets.
    #[error("the object has no {field}")]
    MissingMetadata {
        /// Which field is missing.
        field: &'static str,
    },
    /// Applying a child object failed.
    #[error("cannot apply {kind} {name}")]
    Apply {
        /// Kind of the child.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading the children or pods failed.
    #[error("cannot read {what}")]
    Read {
        /// What was being read.
        what: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing an object's status failed.
    #[error("cannot write the status of {kind} {name}")]
    PatchStatus {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading, creating or renewing the leader-election Lease failed.
    #[error("leader election on Lease {namespace}/{name}")]
    Lease {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Another candidate took the leader-election Lease over.
    #[error("lost the leader-election Lease {namespace}/{name} to another operator")]
    LeadershipLost {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
    },
    /// Adding or removing a finalizer, or the work under it, failed.
    #[error("finalizer {finalizer}")]
    Finalizer {
        /// The finalizer.
        finalizer: &'static str,
        /// What failed.
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
    /// A PEM did not confirm that it removed a probe or reset its retention, so the
    /// object's finalizer stays until it does.
    #[error("the PEM on node {node} did not answer")]
    PemCall {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: crate::pem::CallError,
    },
    /// Reading random bytes for a new API key failed.
    #[error("cannot read random bytes for an API key")]
    RandomKey {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing one of a Vizier's Secrets failed (creating the API key's other than
    /// because it exists, applying its part of a shared one).
    #[error("cannot write Secret {name}")]
    WriteSecret {
        /// The Secret's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A call about cert-manager's objects failed (its CRDs missing, among others).
    #[error("{what} (is cert-manager installed, and the Vizier's issuerRef right?)")]
    CertManager {
        /// What failed.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A certificate could not be made.
    #[error("cannot make Vizier {vizier}'s certificates")]
    Certificate {
        /// The Vizier.
        vizier: String,
        /// Why.
        #[source]
        source: crate::certs::CertError,
    },
    /// Encoding an object as JSON failed (a bug).
    #[error("cannot encode {what} as JSON")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A short, fixed label for metrics and logs: the kind of failure, without the details.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidQuantity { .. } => "invalid_quantity",
            Self::RequestAboveLimit { .. } => "request_above_limit",
            Self::DatastreamBuffer(_) => "invalid_datastream_buffer",
            Self::Patch(_) => "invalid_patch",
            Self::CacheNotSynced { .. } => "cache_not_synced",
            Self::MissingMetadata { .. } => "missing_metadata",
            Self::Apply { .. } => "apply",
            Self::Read { .. } => "read",
            Self::PatchStatus { .. } => "patch_status",
            Self::Lease { .. } => "lease",
            Self::LeadershipLost { .. } => "leadership_lost",
            Self::Finalizer { .. } => "finalizer",
            Self::PemCall { .. } => "pem_call",
            Self::RandomKey { .. } => "random_key",
            Self::WriteSecret { .. } => "write_secret",
            Self::Certificate { .. } => "certificate",
            Self::CertManager { .. } => "cert_manager",
            Self::Encode { .. } => "encode",
        }
    }

    /// Whether the user must change the spec before a retry can succeed.
    pub fn is_spec_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidQuantity { .. }
                | Self::RequestAboveLimit { .. }
                | Self::DatastreamBuffer(_)
                | Self::Patch(_)
        )
    }
}
