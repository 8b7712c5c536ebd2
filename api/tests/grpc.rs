//! The generated clients and servers talk to each other in-process (no network,
//! no HTTP/2: the client drives the server's tower service directly), and the
//! requests use the gRPC paths Pixie's clients use.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use px_api::pem::table_service_client::TableServiceClient;
use px_api::pem::table_service_server::{TableService, TableServiceServer};
use px_api::pem::{ListTablesRequest, ListTablesResponse, ScanRequest, ScanResponse, TableInfo};
use px_api::vizierpb::vizier_debug_service_client::VizierDebugServiceClient;
use px_api::vizierpb::vizier_debug_service_server::{VizierDebugService, VizierDebugServiceServer};
use px_api::vizierpb::vizier_service_client::VizierServiceClient;
use px_api::vizierpb::vizier_service_server::{VizierService, VizierServiceServer};
use px_api::vizierpb::{
    DebugLogRequest, DebugLogResponse, DebugPodsRequest, DebugPodsResponse, ExecuteScriptRequest,
    ExecuteScriptResponse, GenerateOTelScriptRequest, GenerateOTelScriptResponse,
    HealthCheckRequest, HealthCheckResponse, QueryData, QueryMetadata, RowBatchData,
    VizierPodStatus, execute_script_response,
};
use tonic::codegen::tokio_stream::{self, StreamExt as _};
use tonic::codegen::{BoxStream, Service, http};
use tonic::{Request, Response, Status};

/// Forwards to a service and records the path of every request.
#[derive(Clone)]
struct Recorder<S> {
    inner: S,
    paths: Arc<Mutex<Vec<String>>>,
}

impl<S> Recorder<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            paths: Arc::default(),
        }
    }

    fn paths(&self) -> Vec<String> {
        self.paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S, B> Service<http::Request<B>> for Recorder<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.uri().path().to_owned());
        self.inner.call(request)
    }
}

fn stream<T: Send + 'static>(items: Vec<T>) -> BoxStream<T> {
    Box::pin(tokio_stream::iter(items.into_iter().map(Ok)))
}

struct Vizier;

#[tonic::async_trait]
impl VizierService for Vizier {
    type ExecuteScriptStream = BoxStream<ExecuteScriptResponse>;
    type HealthCheckStream = BoxStream<HealthCheckResponse>;

