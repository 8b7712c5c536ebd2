//! The `VizierService` implementation: compile, execute, stream in Pixie's order.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::catalog::TableProvider;
use datafusion::common::DataFusionError;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::TableSource;
use datafusion::prelude::SessionContext;
use futures_util::StreamExt;
use px_api::vizierpb::{
    CompilerError, ErrorDetails, ExecuteScriptRequest, ExecuteScriptResponse,
    GenerateOTelScriptRequest, GenerateOTelScriptResponse, HealthCheckRequest, HealthCheckResponse,
    QueryData, QueryExecutionStats, QueryMetadata, QueryTimingInfo, Status, error_details,
    execute_script_response, vizier_service_server::VizierService,
};
use px_tablestore::{TableScan, TableStore};

use crate::remote::{PemError, RemotePems};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use crate::results::{relation, row_batches};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// gRPC code for a script the user got wrong.
const INVALID_ARGUMENT: i32 = 3;
/// gRPC code for a failure while running a script.
const INTERNAL: i32 = 13;
/// gRPC code for a query past a deadline.
const DEADLINE_EXCEEDED: i32 = 4;
/// gRPC code for a query past Kelvin's limits (queries at once, memory).
const RESOURCE_EXHAUSTED: i32 = 8;
/// gRPC code for a PEM that cannot be reached.
const UNAVAILABLE: i32 = 14;
/// Responses buffered ahead of a slow client before execution waits for it.
const RESPONSE_BUFFER: usize = 16;
/// How often a health check reports.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// The query node over one table store.
#[derive(Clone)]
pub struct Kelvin {
    source: DataSource,
    running: Arc<AtomicUsize>,
    hostname: String,
    /// The cluster's name and the Vizier's namespace (`px.vizier_name()`).
    cluster_name: (String, String),
    metadata: Option<Arc<dyn pxl::MetadataLookup>>,
    agents: Vec<pxl::AgentInfo>,
    local_probes: Option<crate::LocalProbes>,
    /// The cluster's metadata, kept in step with the PEMs before each query.
    cluster: Option<crate::metadata::ClusterMetadata>,
    limits: Arc<Limits>,
}

/// How much Kelvin lets its queries take together.
#[derive(Clone, Copy, Debug)]
pub struct QueryLimits {
    /// Queries running at once; one more is refused with RESOURCE_EXHAUSTED.
    pub max_concurrent: usize,
    /// Memory the queries' operators (aggregates, joins, sorts) may hold together, in
    /// bytes; `None` for no bound. Past it a query fails with RESOURCE_EXHAUSTED.
    pub memory_bytes: Option<usize>,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 16,
            memory_bytes: None,
        }
    }
}

/// The limits in force: the query slots and the runtime (memory pool) every query shares.
struct Limits {
    settings: QueryLimits,
    slots: Arc<tokio::sync::Semaphore>,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
}

impl Limits {
    /// What a failed query says: for memory, which bound it hit and what to do.
    fn describe(&self, error: &DataFusionError) -> String {
        let message = error.strip_backtrace();
        match (error.find_root(), self.settings.memory_bytes) {
            (DataFusionError::ResourcesExhausted(_), Some(bytes)) => format!(
                "the query needs more memory than Kelvin gives its queries ({}, kelvin --query-memory-limit), counting the other queries running: {message}. Narrow its time window, group by fewer keys, or raise the limit",
                human_bytes(bytes)
            ),
            _ => message,
        }
    }

    fn new(settings: QueryLimits) -> Self {
        use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
        use datafusion::execution::memory_pool::{
            GreedyMemoryPool, MemoryPool, TrackConsumersPool, UnboundedMemoryPool,
        };
        let pool: Arc<dyn MemoryPool> = match settings.memory_bytes {
            // Tracking names the operators that hold the most when a query fails.
            Some(bytes) => Arc::new(TrackConsumersPool::new(
                GreedyMemoryPool::new(bytes),
                std::num::NonZeroUsize::MIN.saturating_add(2),
            )),
            None => Arc::new(UnboundedMemoryPool::default()),
        };
        // Nothing spills to disk: Kelvin's file system is read-only and its memory
        // bound is what decides.
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .unwrap_or_else(
                |_| Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default()),
            );
        Self {
            settings,
            slots: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent)),
            runtime,
        }
    }
}

