//! Tables read from PEMs over the network: Kelvin's side of a distributed query.
//!
//! Each PEM's tables are a DataFusion [`TableProvider`] whose scan has one partition per
//! PEM. The scan sends each PEM the columns the query needs, its time window and the
//! filters DataFusion can push down, serialized with `datafusion-proto`; the PEM applies
//! them next to its data and streams back Arrow IPC. Pushed filters are marked inexact,
//! so DataFusion applies them again here: pushdown saves bytes, it never decides what the
//! answer is.
//!
//! A PEM that cannot be reached fails the query with an error that names it: an answer
//! without one node's data would look complete and be wrong.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType, lit};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion_proto::bytes::Serializeable as _;
use futures_util::{StreamExt as _, TryStreamExt as _};
use px_api::auth::Bearer;
use px_api::pem::probe_service_client::ProbeServiceClient;
use px_api::pem::table_service_client::TableServiceClient;
use px_api::pem::{
    ListProbesRequest, ListProcessesRequest, ListProcessesResponse, ListTablesRequest, ProbeState,
    ScanRequest,
};
use px_tablestore::TimeRange;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::metadata::pushdown::{self, reads_only_upid};

/// How long Kelvin waits for a PEM to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long Kelvin waits for a PEM to list its tables.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one PEM's part of a scan may take, unless told otherwise.
pub const DEFAULT_SCAN_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message Kelvin accepts from a PEM (PEMs send about 1 MiB at most).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Functions every PEM can evaluate: DataFusion's own. A filter that calls anything
/// else (PxL's functions) is applied by Kelvin only.
static PEM_FUNCTIONS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    datafusion::functions::all_default_functions()
        .iter()
        .map(|f| f.name().to_owned())
        .collect()
});

/// Why a PEM could not take part in a query.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The PEM's address is not a URI.
    #[error("PEM {name}: {addr:?} is not an address like http://10.0.0.7:50400 ({reason})")]
    BadAddress {
        /// The PEM's name.
        name: String,
        /// The address given.
        addr: String,
        /// What the parser said.
        reason: String,
    },
    /// The PEM did not answer.
    #[error(
        "PEM {name} ({addr}) is unavailable: {reason}. The query did not run: without that node's data its answer would be incomplete"
    )]
    Unavailable {
        /// The PEM's name.
        name: String,
        /// Its address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// Kelvin does not know the PEMs yet.
    #[error("{0}; the query did not run. Kelvin's log says why if this lasts")]
    NotKnown(String),
    /// The PEM did not send all of a table's rows in time.
    #[error(
        "PEM {name} ({addr}) did not finish scanning {table} within {timeout:?} (kelvin --scan-timeout); the query was stopped rather than answered without that node's rows. Narrow the query's time window, or raise the timeout"
    )]
    DeadlineExceeded {
        /// The PEM's name.
        name: String,
        /// Its address.
        addr: String,
        /// The table scanned.
        table: String,
        /// The deadline it missed.
        timeout: Duration,
    },
}

/// One PEM: its name (its node's) and a connection to its table service.
#[derive(Clone)]
pub struct RemotePem {
    name: String,
    addr: String,
    channel: Channel,
    client: TableServiceClient<InterceptedService<Channel, Bearer>>,
    probes: ProbeServiceClient<InterceptedService<Channel, Bearer>>,
}

impl fmt::Debug for RemotePem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PEM {} ({})", self.name, self.addr)
    }
}

