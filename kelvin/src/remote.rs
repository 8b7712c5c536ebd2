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
use std::sync::{Arc, LazyLock};
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
    pub fn with_token(self, token: Option<&str>) -> Result<Self, PemError> {
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

/// Every PEM a query runs on.
#[derive(Clone, Debug)]
pub struct RemotePems {
    pems: Arc<[RemotePem]>,
    /// Their processes, when Kelvin keeps them: filters on a row's process are then
    /// pushed down as sets of UPIDs.
    metadata: Option<crate::metadata::ClusterMetadata>,
}

impl RemotePems {
    /// The PEMs queries fan out to.
    #[must_use]
    pub fn new(pems: Vec<RemotePem>) -> Self {
        Self {
            pems: pems.into(),
            metadata: None,
        }
    }

    /// Pushes filters on a row's process down as sets of the UPIDs `metadata` knows.
    #[must_use]
    pub fn with_metadata(mut self, metadata: crate::metadata::ClusterMetadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The PEMs' names.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.pems.iter().map(|p| p.name.clone()).collect()
    }

    /// The tables of every PEM, each spanning all of them. Asks all PEMs at once.
    ///
    /// # Errors
    /// [`PemError::Unavailable`] for the first PEM that did not answer.
    /// Each PEM's probes, by PEM name; a PEM that does not answer is named with why.
    pub async fn probes(&self) -> Vec<(String, Result<Vec<ProbeState>, PemError>)> {
        let listed =
            futures_util::future::join_all(self.pems.iter().map(RemotePem::list_probes)).await;
        self.pems
            .iter()
            .map(|p| p.name.clone())
            .zip(listed)
            .collect()
    }

    /// Brings `metadata`'s copy of every PEM's processes up to date (what changed since
    /// the last call), asking all PEMs at once.
    ///
    /// # Errors
    /// [`PemError::Unavailable`] for the first PEM that did not answer.
    pub async fn sync_processes(
        &self,
        metadata: &crate::metadata::ClusterMetadata,
    ) -> Result<(), PemError> {
        let asked = futures_util::future::join_all(self.pems.iter().map(|pem| {
            let position = metadata.with_processes(|d| d.position(&pem.name));
            pem.list_processes(position)
        }))
        .await;
        for (pem, answer) in self.pems.iter().zip(asked) {
            if let Some(response) = answer? {
                metadata.update_processes(|d| d.apply(&pem.name, response));
            }
        }
        Ok(())
    }

    /// The tables of every PEM, as one catalog.
    pub async fn tables(&self) -> Result<BTreeMap<String, Arc<dyn TableProvider>>, PemError> {
        let listed =
            futures_util::future::join_all(self.pems.iter().map(RemotePem::list_tables)).await;
        let mut tables = BTreeMap::new();
        for pem_tables in listed {
            for table in pem_tables? {
                tables.entry(table.name.clone()).or_insert_with(|| {
                    Arc::new(RemoteTable {
                        name: table.name,
                        schema: table.schema,
                        pems: self.clone(),
                    }) as Arc<dyn TableProvider>
                });
            }
        }
        Ok(tables)
    }
}

/// A table as the union of its rows on every PEM.
#[derive(Debug)]
struct RemoteTable {
    name: String,
    schema: SchemaRef,
    pems: RemotePems,
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
        // A query that needs no column (a count) still needs the rows: fetch the
        // narrowest column there is and drop it here.
        let columns: Vec<String> = if schema.fields().is_empty() {
            self.schema
                .fields()
                .iter()
                .take(1)
                .map(|f| f.name().clone())
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
    pems: RemotePems,
    properties: Arc<PlanProperties>,
}

impl RemoteScanExec {
    fn new(
        schema: SchemaRef,
        request: ScanRequest,
        per_pem_filters: Vec<Vec<u8>>,
        pems: RemotePems,
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
        let batches = async move {
            let mut client = pem.client.clone();
            let responses = client
                .scan(request)
                .await
                .map_err(|status| external(pem.unavailable(describe(&status))))?
                .into_inner();
            let pem_for_errors = pem.clone();
            Ok::<_, DataFusionError>(responses.map(move |response| {
                let response =
                    response.map_err(|s| external(pem_for_errors.unavailable(describe(&s))))?;
                let (_, batch) = decode_ipc(&response.arrow_ipc).map_err(|e| {
                    external(pem_for_errors.unavailable(format!("unreadable Arrow IPC: {e}")))
                })?;
                conform(batch, &target)
            }))
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
        let table = RemoteTable {
            name: "http_events".into(),
            schema: Arc::new(Schema::new(vec![Field::new(
                "upid",
                DataType::FixedSizeBinary(16),
                false,
            )])),
            pems,
        };
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