impl Kelvin {
    /// A query node answering from `store`.
    #[must_use]
    pub fn new(store: Arc<TableStore>) -> Self {
        Self::with_source(DataSource::Local(store))
    }

    /// A query node fanning each query out to `pems`, over the network.
    #[must_use]
    pub fn over_pems(pems: RemotePems) -> Self {
        Self::with_source(DataSource::Pems(pems))
    }

    fn with_source(source: DataSource) -> Self {
        Self {
            source,
            running: Arc::new(AtomicUsize::new(0)),
            hostname: String::new(),
            cluster_name: (String::new(), String::new()),
            metadata: None,
            agents: Vec::new(),
            local_probes: None,
            cluster: None,
            limits: Arc::new(Limits::new(QueryLimits::default())),
        }
    }

    /// Bounds the queries running at once and the memory they hold together.
    #[must_use]
    pub fn with_limits(mut self, limits: QueryLimits) -> Self {
        self.limits = Arc::new(Limits::new(limits));
        self
    }

    /// Queries executing now. A query ends when its results are sent, or as soon as its
    /// client goes away.
    #[must_use]
    pub fn running_queries(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// The host the data comes from (`df.ctx['hostname']`, `df.ctx['node']`).
    #[must_use]
    pub fn with_hostname(mut self, hostname: String) -> Self {
        self.hostname = hostname;
        self
    }

    /// The cluster's name (the Vizier's `clusterName`) and the Vizier's namespace, for
    /// `px.vizier_name()`, `px.vizier_namespace()` and `px.GetAgentStatus()`.
    #[must_use]
    pub fn with_cluster_name(mut self, name: String, namespace: String) -> Self {
        self.cluster_name = (name, namespace);
        self
    }

    /// Where `df.ctx[...]` and the metadata functions find processes, pods and services.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Arc<dyn pxl::MetadataLookup>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The agents `px.GetAgentStatus()` lists.
    #[must_use]
    pub fn with_agents(mut self, agents: Vec<pxl::AgentInfo>) -> Self {
        self.agents = agents;
        self
    }

    /// Where `px.GetTracepointStatus()` finds probe states when the tables are local.
    #[must_use]
    pub fn with_local_probes(mut self, probes: crate::LocalProbes) -> Self {
        self.local_probes = Some(probes);
        self
    }

    /// The Tracepoints as `px.GetTracepointStatus()` shows them; asked of the PEMs only
    /// by scripts that call it.
    async fn tracepoints(&self, script: &str) -> Vec<pxl::TracepointInfo> {
        if !script.contains("GetTracepointStatus") {
            return Vec::new();
        }
        let nodes = match (&self.source, &self.local_probes) {
            (DataSource::Pems(pems), _) => pems
                .probes()
                .await
                .into_iter()
                .map(|(node, states)| (node, states.map_err(|e| e.to_string())))
                .collect(),
            (DataSource::Local(_), Some(probes)) => vec![(self.hostname.clone(), Ok(probes()))],
            (DataSource::Local(_), None) => Vec::new(),
        };
        crate::roll_up_tracepoints(&nodes)
    }

    /// The gRPC service, admitting the requests `check` admits.
    #[must_use]
    pub fn into_server(self, check: crate::TokenCheck) -> crate::VizierServer {
        px_api::vizierpb::vizier_service_server::VizierServiceServer::with_interceptor(self, check)
    }
}

/// Where a query's tables come from.
#[derive(Clone)]
enum DataSource {
    /// The table store of a PEM in this process (`px local`): no network hop.
    Local(Arc<TableStore>),
    /// PEMs elsewhere, through their table service.
    Pems(RemotePems),
}

impl DataSource {
    /// The tables as one query sees them.
    async fn tables(&self) -> Result<BTreeMap<String, Arc<dyn TableProvider>>, PemError> {
        match self {
            Self::Local(store) => Ok(store
                .tables()
                .into_iter()
                .map(|t| {
                    let provider: Arc<dyn TableProvider> = Arc::new(TableScan::new(Arc::clone(&t)));
                    (t.schema().name.clone(), provider)
                })
                .collect()),
            Self::Pems(pems) => pems.tables().await,
        }
    }
}

impl Kelvin {
    /// Kelvin over `pems` with the cluster's metadata: each query first brings the PEMs'
    /// process tables up to date in `metadata`, and resolves `df.ctx[...]` from it.
    #[must_use]
    pub fn over_pems_with_metadata(
        pems: RemotePems,
        metadata: crate::metadata::ClusterMetadata,
    ) -> Self {
        let mut kelvin = Self::over_pems(pems.with_metadata(metadata.clone()));
        kelvin.cluster = Some(metadata.clone());
        kelvin.with_metadata(Arc::new(metadata))
    }
}

/// A PEM's agent id: a stable 128-bit number from its name (FNV-1a), as a UUID shows it.
fn agent_id(name: &str) -> u128 {
    name.bytes()
        .fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d_u128, |h, b| {
            (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
        })
}

/// The tables and agents one compilation sees.
struct QueryCatalog<'a> {
    tables: BTreeMap<String, Arc<dyn TableProvider>>,
    agents: &'a [pxl::AgentInfo],
    tracepoints: Vec<pxl::TracepointInfo>,
}