impl RemotePem {
    /// A PEM named `name` serving at `addr` (`http://host:port`, or `https://` with
    /// `tls`). Connects lazily: a PEM that is down is reported by the first query that
    /// needs it.
    ///
    /// # Errors
    /// [`PemError::BadAddress`] when `addr` is not a URI or TLS cannot be set up.
    pub fn new(name: &str, addr: &str, tls: Option<ClientTlsConfig>) -> Result<Self, PemError> {
        let bad = |e: tonic::transport::Error| PemError::BadAddress {
            name: name.to_owned(),
            addr: addr.to_owned(),
            reason: e.to_string(),
        };
        let mut endpoint = Endpoint::from_shared(addr.to_owned()).map_err(bad)?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(bad)?;
        }
        let channel = endpoint.connect_timeout(CONNECT_TIMEOUT).connect_lazy();
        Ok(Self::with_channel(name, addr, channel))
    }

    fn with_channel(name: &str, addr: &str, channel: Channel) -> Self {
        Self::clients(name, addr, channel, Bearer::default())
    }

    fn clients(name: &str, addr: &str, channel: Channel, bearer: Bearer) -> Self {
        Self {
            name: name.to_owned(),
            addr: addr.to_owned(),
            client: TableServiceClient::with_interceptor(channel.clone(), bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            probes: ProbeServiceClient::with_interceptor(channel.clone(), bearer),
            channel,
        }
    }

    /// Presents `token` (the PEMs' `--service-token`) on every call to this PEM.
    ///
    /// # Errors
    /// [`PemError::BadAddress`] when the token cannot be sent (not printable ASCII).
    pub fn with_token(
        self,
        token: Option<&px_api::secret::SecretString>,
    ) -> Result<Self, PemError> {
        let bearer = Bearer::new(token).map_err(|reason| PemError::BadAddress {
            name: self.name.clone(),
            addr: self.addr.clone(),
            reason,
        })?;
        Ok(Self::clients(&self.name, &self.addr, self.channel, bearer))
    }

    /// The PEM's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PEM's address.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn unavailable(&self, reason: impl fmt::Display) -> PemError {
        PemError::Unavailable {
            name: self.name.clone(),
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    async fn list_probes(&self) -> Result<Vec<ProbeState>, PemError> {
        let mut client = self.probes.clone();
        let response = tokio::time::timeout(LIST_TIMEOUT, client.list_probes(ListProbesRequest {}))
            .await
            .map_err(|_| self.unavailable(format!("no answer within {LIST_TIMEOUT:?}")))?
            .map_err(|status| self.unavailable(describe(&status)))?;
        Ok(response.into_inner().probes)
    }

    /// What changed in the PEM's process table since `(epoch, version)`; `None` from a
    /// PEM that does not serve it.
    async fn list_processes(
        &self,
        (epoch, after_version): (String, u64),
    ) -> Result<Option<ListProcessesResponse>, PemError> {
        let mut client = self.client.clone();
        let request = ListProcessesRequest {
            epoch,
            after_version,
        };
        match tokio::time::timeout(LIST_TIMEOUT, client.list_processes(request)).await {
            Err(_) => Err(self.unavailable(format!("no answer within {LIST_TIMEOUT:?}"))),
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Ok(Err(status)) => Err(self.unavailable(describe(&status))),
            Ok(Ok(response)) => Ok(Some(response.into_inner())),
        }
    }

    async fn list_tables(&self) -> Result<Vec<RemoteTableInfo>, PemError> {
        let mut client = self.client.clone();
        let response = tokio::time::timeout(LIST_TIMEOUT, client.list_tables(ListTablesRequest {}))
            .await
            .map_err(|_| self.unavailable(format!("no answer within {LIST_TIMEOUT:?}")))?
            .map_err(|status| self.unavailable(describe(&status)))?;
        response
            .into_inner()
            .tables
            .into_iter()
            .map(|t| {
                let schema = decode_ipc(&t.arrow_schema_ipc)
                    .map(|(schema, _)| schema)
                    .map_err(|e| {
                        self.unavailable(format!("unreadable schema of {}: {e}", t.name))
                    })?;
                Ok(RemoteTableInfo {
                    name: t.name,
                    schema,
                })
            })
            .collect()
    }
}

/// What a gRPC status says, without its binary details.
fn describe(status: &tonic::Status) -> String {
    let source = std::error::Error::source(status).map(|s| format!(" ({s})"));
    format!("{}{}", status.message(), source.unwrap_or_default())
}

struct RemoteTableInfo {
    name: String,
    schema: SchemaRef,
}

/// The PEMs queries fan out to: a set that changes while Kelvin runs (PEMs come, go and
/// move: [`crate::discovery`]). Each query takes the set as it is when the query starts
/// and keeps it to the end.
#[derive(Clone, Debug)]
pub struct RemotePems {
    members: Arc<RwLock<Members>>,
    /// Their processes, when Kelvin keeps them: filters on a row's process are then
    /// pushed down as sets of UPIDs.
    metadata: Option<crate::metadata::ClusterMetadata>,
    /// How long one PEM's part of a scan may take.
    scan_timeout: Duration,
}

impl RemotePems {
    /// The PEMs queries fan out to, until [`RemotePems::replace`] changes them.
    #[must_use]
    pub fn new(pems: Vec<RemotePem>) -> Self {
        Self {
            members: Arc::new(RwLock::new(Members {
                pems: pems.into(),
                unknown: None,
            })),
            metadata: None,
            scan_timeout: DEFAULT_SCAN_TIMEOUT,
        }
    }

    /// Pushes filters on a row's process down as sets of the UPIDs `metadata` knows.
    #[must_use]
    pub fn with_metadata(mut self, metadata: crate::metadata::ClusterMetadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Stops a scan, and fails its query naming the PEM, when one PEM has not sent all
    /// its rows within `timeout`.
    #[must_use]
    pub fn with_scan_timeout(mut self, timeout: Duration) -> Self {
        self.scan_timeout = timeout;
        self
    }

    /// Makes `pems` the set the next queries fan out to; queries running keep theirs.
    pub fn replace(&self, pems: Vec<RemotePem>) {
        let mut members = self
            .members
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        members.pems = pems.into();
        members.unknown = None;
    }

    /// Until the next [`RemotePems::replace`], queries fail with `reason`: the set is
    /// not known, and an empty one would answer as if there were no data.
    pub fn set_unknown(&self, reason: String) {
        self.members
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unknown = Some(reason);
    }

    /// Whether the set is known.
    #[must_use]
    pub fn is_known(&self) -> bool {
        self.members
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unknown
            .is_none()
    }

    /// The PEMs as they are now.
    #[must_use]
    pub fn current(&self) -> Arc<[RemotePem]> {
        Arc::clone(
            &self
                .members
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pems,
        )
    }

    /// The PEMs a query starts with, or why there are none to ask.
    fn for_query(&self) -> Result<Arc<[RemotePem]>, PemError> {
        let members = self
            .members
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &members.unknown {
            Some(reason) => Err(PemError::NotKnown(reason.clone())),
            None => Ok(Arc::clone(&members.pems)),
        }
    }

    /// The PEMs' names.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.current().iter().map(|p| p.name.clone()).collect()
    }

    /// Each PEM's probes, by PEM name; a PEM that does not answer is named with why.
    pub async fn probes(&self) -> Vec<(String, Result<Vec<ProbeState>, PemError>)> {
        let pems = self.current();
        let listed = futures_util::future::join_all(pems.iter().map(RemotePem::list_probes)).await;
        pems.iter().map(|p| p.name.clone()).zip(listed).collect()
    }

    /// Brings `metadata`'s copy of every PEM's processes up to date (what changed since
    /// the last call), asking all PEMs at once; forgets PEMs that left.
    ///
    /// # Errors
    /// [`PemError::Unavailable`] for the first PEM that did not answer.
    pub async fn sync_processes(
        &self,
        metadata: &crate::metadata::ClusterMetadata,
    ) -> Result<(), PemError> {
        let pems = self.for_query()?;
        let asked = futures_util::future::join_all(pems.iter().map(|pem| {
            let position = metadata.with_processes(|d| d.position(&pem.name));
            pem.list_processes(position)
        }))
        .await;
        let names: HashSet<&str> = pems.iter().map(|p| p.name.as_str()).collect();
        metadata.update_processes(|d| d.retain_pems(|name| names.contains(name)));
        for (pem, answer) in pems.iter().zip(asked) {
            if let Some(response) = answer? {
                metadata.update_processes(|d| d.apply(&pem.name, response));
            }
        }
        Ok(())
    }

    /// The tables of every PEM, as one catalog. A table some PEMs lack is read from
    /// those that have it (a pod-target Tracepoint's table lives on its pods' nodes
    /// only); its columns are all the PEMs' columns, and a scan of a column that not
    /// every such PEM has, or has with another type, fails naming them.
    ///
    /// # Errors
    /// [`PemError::Unavailable`] for the first PEM that did not answer.
    pub async fn tables(&self) -> Result<BTreeMap<String, Arc<dyn TableProvider>>, PemError> {
        let pems = self.for_query()?;
        let listed = futures_util::future::join_all(pems.iter().map(RemotePem::list_tables)).await;
        let mut holders: BTreeMap<String, Vec<(RemotePem, SchemaRef)>> = BTreeMap::new();
        for (pem, pem_tables) in pems.iter().zip(listed) {
            for table in pem_tables? {
                holders
                    .entry(table.name)
                    .or_default()
                    .push((pem.clone(), table.schema));
            }
        }
        Ok(holders
            .into_iter()
            .map(|(name, holders)| {
                let table = RemoteTable::spanning(name.clone(), &holders, self);
                (name, Arc::new(table) as Arc<dyn TableProvider>)
            })
            .collect())
    }
}

/// The PEMs as they are known now.
#[derive(Debug)]
struct Members {
    pems: Arc<[RemotePem]>,
    /// Why the set is not known yet (the PEM pods not listed yet); queries fail with it.
    unknown: Option<String>,
}

/// The PEMs one scan reads.
#[derive(Clone, Debug)]
struct ScanPems {
    pems: Arc<[RemotePem]>,
    metadata: Option<crate::metadata::ClusterMetadata>,
    scan_timeout: Duration,
}

impl ScanPems {
    fn names(&self) -> Vec<String> {
        self.pems.iter().map(|p| p.name.clone()).collect()
    }
}

/// A table as the union of its rows on every PEM that has it.
#[derive(Debug)]
struct RemoteTable {
    name: String,
    schema: SchemaRef,
    pems: ScanPems,
    /// Columns not every PEM of the table has as the schema says: why, by column.
    uneven: BTreeMap<String, String>,
}

#[async_trait]
impl TableProvider for RemoteTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if pem_can_evaluate(f) || (self.pems.metadata.is_some() && reads_only_upid(f)) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(indices) => Arc::new(self.schema.project(indices)?),
            None => Arc::clone(&self.schema),
        };
        self.check_even(&schema)?;
        // A query that needs no column (a count) still needs the rows: fetch the
        // narrowest column every PEM has and drop it here.
        let columns: Vec<String> = if schema.fields().is_empty() {
            self.schema
                .fields()
                .iter()
                .map(|f| f.name())
                .find(|name| !self.uneven.contains_key(*name))
                .into_iter()
                .cloned()
                .collect()
        } else {
            schema.fields().iter().map(|f| f.name().clone()).collect()
        };
        let range = TimeRange::from_filters(filters);
        let pushed: Vec<Expr> = filters
            .iter()
            .filter(|f| pem_can_evaluate(f))
            .cloned()
            .map(unnormalize_col)
            .collect();
        let on_process: Vec<&Expr> = filters
            .iter()
            .filter(|f| !pem_can_evaluate(f) && reads_only_upid(f))
            .collect();
        let per_pem = self.process_filters(&on_process);
        let filter = serialize(pushed.iter().cloned())?;
        let per_pem_filters = per_pem
            .into_iter()
            .map(|own| serialize(pushed.iter().cloned().chain(own)))
            .collect::<DfResult<Vec<_>>>()?;
        let request = ScanRequest {
            table: self.name.clone(),
            columns,
            start_time_ns: range.start,
            end_time_ns: range.end,
            filter,
            limit: limit.and_then(|l| u32::try_from(l).ok()).unwrap_or(0),
        };
        Ok(Arc::new(RemoteScanExec::new(
            schema,
            request,
            per_pem_filters,
            self.pems.clone(),
        )))
    }
}

