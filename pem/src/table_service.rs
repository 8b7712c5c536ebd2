//! The PEM's side of a distributed query: `px.internal.pem.v1.TableService`, through
//! which Kelvin reads this node's tables. A scan carries the columns the query needs,
//! its time window and its filters (a DataFusion expression, serialized with
//! `datafusion-proto`); the PEM evaluates them here, next to the data, so only the
//! rows and columns the query needs cross the network, as Arrow IPC.

use std::pin::Pin;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::Serializeable as _;
use futures_util::{Stream, StreamExt as _};
use px_api::pem::table_service_server::{TableService, TableServiceServer};
use px_api::pem::{
    ListProcessesRequest, ListProcessesResponse, ListTablesRequest, ListTablesResponse,
    ProcessEntry, ScanRequest, ScanResponse, TableInfo,
};
use px_tablestore::{TableScan, TableStore};

/// A response stays under this many bytes (gRPC's default limit is 4 MiB).
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// The column whose range `start_time_ns` and `end_time_ns` bound.
const TIME_COLUMN: &str = "time_";

type ScanStream = Pin<Box<dyn Stream<Item = Result<ScanResponse, tonic::Status>> + Send>>;

/// Serves scans of one PEM's table store.
#[derive(Clone)]
pub struct TableScanService {
    store: Arc<TableStore>,
    processes: Option<Processes>,
}

/// The processes behind the tables' UPIDs, for `ListProcesses`.
#[derive(Clone)]
struct Processes {
    table: Arc<crate::ProcessTable>,
    epoch: String,
    asid: u32,
    node: String,
}

impl TableScanService {
    /// Scans of `store`.
    #[must_use]
    pub fn new(store: Arc<TableStore>) -> Self {
        Self {
            store,
            processes: None,
        }
    }

    /// Also answers `ListProcesses` from `table`: the PEM with ASID `asid` on `node`.
    #[must_use]
    pub fn with_processes(
        mut self,
        table: Arc<crate::ProcessTable>,
        asid: u32,
        node: String,
    ) -> Self {
        // This run of the PEM: a restarted PEM numbers its versions from 0 again.
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.processes = Some(Processes {
            table,
            epoch: format!("{}-{}", std::process::id(), since_epoch.as_nanos()),
            asid,
            node,
        });
        self
    }

    /// The gRPC service, for `tonic::transport::Server::add_service`.
    #[must_use]
    pub fn into_server(self) -> TableServiceServer<Self> {
        TableServiceServer::new(self)
    }

    /// The scan as a DataFusion frame: time window, filter, projection, limit.
    async fn plan(&self, request: &ScanRequest) -> Result<DataFrame, tonic::Status> {
        let table = self.store.table(&request.table).ok_or_else(|| {
            tonic::Status::not_found(format!(
                "table '{}' does not exist on this PEM",
                request.table
            ))
        })?;
        let ctx = SessionContext::new();
        let mut frame = ctx
            .read_table(Arc::new(TableScan::new(table)))
            .map_err(invalid)?;
        let time = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), None));
        if let Some(start) = request.start_time_ns {
            frame = frame
                .filter(col(TIME_COLUMN).gt_eq(time(start)))
                .map_err(invalid)?;
        }
        if let Some(end) = request.end_time_ns {
            frame = frame
                .filter(col(TIME_COLUMN).lt_eq(time(end)))
                .map_err(invalid)?;
        }
        if !request.filter.is_empty() {
            let filter =
                Expr::from_bytes_with_ctx(&request.filter, &ctx.task_ctx()).map_err(invalid)?;
            frame = frame.filter(filter).map_err(invalid)?;
        }
        if !request.columns.is_empty() {
            let columns: Vec<&str> = request.columns.iter().map(String::as_str).collect();
            frame = frame.select_columns(&columns).map_err(invalid)?;
        }
        if request.limit > 0 {
            frame = frame
                .limit(0, Some(request.limit as usize))
                .map_err(invalid)?;
        }
        Ok(frame)
    }
}

fn invalid(error: datafusion::error::DataFusionError) -> tonic::Status {
    tonic::Status::invalid_argument(error.strip_backtrace())
}