impl pxl::TableCatalog for QueryCatalog<'_> {
    fn table(&self, name: &str) -> Option<Arc<dyn TableSource>> {
        self.tables
            .get(name)
            .map(|t| provider_as_source(Arc::clone(t)))
    }

    fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    fn agents(&self) -> Vec<pxl::AgentInfo> {
        self.agents.to_vec()
    }

    fn tracepoints(&self) -> Vec<pxl::TracepointInfo> {
        self.tracepoints.clone()
    }
}

/// The API's `exec_funcs` as the compiler takes them.
#[must_use]
pub fn func_calls(
    funcs: &[px_api::vizierpb::execute_script_request::FuncToExecute],
) -> Vec<pxl::FuncCall> {
    funcs
        .iter()
        .map(|f| pxl::FuncCall {
            name: f.func_name.clone(),
            args: f
                .arg_values
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
            output_prefix: f.output_table_prefix.clone(),
        })
        .collect()
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn status_response(
    query_id: &str,
    code: i32,
    message: String,
    details: Vec<ErrorDetails>,
) -> ExecuteScriptResponse {
    ExecuteScriptResponse {
        status: Some(Status {
            code,
            message,
            error_details: details,
        }),
        query_id: query_id.to_owned(),
        ..ExecuteScriptResponse::default()
    }
}

fn data_response(query_id: &str, data: QueryData) -> ExecuteScriptResponse {
    ExecuteScriptResponse {
        query_id: query_id.to_owned(),
        result: Some(execute_script_response::Result::Data(data)),
        ..ExecuteScriptResponse::default()
    }
}

#[tonic::async_trait]
impl VizierService for Kelvin {
    type ExecuteScriptStream = ResponseStream<ExecuteScriptResponse>;
    type HealthCheckStream = ResponseStream<HealthCheckResponse>;

    async fn execute_script(
        &self,
        request: tonic::Request<ExecuteScriptRequest>,
    ) -> Result<tonic::Response<Self::ExecuteScriptStream>, tonic::Status> {
        let request = request.into_inner();
        let query_id = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let mut options = pxl::CompileOptions::at(now_ns());
        options.exec_funcs = func_calls(&request.exec_funcs);
        options.hostname.clone_from(&self.hostname);
        options.cluster_name.clone_from(&self.cluster_name.0);
        options.cluster_namespace.clone_from(&self.cluster_name.1);
        options.metadata = self.metadata.clone();
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let Ok(slot) = Arc::clone(&self.limits.slots).try_acquire_owned() else {
            let message = format!(
                "Kelvin is running {} queries, its limit (kelvin --max-concurrent-queries); try again when one has finished",
                self.limits.settings.max_concurrent
            );
            // The receiver is right here: this cannot fail.
            let _ = tx.try_send(Ok(status_response(
                &query_id,
                RESOURCE_EXHAUSTED,
                message,
                Vec::new(),
            )));
            return Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))));
        };
        let synced = match (&self.source, &self.cluster) {
            (DataSource::Pems(pems), Some(metadata)) => pems.sync_processes(metadata).await,
            _ => Ok(()),
        };
        let tables = match synced {
            Ok(()) => self.source.tables().await,
            Err(error) => Err(error),
        };
        let tables = match tables {
            Ok(tables) => tables,
            Err(error) => {
                let response = status_response(
                    &query_id,
                    pem_error_code(&error),
                    error.to_string(),
                    Vec::new(),
                );
                // The receiver is right here: this cannot fail.
                let _ = tx.try_send(Ok(response));
                return Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))));
            }
        };
        // On a cluster, the agents are the PEMs that just answered.
        let pem_agents = self.cluster.as_ref().map(|metadata| {
            metadata.with_processes(|d| {
                let mut agents: Vec<pxl::AgentInfo> = d
                    .pems()
                    .into_iter()
                    .map(|(name, asid, node)| pxl::AgentInfo {
                        agent_id: agent_id(&name),
                        asid: i64::from(asid),
                        hostname: node,
                        ip_address: String::new(),
                        agent_state: "AGENT_STATE_HEALTHY".to_owned(),
                        create_time_ns: 0,
                        last_heartbeat_ns: 0,
                    })
                    .collect();
                agents.sort_by(|a, b| a.hostname.cmp(&b.hostname));
                agents
            })
        });
        let catalog = QueryCatalog {
            tables,
            agents: pem_agents.as_deref().unwrap_or(&self.agents),
            tracepoints: self.tracepoints(&request.query_str).await,
        };
        let compiled = pxl::compile(&request.query_str, &catalog, &options);
        let compilation_ns = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        match compiled {
            Err(error) => {
                let details = vec![ErrorDetails {
                    error: Some(error_details::Error::CompilerError(CompilerError {
                        line: error.line,
                        column: error.column,
                        message: error.message.clone(),
                    })),
                }];
                let response =
                    status_response(&query_id, INVALID_ARGUMENT, error.to_string(), details);
                // The receiver is right here: this cannot fail.
                let _ = tx.try_send(Ok(response));
            }
            Ok(script) => {
                let running = Running::start(Arc::clone(&self.running));
                let limits = Arc::clone(&self.limits);
                tokio::spawn(async move {
                    execute(script, &limits, query_id, compilation_ns, tx).await;
                    drop((running, slot));
                });
            }
        }
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn health_check(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::HealthCheckStream>, tonic::Status> {
        let ticks =
            tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(HEALTH_INTERVAL));
        let stream = ticks.map(|_| {
            Ok(HealthCheckResponse {
                status: Some(Status::default()),
            })
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn generate_o_tel_script(
        &self,
        _request: tonic::Request<GenerateOTelScriptRequest>,
    ) -> Result<tonic::Response<GenerateOTelScriptResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "GenerateOTelScript is not supported by this Vizier yet",
        ))
    }
}