impl RemoteTable {
    /// Table `name` over the PEMs that hold it, each with its own schema. The columns
    /// are the first PEM's, then those only later ones have; a column some PEM lacks or
    /// types differently is noted, so that only a scan that needs it fails.
    fn spanning(name: String, holders: &[(RemotePem, SchemaRef)], all: &RemotePems) -> Self {
        let mut fields: Vec<arrow_schema::FieldRef> = Vec::new();
        for (_, schema) in holders {
            for field in schema.fields() {
                if !fields.iter().any(|f| f.name() == field.name()) {
                    fields.push(Arc::clone(field));
                }
            }
        }
        let mut uneven = BTreeMap::new();
        for field in &fields {
            let mut lacking = Vec::new();
            let mut differing = Vec::new();
            for (pem, schema) in holders {
                match schema.field_with_name(field.name()) {
                    Err(_) => lacking.push(pem.name.as_str()),
                    Ok(f) if f.data_type() != field.data_type() => {
                        differing.push(format!("{} ({})", pem.name, f.data_type()));
                    }
                    Ok(_) => {}
                }
            }
            let mut why = Vec::new();
            if !lacking.is_empty() {
                why.push(format!("PEMs without it: {}", lacking.join(", ")));
            }
            if !differing.is_empty() {
                why.push(format!(
                    "typed {} on {}, otherwise on {}",
                    field.data_type(),
                    holders[0].0.name,
                    differing.join(", ")
                ));
            }
            if !why.is_empty() {
                uneven.insert(field.name().clone(), why.join("; "));
            }
        }
        let metadata = holders
            .first()
            .map(|(_, s)| s.metadata().clone())
            .unwrap_or_default();
        Self {
            name,
            schema: Arc::new(arrow_schema::Schema::new_with_metadata(fields, metadata)),
            pems: ScanPems {
                pems: holders.iter().map(|(p, _)| p.clone()).collect(),
                metadata: all.metadata.clone(),
                scan_timeout: all.scan_timeout,
            },
            uneven,
        }
    }

