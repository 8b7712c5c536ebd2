//! What the PxL compiler and the API cost on top of the engine.
//!
//! Fills `http_events` with synthetic rows, then runs the same aggregation (count and
//! latency quantiles per status) two ways, side by side, several times each:
//! - through the API: a PxL script sent to Kelvin over gRPC on loopback, every result
//!   message received and decoded by a client;
//! - directly in DataFusion, on the same record batches, with the DataFrame API.
//!
//! Prints rows per second for each and their ratio. `ROWS` sets the table size
//! (default 1,000,000). Run: `cargo bench -p kelvin --bench query_overhead`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark binary

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::datasource::MemTable;
use datafusion::functions_aggregate::expr_fn::{approx_percentile_cont, count};
use datafusion::prelude::{SessionContext, col, lit};
use kelvin::Kelvin;
use px_api::vizierpb::{ExecuteScriptRequest, vizier_service_client::VizierServiceClient};
use px_tablestore::{
    BudgetConfig, ColumnSchema, DataType, RowBuilder, SemanticType, TableSchema, TableStore,
};

const SCRIPT: &str = "import px
df = px.DataFrame('http_events')
stats = df.groupby('resp_status').agg(n=('latency', px.count), lat=('latency', px.quantiles))
px.display(stats, 'stats')
";

fn fill(rows: usize) -> Arc<TableStore> {
    let store = Arc::new(TableStore::new(BudgetConfig::for_memory_limit(64 << 30)).unwrap());
    let schema = TableSchema::new(
        "http_events",
        "",
        vec![
            ColumnSchema::new("time_", DataType::Time64Ns, SemanticType::None, ""),
            ColumnSchema::new("req_path", DataType::String, SemanticType::None, ""),
            ColumnSchema::new(
                "resp_status",
                DataType::Int64,
                SemanticType::HttpRespStatus,
                "",
            ),
            ColumnSchema::new("latency", DataType::Int64, SemanticType::DurationNs, ""),
        ],
    );
    let table = store.create_table(schema.clone()).unwrap();
    let mut builder = RowBuilder::new(&schema);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..rows {
        // xorshift: cheap, deterministic, spread-out latencies.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        builder.append_time(1_700_000_000_000_000_000 + i as i64);
        builder.append_str(["/", "/api/users", "/api/orders", "/health"][i % 4]);
        builder.append_i64([200, 200, 200, 404, 500][i % 5]);
        builder.append_i64((state % 50_000_000) as i64);
        builder.finish_row();
        if builder.rows() == 65_536 {
            table.append(builder.finish()).unwrap();
        }
    }
    table.append(builder.finish()).unwrap();
    store
}

async fn through_api(client: &mut VizierServiceClient<tonic::transport::Channel>) -> usize {
    let request = ExecuteScriptRequest {
        query_str: SCRIPT.to_owned(),
        ..ExecuteScriptRequest::default()
    };
    let mut stream = client.execute_script(request).await.unwrap().into_inner();
    let mut messages = 0;
    while let Some(response) = stream.message().await.unwrap() {
        assert!(response.status.is_none_or(|s| s.code == 0));
        messages += 1;
    }
    messages
}

async fn direct(store: &TableStore) -> usize {
    let table = store.table("http_events").unwrap();
    let mem = MemTable::try_new(table.arrow_schema(), vec![table.snapshot()]).unwrap();
    let ctx = SessionContext::new();
    let df = ctx.read_table(Arc::new(mem)).unwrap();
    let mut aggregates = vec![count(col("latency")).alias("n")];
    for (i, p) in [0.01, 0.1, 0.5, 0.9, 0.99].into_iter().enumerate() {
        aggregates.push(
            approx_percentile_cont(col("latency").sort(true, false), lit(p), None)
                .alias(format!("q{i}")),
        );
    }
    let batches = df
        .aggregate(vec![col("resp_status")], aggregates)
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches.iter().map(|b| b.num_rows()).sum()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::main]
async fn main() {
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1_000_000);
    let store = fill(rows);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Kelvin::new(Arc::clone(&store)).into_server(kelvin::TokenCheck::new(None)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = VizierServiceClient::new(channel);

    // Warm up both paths once, then alternate so drift on a shared machine hits both.
    assert!(through_api(&mut client).await > 0);
    assert_eq!(direct(&store).await, 3);
    let (mut api, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let start = Instant::now();
        through_api(&mut client).await;
        api.push(start.elapsed());
        let start = Instant::now();
        direct(&store).await;
        raw.push(start.elapsed());
    }
    let (api, raw) = (median(api), median(raw));
    let per_sec = |d: Duration| rows as f64 / d.as_secs_f64();
    println!("rows: {rows}; groupby(resp_status) with count and quantiles; median of 5 runs");
    println!(
        "PxL through the API (gRPC, loopback): {:>12.0} rows/s ({:?})",
        per_sec(api),
        api
    );
    println!(
        "DataFusion directly, same batches:    {:>12.0} rows/s ({:?})",
        per_sec(raw),
        raw
    );
    println!(
        "API time / direct time: {:.2}",
        api.as_secs_f64() / raw.as_secs_f64()
    );
}