/// Counts a query as running until dropped.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs every output's plan and sends its metadata, batches and end of stream; then the
/// execution statistics. Stops as soon as the client is gone (a send fails), which drops
/// the DataFusion streams and frees what they held.
async fn execute(
    script: pxl::Script,
    limits: &Limits,
    query_id: String,
    compilation_ns: i64,
    tx: mpsc::Sender<Result<ExecuteScriptResponse, tonic::Status>>,
) {
    let started = Instant::now();
    let ctx = SessionContext::new_with_config_rt(
        datafusion::prelude::SessionConfig::new(),
        Arc::clone(&limits.runtime),
    );
    let tables: Vec<(String, String, pxl::Output)> = script
        .outputs
        .into_iter()
        .map(|o| (uuid::Uuid::new_v4().to_string(), o.name.clone(), o))
        .collect();
    // Every table is announced before any data, as Pixie's clients expect.
    for (table_id, name, output) in &tables {
        let metadata = QueryMetadata {
            relation: Some(relation(output.plan.schema().as_arrow())),
            name: name.clone(),
            id: table_id.clone(),
        };
        let response = ExecuteScriptResponse {
            query_id: query_id.clone(),
            result: Some(execute_script_response::Result::MetaData(metadata)),
            ..ExecuteScriptResponse::default()
        };
        if tx.send(Ok(response)).await.is_err() {
            return;
        }
    }
    let (mut records, mut bytes) = (0i64, 0i64);
    for (table_id, _, output) in tables {
        let result = run_table(
            &ctx,
            output,
            &table_id,
            &query_id,
            &tx,
            &mut records,
            &mut bytes,
        )
        .await;
        match result {
            Ok(true) => {}
            Ok(false) => return, // client gone
            Err(error) => {
                let _ = tx
                    .send(Ok(status_response(
                        &query_id,
                        error_code(&error),
                        limits.describe(&error),
                        Vec::new(),
                    )))
                    .await;
                return;
            }
        }
    }
    let stats = QueryExecutionStats {
        timing: Some(QueryTimingInfo {
            execution_time_ns: i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX),
            compilation_time_ns: compilation_ns,
        }),
        bytes_processed: bytes,
        records_processed: records,
    };
    let _ = tx
        .send(Ok(data_response(
            &query_id,
            QueryData {
                execution_stats: Some(stats),
                ..QueryData::default()
            },
        )))
        .await;
}