    /// Fails a scan that needs a column the PEMs disagree on (during a rollout, PEMs of
    /// two versions), naming the PEMs and the columns.
    fn check_even(&self, scanned: &SchemaRef) -> DfResult<()> {
        let uneven: Vec<String> = scanned
            .fields()
            .iter()
            .filter_map(|f| {
                self.uneven
                    .get(f.name())
                    .map(|why| format!("{} ({why})", f.name()))
            })
            .collect();
        if uneven.is_empty() {
            return Ok(());
        }
        let shared: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|name| !self.uneven.contains_key(*name))
            .collect();
        Err(DataFusionError::Plan(format!(
            "table {} differs between PEMs (PEMs of two versions, during a rollout?): column {}. Select only the columns every PEM has ({}), or query again when the PEMs run one version",
            self.name,
            uneven.join(", column "),
            shared.join(", ")
        )))
    }

    /// For each PEM, `filters` (on a row's process) as sets of its UPIDs; empty when
    /// Kelvin keeps no processes or the table has no `upid`.
    fn process_filters(&self, filters: &[&Expr]) -> Vec<Vec<Expr>> {
        let (Some(metadata), Ok(field)) = (
            &self.pems.metadata,
            self.schema.field_with_name(pushdown::UPID),
        ) else {
            return Vec::new();
        };
        if filters.is_empty() {
            return Vec::new();
        }
        self.pems
            .pems
            .iter()
            .map(|pem| {
                let Some((asid, upids)) = metadata.with_processes(|d| d.pem_upids(&pem.name))
                else {
                    return Vec::new();
                };
                filters
                    .iter()
                    .filter_map(|f| pushdown::upid_filter(f, field, asid, &upids))
                    .filter(|f| *f != lit(true))
                    .collect()
            })
            .collect()
    }
}