#[tonic::async_trait]
impl TableService for TableScanService {
    async fn list_processes(
        &self,
        request: tonic::Request<ListProcessesRequest>,
    ) -> Result<tonic::Response<ListProcessesResponse>, tonic::Status> {
        let Some(processes) = &self.processes else {
            return Err(tonic::Status::unimplemented(
                "this PEM does not serve its process table",
            ));
        };
        let request = request.into_inner();
        let full = request.epoch != processes.epoch;
        let after = if full { 0 } else { request.after_version };
        let (changed, version) = processes.table.changed_since(after);
        Ok(tonic::Response::new(ListProcessesResponse {
            epoch: processes.epoch.clone(),
            version,
            full,
            processes: changed
                .into_iter()
                .map(|p| ProcessEntry {
                    upid: p.upid.to_be_bytes().to_vec(),
                    cmdline: p.cmdline,
                    pod_uid: p.pod_uid,
                    container_id: p.container_id,
                    exited: p.exited,
                })
                .collect(),
            asid: processes.asid,
            node: processes.node.clone(),
        }))
    }

    type ScanStream = ScanStream;

    async fn scan(
        &self,
        request: tonic::Request<ScanRequest>,
    ) -> Result<tonic::Response<ScanStream>, tonic::Status> {
        let request = request.into_inner();
        let frame = self.plan(&request).await?;
        let batches = frame
            .execute_stream()
            .await
            .map_err(|e| tonic::Status::internal(e.strip_backtrace()))?;
        tracing::debug!(table = %request.table, columns = ?request.columns, filter_bytes = request.filter.len(), "scan");
        let responses = batches.flat_map(|batch| {
            let encoded = match batch {
                // Nothing to say: most batches of a selective filter end up empty.
                Ok(batch) if batch.num_rows() == 0 => Ok(Vec::new()),
                Ok(batch) => encode_pieces(&batch),
                Err(e) => Err(tonic::Status::internal(e.strip_backtrace())),
            };
            let items: Vec<Result<ScanResponse, tonic::Status>> = match encoded {
                Ok(pieces) => pieces
                    .into_iter()
                    .map(|arrow_ipc| Ok(ScanResponse { arrow_ipc }))
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(items)
        });
        Ok(tonic::Response::new(Box::pin(responses)))
    }

    async fn list_tables(
        &self,
        _request: tonic::Request<ListTablesRequest>,
    ) -> Result<tonic::Response<ListTablesResponse>, tonic::Status> {
        let tables = self
            .store
            .tables()
            .iter()
            .map(|table| {
                Ok(TableInfo {
                    name: table.schema().name.clone(),
                    desc: table.schema().desc.clone(),
                    arrow_schema_ipc: encode_ipc(&table.arrow_schema(), &[])?,
                })
            })
            .collect::<Result<_, tonic::Status>>()?;
        Ok(tonic::Response::new(ListTablesResponse { tables }))
    }
}

/// A batch as IPC messages of at most about [`MAX_RESPONSE_BYTES`] each.
fn encode_pieces(batch: &RecordBatch) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let rows = batch.num_rows();
    let bytes = batch.get_array_memory_size().max(1);
    let pieces = bytes.div_ceil(MAX_RESPONSE_BYTES).clamp(1, rows.max(1));
    let rows_per_piece = rows.div_ceil(pieces).max(1);
    (0..rows.max(1))
        .step_by(rows_per_piece)
        .map(|offset| {
            let piece = batch.slice(offset, rows_per_piece.min(rows - offset));
            encode_ipc(batch.schema_ref(), &[piece])
        })
        .collect()
}

/// An IPC stream: the schema (with Pixie's types in its field metadata), then `batches`.
fn encode_ipc(schema: &Schema, batches: &[RecordBatch]) -> Result<Vec<u8>, tonic::Status> {
    let encode = || -> Result<Vec<u8>, arrow_schema::ArrowError> {
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.into_inner()
    };
    encode().map_err(|e| tonic::Status::internal(format!("encoding Arrow IPC: {e}")))
}