    async fn execute_script(
        &self,
        request: Request<ExecuteScriptRequest>,
    ) -> Result<Response<Self::ExecuteScriptStream>, Status> {
        let query_id = request.into_inner().query_id;
        let meta = ExecuteScriptResponse {
            query_id: query_id.clone(),
            result: Some(execute_script_response::Result::MetaData(QueryMetadata {
                name: "output".into(),
                id: "t1".into(),
                relation: None,
            })),
            ..Default::default()
        };
        let data = ExecuteScriptResponse {
            query_id,
            result: Some(execute_script_response::Result::Data(QueryData {
                batch: Some(RowBatchData {
                    table_id: "t1".into(),
                    eos: true,
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        Ok(Response::new(stream(vec![meta, data])))
    }

    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::HealthCheckStream>, Status> {
        Ok(Response::new(stream(vec![HealthCheckResponse::default()])))
    }

    async fn generate_o_tel_script(
        &self,
        request: Request<GenerateOTelScriptRequest>,
    ) -> Result<Response<GenerateOTelScriptResponse>, Status> {
        Ok(Response::new(GenerateOTelScriptResponse {
            status: None,
            otel_script: format!("# otel\n{}", request.into_inner().pxl_script),
        }))
    }
}

struct Debug;

#[tonic::async_trait]
impl VizierDebugService for Debug {
    type DebugLogStream = BoxStream<DebugLogResponse>;
    type DebugPodsStream = BoxStream<DebugPodsResponse>;

    async fn debug_log(
        &self,
        request: Request<DebugLogRequest>,
    ) -> Result<Response<Self::DebugLogStream>, Status> {
        let pod = request.into_inner().pod_name;
        Ok(Response::new(stream(vec![DebugLogResponse {
            data: format!("log of {pod}"),
        }])))
    }

    async fn debug_pods(
        &self,
        _request: Request<DebugPodsRequest>,
    ) -> Result<Response<Self::DebugPodsStream>, Status> {
        Ok(Response::new(stream(vec![DebugPodsResponse {
            data_plane_pods: vec![VizierPodStatus {
                name: "vizier-pem-x".into(),
                ..Default::default()
            }],
            control_plane_pods: vec![],
        }])))
    }
}

struct Tables;

#[tonic::async_trait]
impl TableService for Tables {
    type ScanStream = BoxStream<ScanResponse>;

    async fn list_processes(
        &self,
        _request: Request<px_api::pem::ListProcessesRequest>,
    ) -> Result<Response<px_api::pem::ListProcessesResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }

    async fn scan(
        &self,
        request: Request<ScanRequest>,
    ) -> Result<Response<Self::ScanStream>, Status> {
        let request = request.into_inner();
        if request.table != "http_events" {
            return Err(Status::not_found(format!("no table {}", request.table)));
        }
        Ok(Response::new(stream(vec![
            ScanResponse { arrow_ipc: vec![1] },
            ScanResponse { arrow_ipc: vec![2] },
        ])))
    }

    async fn list_tables(
        &self,
        _request: Request<ListTablesRequest>,
    ) -> Result<Response<ListTablesResponse>, Status> {
        Ok(Response::new(ListTablesResponse {
            tables: vec![TableInfo {
                name: "http_events".into(),
                ..Default::default()
            }],
        }))
    }
}

#[tokio::test]
async fn vizier_service_calls_use_pixie_paths() {
    let server = Recorder::new(VizierServiceServer::new(Vizier));
    let mut client = VizierServiceClient::new(server.clone());

    let mut results = client
        .execute_script(ExecuteScriptRequest {
            query_str: "import px".into(),
            query_id: "q1".into(),
            ..Default::default()
        })
        .await
        .expect("execute_script")
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(message) = results.message().await.expect("stream") {
        assert_eq!(message.query_id, "q1");
        kinds.push(match message.result {
            Some(execute_script_response::Result::MetaData(_)) => "meta",
            Some(execute_script_response::Result::Data(_)) => "data",
            None => "none",
        });
    }
    assert_eq!(kinds, ["meta", "data"]);

    let health: Vec<_> = client
        .health_check(HealthCheckRequest::default())
        .await
        .expect("health_check")
        .into_inner()
        .collect()
        .await;
    assert_eq!(health.len(), 1);

    let otel = client
        .generate_o_tel_script(GenerateOTelScriptRequest {
            cluster_id: String::new(),
            pxl_script: "px.display(df)".into(),
        })
        .await
        .expect("generate_o_tel_script")
        .into_inner();
    assert_eq!(otel.otel_script, "# otel\npx.display(df)");

    assert_eq!(
        server.paths(),
        [
            "/px.api.vizierpb.VizierService/ExecuteScript",
            "/px.api.vizierpb.VizierService/HealthCheck",
            "/px.api.vizierpb.VizierService/GenerateOTelScript",
        ]
    );
}

#[tokio::test]
async fn vizier_debug_service_calls_use_pixie_paths() {
    let server = Recorder::new(VizierDebugServiceServer::new(Debug));
    let mut client = VizierDebugServiceClient::new(server.clone());

    let mut logs = client
        .debug_log(DebugLogRequest {
            pod_name: "kelvin-0".into(),
            ..Default::default()
        })
        .await
        .expect("debug_log")
        .into_inner();
    let log = logs.message().await.expect("stream").expect("one message");
    assert_eq!(log.data, "log of kelvin-0");

    let mut pods = client
        .debug_pods(DebugPodsRequest::default())
        .await
        .expect("debug_pods")
        .into_inner();
    let pods = pods.message().await.expect("stream").expect("one message");
    assert_eq!(pods.data_plane_pods[0].name, "vizier-pem-x");

    assert_eq!(
        server.paths(),
        [
            "/px.api.vizierpb.VizierDebugService/DebugLog",
            "/px.api.vizierpb.VizierDebugService/DebugPods",
        ]
    );
}

#[tokio::test]
async fn table_service_scans_and_lists() {
    let server = Recorder::new(TableServiceServer::new(Tables));
    let mut client = TableServiceClient::new(server.clone());

    let batches: Vec<_> = client
        .scan(ScanRequest {
            table: "http_events".into(),
            ..Default::default()
        })
        .await
        .expect("scan")
        .into_inner()
        .map(|r| r.expect("batch").arrow_ipc)
        .collect()
        .await;
    assert_eq!(batches, [vec![1], vec![2]]);

    let missing = client
        .scan(ScanRequest {
            table: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown table");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let tables = client
        .list_tables(ListTablesRequest {})
        .await
        .expect("list_tables")
        .into_inner();
    assert_eq!(tables.tables[0].name, "http_events");

    assert_eq!(
        server.paths(),
        [
            "/px.internal.pem.v1.TableService/Scan",
            "/px.internal.pem.v1.TableService/Scan",
            "/px.internal.pem.v1.TableService/ListTables",
        ]
    );
}