/// Filters as one serialized conjunction; empty for none.
fn serialize(filters: impl Iterator<Item = Expr>) -> DfResult<Vec<u8>> {
    Ok(match filters.reduce(Expr::and) {
        Some(filter) => filter.to_bytes()?.to_vec(),
        None => Vec::new(),
    })
}

/// Whether a PEM can evaluate `filter`: it calls DataFusion's functions only.
fn pem_can_evaluate(filter: &Expr) -> bool {
    let mut ok = true;
    let _ = filter.apply(|e| {
        if let Expr::ScalarFunction(f) = e
            && !PEM_FUNCTIONS.contains(f.func.name())
        {
            ok = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ok
}

/// The scan of one table on every PEM, one partition per PEM.
#[derive(Debug)]
struct RemoteScanExec {
    schema: SchemaRef,
    request: ScanRequest,
    /// Each PEM's own filter, when it has one (filters on a row's process, as its UPIDs);
    /// otherwise the request's.
    per_pem_filters: Vec<Vec<u8>>,
    pems: ScanPems,
    properties: Arc<PlanProperties>,
}

impl RemoteScanExec {
    fn new(
        schema: SchemaRef,
        request: ScanRequest,
        per_pem_filters: Vec<Vec<u8>>,
        pems: ScanPems,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(pems.pems.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            schema,
            request,
            per_pem_filters,
            pems,
            properties,
        }
    }
}

impl DisplayAs for RemoteScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RemoteScanExec: table={}, columns=[{}], pems=[{}], filter={}B",
            self.request.table,
            self.request.columns.join(", "),
            self.pems.names().join(", "),
            self.per_pem_filters
                .iter()
                .map(Vec::len)
                .max()
                .unwrap_or(self.request.filter.len())
        )
    }
}

