//! Kelvin's API over a real TCP connection: authentication, and the message order and
//! sizes Pixie's clients rely on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::sync::Arc;

use kelvin::Kelvin;
use prost::Message;
use px_api::vizierpb::{
    ExecuteScriptRequest, ExecuteScriptResponse, execute_script_response,
    vizier_service_client::VizierServiceClient,
};
use px_tablestore::{
    BudgetConfig, ColumnSchema, DataType, RowBuilder, SemanticType, TableSchema, TableStore,
};
use tonic::transport::Channel;

const KEY: &str = "s3cret";

fn store() -> Arc<TableStore> {
    let store = Arc::new(TableStore::new(BudgetConfig::for_memory_limit(1 << 30)).unwrap());
    let schema = TableSchema::new(
        "http_events",
        "requests",
        vec![
            ColumnSchema::new("time_", DataType::Time64Ns, SemanticType::None, ""),
            ColumnSchema::new("req_path", DataType::String, SemanticType::None, ""),
            ColumnSchema::new(
                "latency",
                DataType::Int64,
                SemanticType::DurationNs,
                "latency",
            ),
        ],
    );
    let table = store.create_table(schema.clone()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let mut rows = RowBuilder::new(&schema);
    for i in 0..20_000i64 {
        rows.append_time(now - 1_000_000_000 + i);
        rows.append_str(&format!("/path/{i:0>64}"));
        rows.append_i64(i);
        rows.finish_row();
    }
    table.append(rows.finish()).unwrap();
    store
}

async fn serve() -> Channel {
    serve_kelvin(Kelvin::new(store())).await
}

async fn serve_kelvin(kelvin: Kelvin) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = kelvin.into_server(kelvin::TokenCheck::new(Some(KEY.to_owned().into())));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn request(
    script: &str,
    header: Option<(&'static str, &str)>,
) -> tonic::Request<ExecuteScriptRequest> {
    let mut request = tonic::Request::new(ExecuteScriptRequest {
        query_str: script.to_owned(),
        ..ExecuteScriptRequest::default()
    });
    if let Some((name, value)) = header {
        request.metadata_mut().insert(name, value.parse().unwrap());
    }
    request
}

async fn responses(
    channel: Channel,
    req: tonic::Request<ExecuteScriptRequest>,
) -> Result<Vec<ExecuteScriptResponse>, tonic::Status> {
    let mut stream = VizierServiceClient::new(channel)
        .execute_script(req)
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(response) = stream.message().await? {
        out.push(response);
    }
    Ok(out)
}

const SCRIPT: &str = "import px
df = px.DataFrame('http_events', start_time='-5m')
px.display(df, 'all')
px.display(df.groupby('latency').agg(n=('latency', px.count)).head(3), 'few')
";

#[tokio::test]
async fn requests_without_the_key_are_refused() {
    let channel = serve().await;
    let status = responses(channel.clone(), request(SCRIPT, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("pixie-api-key"));
    let status = responses(
        channel.clone(),
        request(SCRIPT, Some(("pixie-api-key", "wrong"))),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        !status.message().contains("wrong"),
        "never echo a credential"
    );
    let bearer = format!("Bearer {KEY}");
    assert!(
        responses(channel, request(SCRIPT, Some(("authorization", &bearer))))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn results_follow_pixies_message_order() {
    let channel = serve().await;
    let out = responses(channel, request(SCRIPT, Some(("pixie-api-key", KEY))))
        .await
        .unwrap();
    let query_id = out[0].query_id.clone();
    assert!(out.iter().all(|r| r.query_id == query_id));

    // Every table's metadata comes before any data.
    let mut announced = Vec::new();
    let mut first_data = None;
    for (i, response) in out.iter().enumerate() {
        match &response.result {
            Some(execute_script_response::Result::MetaData(meta)) => {
                assert!(first_data.is_none(), "metadata after data");
                announced.push((meta.id.clone(), meta.name.clone()));
                let relation = meta.relation.as_ref().unwrap();
                assert_eq!(
                    relation.columns.len(),
                    if meta.name == "all" { 3 } else { 2 }
                );
            }
            Some(execute_script_response::Result::Data(_)) => {
                first_data.get_or_insert(i);
            }
            None => panic!("a response with neither data nor metadata: {response:?}"),
        }
    }
    assert_eq!(
        announced
            .iter()
            .map(|(_, n)| n.as_str())
            .collect::<Vec<_>>(),
        ["all", "few"]
    );

    // Exactly one end-of-stream per table, each message under about 1 MB, all rows there.
    for (id, name) in &announced {
        let batches: Vec<_> = out
            .iter()
            .filter_map(|r| match &r.result {
                Some(execute_script_response::Result::Data(d)) => d.batch.as_ref(),
                _ => None,
            })
            .filter(|b| &b.table_id == id)
            .collect();
        assert_eq!(batches.iter().filter(|b| b.eos).count(), 1, "{name}");
        assert!(batches.last().unwrap().eos, "{name}: eos is the last batch");
        let rows: i64 = batches.iter().map(|b| b.num_rows).sum();
        assert_eq!(
            rows,
            if name == "all" { 10_000 } else { 3 },
            "{name}: default 10,000-row limit"
        );
        if name == "all" {
            assert!(batches.len() > 1, "2 MB of rows are split");
        }
    }
    for response in &out {
        assert!(
            response.encoded_len() < 1 << 20,
            "message of {} bytes",
            response.encoded_len()
        );
    }

    // Execution statistics come last.
    let Some(execute_script_response::Result::Data(last)) = &out.last().unwrap().result else {
        panic!("the last message is not data");
    };
    let stats = last.execution_stats.as_ref().expect("stats last");
    assert_eq!(stats.records_processed, 10_003);
    assert!(stats.timing.as_ref().unwrap().compilation_time_ns > 0);
}

#[tokio::test]
async fn compile_errors_carry_line_and_column() {
    let channel = serve().await;
    let out = responses(
        channel,
        request(
            "import px\npx.display(px.DataFrame('nope'))\n",
            Some(("pixie-api-key", KEY)),
        ),
    )
    .await
    .unwrap();
    assert_eq!(out.len(), 1);
    let status = out[0].status.as_ref().unwrap();
    assert_eq!(status.code, 3);
    let Some(px_api::vizierpb::error_details::Error::CompilerError(error)) =
        &status.error_details[0].error
    else {
        panic!("no compiler error");
    };
    assert_eq!((error.line, error.column), (2, 12));
    assert_eq!(error.message, "Table 'nope' not found");
}

#[tokio::test]
async fn exec_funcs_call_the_scripts_functions_with_typed_arguments() {
    use px_api::vizierpb::execute_script_request::{FuncToExecute, func_to_execute::ArgValue};
    let channel = serve().await;
    let script = "import px
def latest(start_time: str, n: int):
    return px.DataFrame('http_events', start_time=start_time).head(n)
";
    let mut req = request(script, Some(("pixie-api-key", KEY)));
    req.get_mut().exec_funcs = vec![FuncToExecute {
        func_name: "latest".into(),
        arg_values: vec![
            ArgValue {
                name: "start_time".into(),
                value: "-5m".into(),
            },
            ArgValue {
                name: "n".into(),
                value: "7".into(),
            },
        ],
        output_table_prefix: "latest_rows".into(),
    }];
    let out = responses(channel, req).await.unwrap();
    let Some(execute_script_response::Result::MetaData(meta)) = &out[0].result else {
        panic!("{:?}", out[0]);
    };
    assert_eq!(meta.name, "latest_rows");
    let rows: i64 = out
        .iter()
        .filter_map(|r| match &r.result {
            Some(execute_script_response::Result::Data(d)) => d.batch.as_ref().map(|b| b.num_rows),
            _ => None,
        })
        .sum();
    assert_eq!(rows, 7);
}

#[tokio::test]
async fn a_client_that_goes_away_stops_its_query() {
    let kelvin = Kelvin::new(store());
    let channel = serve_kelvin(kelvin.clone()).await;
    // Far more than fits in the response buffer: the query waits on the client.
    let script = "#px:set max_output_rows_per_table=10000000
import px
d1 = px.DataFrame('http_events')
d2 = d1.append(d1)
d4 = d2.append(d2)
d8 = d4.append(d4)
d16 = d8.append(d8)
d32 = d16.append(d16)
px.display(d32)
";
    let mut stream = VizierServiceClient::new(channel)
        .execute_script(request(script, Some(("pixie-api-key", KEY))))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert_eq!(kelvin.running_queries(), 1, "still sending");
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kelvin.running_queries() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the query kept running after its client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The status a query's stream ends with: code and message.
fn final_status(out: &[ExecuteScriptResponse]) -> (i32, String) {
    out.iter()
        .filter_map(|r| r.status.as_ref())
        .map(|s| (s.code, s.message.clone()))
        .next_back()
        .unwrap_or((0, String::new()))
}

#[tokio::test]
async fn a_query_past_the_memory_bound_is_resource_exhausted() {
    let bounded = Kelvin::new(store()).with_limits(kelvin::QueryLimits {
        max_concurrent: 4,
        memory_bytes: Some(3 << 20),
    });
    let channel = serve_kelvin(bounded).await;
    // 20,000 groups of 64-byte paths do not fit in 3 MiB.
    let script = "import px
df = px.DataFrame('http_events', start_time='-5m')
px.display(df.groupby('req_path').agg(n=('latency', px.count)), 'paths')
";
    let out = responses(
        channel.clone(),
        request(script, Some(("pixie-api-key", KEY))),
    )
    .await
    .unwrap();
    let (code, message) = final_status(&out);
    assert_eq!(code, tonic::Code::ResourceExhausted as i32, "{message}");
    assert!(
        message.contains(
            "more memory than Kelvin gives its queries (3.0 MiB, kelvin --query-memory-limit)"
        ),
        "{message}"
    );
    // A query that fits still runs.
    let small =
        "import px\npx.display(px.DataFrame('http_events', start_time='-5m').head(5), 'few')\n";
    let out = responses(channel, request(small, Some(("pixie-api-key", KEY))))
        .await
        .unwrap();
    assert_eq!(final_status(&out).0, 0, "{:?}", final_status(&out));
}

#[tokio::test]
async fn one_query_more_than_the_limit_is_refused_and_the_next_one_runs() {
    // A PEM that accepts connections and never answers holds the first query (for the
    // 5 s Kelvin waits for a table list), and with it the only slot.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let pem = kelvin::RemotePem::new("node-a", &url, None).unwrap();
    let limited =
        Kelvin::over_pems(kelvin::RemotePems::new(vec![pem])).with_limits(kelvin::QueryLimits {
            max_concurrent: 1,
            memory_bytes: None,
        });
    let channel = serve_kelvin(limited).await;
    let first = tokio::spawn(responses(
        channel.clone(),
        request(SCRIPT, Some(("pixie-api-key", KEY))),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let out = responses(
        channel.clone(),
        request(SCRIPT, Some(("pixie-api-key", KEY))),
    )
    .await
    .unwrap();
    let (code, message) = final_status(&out);
    assert_eq!(code, tonic::Code::ResourceExhausted as i32, "{message}");
    assert!(message.contains("--max-concurrent-queries"), "{message}");
    let first = first.await.unwrap().unwrap();
    let (code, message) = final_status(&first);
    assert_eq!(code, tonic::Code::Unavailable as i32, "{message}");
    assert!(message.contains("PEM node-a"), "{message}");
    // Its slot is free again: the next query is not refused for the limit.
    let out = responses(channel, request(SCRIPT, Some(("pixie-api-key", KEY))))
        .await
        .unwrap();
    assert!(!final_status(&out).1.contains("--max-concurrent-queries"));
}