/// Streams one output table; `Ok(false)` when the client went away.
async fn run_table(
    ctx: &SessionContext,
    output: pxl::Output,
    table_id: &str,
    query_id: &str,
    tx: &mpsc::Sender<Result<ExecuteScriptResponse, tonic::Status>>,
    records: &mut i64,
    bytes: &mut i64,
) -> Result<bool, DataFusionError> {
    let frame = ctx.execute_logical_plan(output.plan).await?;
    let mut stream = frame.execute_stream().await?;
    let mut pending: Option<px_api::vizierpb::RowBatchData> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        *records += batch.num_rows() as i64;
        *bytes += batch.get_array_memory_size() as i64;
        for message in row_batches(&batch, table_id)? {
            // Hold one back so the last one can carry end-of-stream.
            if let Some(previous) = pending.replace(message)
                && !send_batch(tx, query_id, previous).await
            {
                return Ok(false);
            }
        }
    }
    let mut last = pending.unwrap_or_else(|| px_api::vizierpb::RowBatchData {
        table_id: table_id.to_owned(),
        ..Default::default()
    });
    last.eow = true;
    last.eos = true;
    Ok(send_batch(tx, query_id, last).await)
}

/// Bytes in binary units for people (`64.0 KiB`).
fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = None;
    while value >= 1024.0 && unit.is_none_or(|u| u + 1 < UNITS.len()) {
        value /= 1024.0;
        unit = Some(unit.map_or(0, |u| u + 1));
    }
    match unit {
        None => format!("{bytes} B"),
        Some(u) => format!("{value:.1} {}", UNITS[u]),
    }
}

/// The gRPC code for a PEM that could not take part.
fn pem_error_code(error: &PemError) -> i32 {
    match error {
        PemError::DeadlineExceeded { .. } => DEADLINE_EXCEEDED,
        PemError::BadAddress { .. } | PemError::Unavailable { .. } | PemError::NotKnown(_) => {
            UNAVAILABLE
        }
    }
}

/// The gRPC code for a query that failed while running: what the user can act on.
fn error_code(error: &DataFusionError) -> i32 {
    match error.find_root() {
        DataFusionError::ResourcesExhausted(_) => RESOURCE_EXHAUSTED,
        DataFusionError::External(e) => e
            .downcast_ref::<PemError>()
            .map_or(INTERNAL, pem_error_code),
        _ => INTERNAL,
    }
}

async fn send_batch(
    tx: &mpsc::Sender<Result<ExecuteScriptResponse, tonic::Status>>,
    query_id: &str,
    batch: px_api::vizierpb::RowBatchData,
) -> bool {
    let data = QueryData {
        batch: Some(batch),
        ..QueryData::default()
    };
    tx.send(Ok(data_response(query_id, data))).await.is_ok()
}