impl ExecutionPlan for RemoteScanExec {
    fn name(&self) -> &'static str {
        "RemoteScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = Arc::clone(&self.schema);
        let Some(pem) = self.pems.pems.get(partition).cloned() else {
            // No PEM at all: an empty table.
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures_util::stream::empty(),
            )));
        };
        let mut request = self.request.clone();
        if let Some(own) = self.per_pem_filters.get(partition) {
            request.filter.clone_from(own);
        }
        let target = Arc::clone(&schema);
        let deadline = tokio::time::Instant::now() + self.pems.scan_timeout;
        let timeout = self.pems.scan_timeout;
        let table = request.table.clone();
        let late = move |pem: &RemotePem| {
            external(PemError::DeadlineExceeded {
                name: pem.name.clone(),
                addr: pem.addr.clone(),
                table: table.clone(),
                timeout,
            })
        };
        let batches = async move {
            let mut client = pem.client.clone();
            let responses = tokio::time::timeout_at(deadline, client.scan(request))
                .await
                .map_err(|_| late(&pem))?
                .map_err(|status| external(pem.unavailable(describe(&status))))?
                .into_inner();
            let pem_for_errors = pem.clone();
            let decode = move |response: Result<px_api::pem::ScanResponse, tonic::Status>| {
                let response =
                    response.map_err(|s| external(pem_for_errors.unavailable(describe(&s))))?;
                let (_, batch) = decode_ipc(&response.arrow_ipc).map_err(|e| {
                    external(pem_for_errors.unavailable(format!("unreadable Arrow IPC: {e}")))
                })?;
                conform(batch, &target)
            };
            // Each batch must come before the scan's deadline; past it the stream ends
            // with the error, and dropping the stream cancels the call on the PEM.
            let rows = futures_util::stream::unfold(Some(responses), move |responses| {
                let late = late.clone();
                let pem = pem.clone();
                async move {
                    let mut responses = responses?;
                    match tokio::time::timeout_at(deadline, responses.next()).await {
                        Err(_) => Some((Err(late(&pem)), None)),
                        Ok(None) => None,
                        Ok(Some(item)) => Some((Ok(item), Some(responses))),
                    }
                }
            });
            Ok::<_, DataFusionError>(rows.map(move |item| item.and_then(&decode)))
        };
        let stream = futures_util::stream::once(batches).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

fn external(error: PemError) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

/// A PEM's batch in the scan's schema: the same columns with the table's metadata (or
/// no column at all, for a count).
fn conform(batch: Option<RecordBatch>, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let Some(batch) = batch else {
        return Ok(RecordBatch::new_empty(Arc::clone(schema)));
    };
    if schema.fields().is_empty() {
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        return Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            Vec::new(),
            &options,
        )?);
    }
    Ok(RecordBatch::try_new(
        Arc::clone(schema),
        batch.columns().to_vec(),
    )?)
}

/// An IPC stream: its schema and its first batch, if any.
fn decode_ipc(bytes: &[u8]) -> Result<(SchemaRef, Option<RecordBatch>), arrow_schema::ArrowError> {
    let mut reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema: SchemaRef = reader.schema();
    let batch = reader.next().transpose()?;
    Ok((schema, batch))
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    #[test]
    fn filters_with_px_functions_stay_in_kelvin() {
        assert!(pem_can_evaluate(&col("resp_status").gt_eq(lit(400))));
        assert!(pem_can_evaluate(
            &datafusion::functions::expr_fn::lower(col("req_path")).eq(lit("/x"))
        ));
        let px_udf =
            datafusion::logical_expr::ScalarUDF::new_from_impl(pxl_test_udf::PxOnly::default());
        assert!(!pem_can_evaluate(
            &px_udf.call(vec![col("upid")]).eq(lit(1))
        ));
    }

    #[tokio::test]
    async fn filters_on_the_process_go_to_each_pem_as_its_upids() {
        use arrow_schema::{DataType, Field, Schema};
        use px_api::pem::ProcessEntry;

        let upid = |asid: u32, pid: u32| (u128::from(asid) << 96) | (u128::from(pid) << 64);
        let metadata = crate::metadata::ClusterMetadata::default();
        for (pem, asid) in [("node-a", 1), ("node-b", 2)] {
            let response = ListProcessesResponse {
                epoch: "e".into(),
                version: 1,
                full: true,
                asid,
                node: pem.into(),
                processes: (10..13)
                    .map(|pid| ProcessEntry {
                        upid: upid(asid, pid).to_be_bytes().to_vec(),
                        ..ProcessEntry::default()
                    })
                    .collect(),
            };
            metadata.update_processes(|d| d.apply(pem, response));
        }
        let pem = |name: &str| RemotePem::new(name, "http://127.0.0.1:1", None).unwrap();
        let pems = RemotePems::new(vec![pem("node-a"), pem("node-b"), pem("node-c")])
            .with_metadata(metadata);
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(
            "upid",
            DataType::FixedSizeBinary(16),
            false,
        )]));
        let holders: Vec<_> = pems
            .current()
            .iter()
            .map(|p| (p.clone(), Arc::clone(&schema)))
            .collect();
        let table = RemoteTable::spanning("http_events".into(), &holders, &pems);
        // Only node-b's process 11 passes.
        let only = upid(2, 11).to_be_bytes().to_vec();
        let filter = datafusion::functions::expr_fn::encode(col("upid"), lit("hex")).eq(lit(
            datafusion::common::ScalarValue::Utf8(Some(
                only.iter().map(|b| format!("{b:02x}")).collect(),
            )),
        ));
        let per_pem = table.process_filters(&[&filter]);
        let upid_list = |filters: &[Expr]| -> Vec<Vec<u8>> {
            filters
                .iter()
                .flat_map(|f| match f {
                    Expr::InList(list) if !list.negated => list
                        .list
                        .iter()
                        .map(|e| match e {
                            Expr::Literal(
                                datafusion::common::ScalarValue::FixedSizeBinary(16, Some(b)),
                                _,
                            ) => b.clone(),
                            other => panic!("{other}"),
                        })
                        .collect::<Vec<_>>(),
                    Expr::Literal(datafusion::common::ScalarValue::Boolean(Some(false)), _) => {
                        Vec::new()
                    }
                    other => panic!("{other}"),
                })
                .collect()
        };
        assert_eq!(per_pem.len(), 3);
        assert_eq!(
            per_pem[0],
            vec![lit(false)],
            "node-a: none of its rows pass"
        );
        assert_eq!(upid_list(&per_pem[1]), vec![only]);
        assert!(
            per_pem[2].is_empty(),
            "node-c's processes are unknown: it filters nothing"
        );
    }

    #[tokio::test]
    async fn a_table_spans_the_pems_that_have_it_and_names_the_columns_they_disagree_on() {
        use arrow_schema::{DataType, Field, Schema};
        let pem = |name: &str| RemotePem::new(name, "http://127.0.0.1:1", None).unwrap();
        let pems = RemotePems::new(vec![pem("node-a"), pem("node-b"), pem("node-c")]);
        let field = |name: &str, t: DataType| Field::new(name, t, true);
        let old: SchemaRef = Arc::new(Schema::new(vec![
            field("time_", DataType::Int64),
            field("a", DataType::Int64),
        ]));
        let new: SchemaRef = Arc::new(Schema::new(vec![
            field("time_", DataType::Int64),
            field("a", DataType::Utf8),
            field("b", DataType::Utf8),
        ]));
        // node-c does not have the table at all: it is not scanned.
        let holders = vec![
            (pem("node-a"), Arc::clone(&old)),
            (pem("node-b"), Arc::clone(&new)),
        ];
        let table = RemoteTable::spanning("probe".into(), &holders, &pems);
        assert_eq!(table.pems.names(), ["node-a", "node-b"]);
        let names: Vec<&str> = table
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["time_", "a", "b"]);
        assert!(
            table
                .check_even(&Arc::new(table.schema.project(&[0]).unwrap()))
                .is_ok()
        );
        let error = table
            .check_even(&Arc::clone(&table.schema))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("column a (typed Int64 on node-a, otherwise on node-b (Utf8))"),
            "{error}"
        );
        assert!(
            error.contains("column b (PEMs without it: node-a)"),
            "{error}"
        );
        assert!(error.contains("every PEM has (time_)"), "{error}");
    }

    #[tokio::test]
    async fn queries_before_the_pems_are_known_fail_saying_why() {
        let pems = RemotePems::new(Vec::new());
        pems.set_unknown("not listed yet".into());
        let error = pems.tables().await.err().unwrap().to_string();
        assert!(
            error.starts_with("not listed yet; the query did not run"),
            "{error}"
        );
        pems.replace(Vec::new());
        assert!(pems.tables().await.unwrap().is_empty());
    }

    mod pxl_test_udf {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::common::Result;
        use datafusion::logical_expr::{
            ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
        };

        #[derive(Debug, PartialEq, Eq, Hash)]
        pub(super) struct PxOnly(Signature);

        impl Default for PxOnly {
            fn default() -> Self {
                Self(Signature::any(1, Volatility::Immutable))
            }
        }

        impl ScalarUDFImpl for PxOnly {
            fn name(&self) -> &'static str {
                "px_only"
            }
            fn signature(&self) -> &Signature {
                &self.0
            }
            fn return_type(&self, _: &[DataType]) -> Result<DataType> {
                Ok(DataType::Int64)
            }
            fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
                Ok(args.args[0].clone())
            }
        }
    }
}
