//! PxL scripts compiled and run on DataFusion over a table of the table store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use datafusion::catalog::TableProvider;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::TableSource;
use datafusion::prelude::SessionContext;
use px_tablestore::{
    ColumnSchema, DataType, RowBuilder, SemanticType, Table, TableScan, TableSchema,
};
use pxl::{CompileError, CompileOptions, TableCatalog, compile};

const NOW: i64 = 1_000_000_000_000;

/// `http_events`-like rows: one per second over the last 100 s, services a/b/c.
fn table() -> Arc<dyn TableProvider> {
    let schema = TableSchema::new(
        "http_events",
        "",
        vec![
            ColumnSchema::new("time_", DataType::Time64Ns, SemanticType::None, ""),
            ColumnSchema::new("service", DataType::String, SemanticType::None, ""),
            ColumnSchema::new("latency", DataType::Int64, SemanticType::DurationNs, ""),
            ColumnSchema::new(
                "resp_status",
                DataType::Int64,
                SemanticType::HttpRespStatus,
                "",
            ),
            ColumnSchema::new("upid", DataType::UInt128, SemanticType::Upid, "process"),
        ],
    );
    let table = Arc::new(Table::new(schema.clone(), u64::MAX));
    let mut rows = RowBuilder::new(&schema);
    for i in 0..100i64 {
        rows.append_time(NOW - (100 - i) * 1_000_000_000);
        rows.append_str(["a", "b", "c"][(i % 3) as usize]);
        rows.append_i64(i * 1000);
        rows.append_i64(if i % 10 == 0 { 500 } else { 200 });
        rows.append_u128((1u128 << 96) | ((4000 + i as u128 % 2) << 64) | 77);
        rows.finish_row();
    }
    table.append(rows.finish()).unwrap();
    Arc::new(TableScan::new(table))
}

struct Catalog(Arc<dyn TableProvider>);

impl TableCatalog for Catalog {
    fn table(&self, name: &str) -> Option<Arc<dyn TableSource>> {
        (name == "http_events").then(|| provider_as_source(Arc::clone(&self.0)))
    }

    fn table_names(&self) -> Vec<String> {
        vec!["http_events".to_owned()]
    }
}

async fn run(script: &str) -> Vec<(String, Vec<RecordBatch>)> {
    let catalog = Catalog(table());
    let compiled = compile(script, &catalog, &CompileOptions::at(NOW)).unwrap();
    let ctx = SessionContext::new();
    let mut out = Vec::new();
    for output in compiled.outputs {
        let batches = ctx
            .execute_logical_plan(output.plan)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        out.push((output.name, batches));
    }
    out
}

fn ints(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(column)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// The rows of a compiled script's first output.
async fn first_output(compiled: pxl::Script) -> Vec<RecordBatch> {
    let plan = compiled.outputs.into_iter().next().unwrap().plan;
    SessionContext::new()
        .execute_logical_plan(plan)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn error(script: &str) -> CompileError {
    compile(script, &Catalog(table()), &CompileOptions::at(NOW)).unwrap_err()
}

#[tokio::test]
async fn dataframe_with_relative_start_time_and_select() {
    let out = run("import px\ndf = px.DataFrame(table='http_events', select=['latency'], start_time='-10s')\npx.display(df, 'recent')\n").await;
    assert_eq!(out[0].0, "recent");
    let batches = &out[0].1;
    assert_eq!(batches[0].num_columns(), 1);
    assert_eq!(
        ints(batches, "latency"),
        (90..100).map(|i| i * 1000).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn filters_columns_head_and_drop() {
    let script = "import px
df = px.DataFrame('http_events')
df = df[df.resp_status == 500 and df.latency > 5000]
df.latency_ms = df.latency / 1000
df['slow'] = px.select(df.latency_ms > 50, 'yes', 'no')
df = df.drop(['service'])
px.display(df.head(3))
";
    let out = run(script).await;
    assert_eq!(out[0].0, "output");
    let batches = &out[0].1;
    assert_eq!(ints(batches, "latency_ms"), vec![10, 20, 30]);
    assert!(batches[0].column_by_name("service").is_none());
    let slow = batches[0]
        .column_by_name("slow")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(slow.value(0), "no");
}

#[tokio::test]
async fn groupby_and_whole_table_aggregates() {
    let script = "import px
df = px.DataFrame(table='http_events')
per = df.groupby('service').agg(n=('latency', px.count), avg=('latency', px.mean), hi=('latency', px.max))
px.display(per, 'per_service')
total = df.agg(requests=('latency', px.count), errors=('resp_status', px.sum))
px.display(total, 'total')
";
    let out = run(script).await;
    let per = &out[0].1;
    assert_eq!(rows(per), 3);
    let mut counts = ints(per, "n");
    counts.sort_unstable();
    assert_eq!(counts, vec![33, 33, 34]);
    let avg = per[0]
        .column_by_name("avg")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert!(avg.value(0) > 0.0);
    assert_eq!(ints(&out[1].1, "requests"), vec![100]);
    assert_eq!(ints(&out[1].1, "errors"), vec![10 * 500 + 90 * 200]);
}

#[tokio::test]
async fn output_rows_are_limited() {
    let out = run("#px:set max_output_rows_per_table=7\nimport px\npx.display(px.DataFrame('http_events'))\npx.display(px.DataFrame('http_events'))\n").await;
    assert_eq!(out[0].0, "output");
    assert_eq!(out[1].0, "output_1");
    assert_eq!(rows(&out[0].1), 7);
}

#[tokio::test]
async fn contains_matches_substrings_literally() {
    let out = run("import px\ndf = px.DataFrame('http_events')\npx.display(df[px.contains(df.service, 'b')])\n").await;
    assert_eq!(rows(&out[0].1), 33);
    let out = run("import px\ndf = px.DataFrame('http_events')\npx.display(df[px.contains(df.service, '%')])\n").await;
    assert_eq!(rows(&out[0].1), 0);
}

#[tokio::test]
async fn pids_bins_and_the_catalog() {
    let script = "import px
df = px.DataFrame('http_events')
df.pid = px.upid_to_pid(df.upid)
df.window = px.bin(df.time_, px.seconds(10))
df.bucket = px.bin(df.latency, 25000)
per = df.groupby(['pid', 'bucket']).agg(n=('latency', px.count), windows=('window', px.count))
px.display(per, 'per_pid')
px.display(px.GetTables(), 'tables')
px.display(px.GetSchemas(), 'schemas')
";
    let out = run(script).await;
    let per = &out[0].1;
    let mut pids = ints(per, "pid");
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids, vec![4000, 4001]);
    let mut buckets = ints(per, "bucket");
    buckets.sort_unstable();
    buckets.dedup();
    assert_eq!(buckets, vec![0, 25000, 50000, 75000]);
    let tables = &out[1].1[0];
    assert_eq!(
        tables
            .column_by_name("table_name")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "http_events"
    );
    let schemas = &out[2].1;
    assert_eq!(rows(schemas), 5);
    let types = schemas[0]
        .column_by_name("column_type")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(types.value(4), "UINT128");
}

const FUNCTIONS: &str = "import px

def slow(start_time: str, min_latency: int, label: str = 'slow'):
    df = px.DataFrame('http_events', start_time=start_time)
    df = df[df.latency >= min_latency]
    df.label = label
    return df

def both(start_time: str):
    return [slow(start_time, 0), slow(start_time, 95000, 'slowest')]

px.display(slow('-10s', 0), 'direct')
";

async fn run_funcs(calls: Vec<pxl::FuncCall>) -> Result<Vec<(String, usize)>, CompileError> {
    let catalog = Catalog(table());
    let mut options = CompileOptions::at(NOW);
    options.exec_funcs = calls;
    let compiled = compile(FUNCTIONS, &catalog, &options)?;
    let ctx = SessionContext::new();
    let mut out = Vec::new();
    for output in compiled.outputs {
        let batches = ctx
            .execute_logical_plan(output.plan)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        out.push((output.name, rows(&batches)));
    }
    Ok(out)
}

fn call(name: &str, args: &[(&str, &str)], prefix: &str) -> pxl::FuncCall {
    pxl::FuncCall {
        name: name.to_owned(),
        args: args
            .iter()
            .map(|(a, v)| ((*a).to_owned(), (*v).to_owned()))
            .collect(),
        output_prefix: prefix.to_owned(),
    }
}

#[tokio::test]
async fn functions_run_directly_and_through_exec_funcs() {
    // Without exec_funcs the script's own display runs.
    assert_eq!(
        run_funcs(Vec::new()).await.unwrap(),
        vec![("direct".to_owned(), 10)]
    );
    // With them, only the functions' results are output, with arguments parsed by annotation.
    let out = run_funcs(vec![
        call(
            "slow",
            &[("start_time", "-20s"), ("min_latency", "85000")],
            "recent_slow",
        ),
        call("both", &[("start_time", "-10s")], "pair"),
    ])
    .await
    .unwrap();
    assert_eq!(
        out,
        vec![
            ("recent_slow".to_owned(), 15),
            ("pair[0]".to_owned(), 10),
            ("pair[1]".to_owned(), 5),
        ]
    );
    let bad = run_funcs(vec![call(
        "slow",
        &[("start_time", "-5m"), ("min_latency", "lots")],
        "x",
    )])
    .await
    .unwrap_err();
    assert!(bad.message.contains("must be an integer"), "{bad}");
    assert_eq!(bad.line, 3);
    let missing = run_funcs(vec![call("slow", &[("start_time", "-5m")], "x")])
        .await
        .unwrap_err();
    assert!(
        missing.message.contains("missing argument 'min_latency'"),
        "{missing}"
    );
    let unknown = run_funcs(vec![call("nope", &[], "x")]).await.unwrap_err();
    assert!(
        unknown.message.contains("function 'nope' not found"),
        "{unknown}"
    );
}

#[test]
fn mistakes_are_reported_with_line_and_column() {
    let cases = [
        (
            "import px\ndf = px.DataFrame(table='nope')\n",
            2,
            6,
            "Table 'nope' not found",
        ),
        (
            "import px\ndf = px.DataFrame('http_events')\nx = df.nope\n",
            3,
            5,
            "column 'nope' not found",
        ),
        (
            "import px\ndf = px.frobnicate()\n",
            2,
            6,
            "px has no function 'frobnicate'",
        ),
        (
            "import px\ndf = px.DataFrame('http_events', start_time='yesterday')\n",
            2,
            6,
            "is not a time",
        ),
        (
            "import px\ndf = px.DataFrame('http_events'\n",
            3,
            1,
            "syntax error",
        ),
        ("import os\n", 1, 1, "cannot import os"),
        ("import px\nprint(x)\n", 2, 1, "name 'print' is not defined"),
        (
            "import px\ndf = px.DataFrame('http_events')\ndf = df.groupby('service').agg(n=('latency', px.median))\n",
            3,
            46,
            "px has no function 'median'",
        ),
        (
            "#px:set max_output_rows_per_table=lots\nimport px\n",
            1,
            1,
            "whole number",
        ),
    ];
    for (script, line, column, message) in cases {
        let e = error(script);
        assert!(e.message.contains(message), "{script:?}: {e}");
        assert_eq!((e.line, e.column), (line, column), "{script:?}: {e}");
    }
}

#[test]
fn hostile_inputs_are_refused_cleanly() {
    let huge = format!("import px\n{}", "x = 1\n".repeat(300_000));
    assert!(error(&huge).message.contains("limited to"));
    let parens = format!("import px\nx = {}1{}\n", "(".repeat(5000), ")".repeat(5000));
    assert!(compile(&parens, &Catalog(table()), &CompileOptions::at(NOW)).is_ok());
    let deep = format!(
        "import px\ndf = px.DataFrame('http_events')\nx = df.latency{}\n",
        " + 1".repeat(5000)
    );
    assert!(error(&deep).message.contains("nested too deeply"));
    let not_utf8 = String::from_utf8_lossy(b"import px\nx = '\xff\xfe'\n").into_owned();
    assert!(compile(&not_utf8, &Catalog(table()), &CompileOptions::at(NOW)).is_ok());
}

/// One pod `shop/web` (uid p1, address 10.0.0.9) behind two services; every process
/// is in it, on node-1.
#[derive(Debug)]
struct FakeMetadata;

impl pxl::MetadataLookup for FakeMetadata {
    fn container_status(&self, id: &str) -> Option<pxl::ContainerMeta> {
        (id == "c1").then(|| pxl::ContainerMeta {
            state: "Waiting".to_owned(),
            reason: "CrashLoopBackOff".to_owned(),
            message: "back-off 5m0s".to_owned(),
        })
    }

    fn process(&self, upid: u128) -> Option<pxl::ProcessMeta> {
        Some(pxl::ProcessMeta {
            cmdline: format!("server --pid {}", (upid >> 64) as u32),
            pod_uid: "p1".to_owned(),
            container_id: "c1".to_owned(),
            container_name: "app".to_owned(),
        })
    }
    fn asid_node(&self, _asid: u32) -> Option<String> {
        Some("node-1".to_owned())
    }
    fn pod(&self, uid: &str) -> Option<pxl::PodMeta> {
        (uid == "p1").then(|| pxl::PodMeta {
            namespace: "shop".to_owned(),
            name: "web".to_owned(),
            service_uids: vec!["s2".to_owned(), "s1".to_owned()],
            ..pxl::PodMeta::default()
        })
    }
    fn pod_uid_by_ip(&self, ip: &str) -> Option<String> {
        (ip == "10.0.0.9").then(|| "p1".to_owned())
    }
    fn service(&self, uid: &str) -> Option<pxl::ServiceMeta> {
        Some(pxl::ServiceMeta {
            namespace: "shop".to_owned(),
            name: format!("web-{uid}"),
        })
    }
}

#[tokio::test]
async fn metadata_functions_resolve_pods_services_and_addresses_as_pixie_does() {
    let catalog = Catalog(table());
    let mut options = CompileOptions::at(NOW);
    options.metadata = Some(Arc::new(FakeMetadata));
    let script = "import px
df = px.DataFrame('http_events').head(1)
df.pod = df.ctx['pod']
df.ns = df.ctx['namespace']
df.svc = df.ctx['service']
df.container = df.ctx['container']
df.node = df.ctx['node']
df.peer = px.pod_id_to_pod_name(px.ip_to_pod_id('10.0.0.9'))
df.stranger = px.ip_to_pod_id('10.0.0.1')
df.has = px.has_service_name(df.svc, 'shop/web-s2')
df.status = px.container_id_to_status(df.ctx['container_id'])
df.gone = px.container_id_to_status('c9')
px.display(df[['pod', 'ns', 'svc', 'container', 'node', 'peer', 'stranger', 'has', 'status', 'gone']])
";
    let compiled = compile(script, &catalog, &options).unwrap();
    let batches = first_output(compiled).await;
    let text = |name: &str| {
        batches[0]
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_owned()
    };
    assert_eq!(text("pod"), "shop/web");
    assert_eq!(text("ns"), "shop");
    assert_eq!(
        text("svc"),
        r#"["shop/web-s1","shop/web-s2"]"#,
        "several: a JSON list"
    );
    assert_eq!(text("container"), "app");
    assert_eq!(text("node"), "node-1");
    assert_eq!(text("peer"), "shop/web");
    assert_eq!(text("stranger"), "", "an unknown address is no pod");
    assert_eq!(
        text("status"),
        r#"{"message":"back-off 5m0s","reason":"CrashLoopBackOff","state":"Waiting"}"#
    );
    assert_eq!(
        text("gone"),
        r#"{"message":"","reason":"","state":"Unknown"}"#
    );

    // A DataFrame of pods (pod_id, no upid) answers a pod's keys from its id, as Pixie's.
    let pods = "df = px.DataFrame('http_events')
df.pod_id = df.ctx['pod_id']
df = df.groupby('pod_id').agg(n=('latency', px.count))
df.pod = df.ctx['pod']
df.ns = df.ctx['namespace']
px.display(df)
";
    let compiled = compile(pods, &catalog, &options).unwrap();
    let pod_batches = first_output(compiled).await;
    assert_eq!(strings(&pod_batches, "pod"), ["shop/web"]);
    assert_eq!(strings(&pod_batches, "ns"), ["shop"]);
    let no_process = compile(
        "df = px.DataFrame('http_events')\ndf.pod_id = df.ctx['pod_id']\ndf = df.groupby('pod_id').agg()\ndf.pid = df.ctx['cmdline']\n",
        &catalog,
        &options,
    )
    .unwrap_err();
    assert!(
        no_process.message.contains("needs a upid column"),
        "{no_process}"
    );
    let has = batches[0]
        .column_by_name("has")
        .unwrap()
        .as_boolean()
        .value(0);
    assert!(has);
}

#[tokio::test]
async fn context_keys_answer_from_this_host() {
    let catalog = Catalog(table());
    let mut options = CompileOptions::at(NOW);
    options.hostname = "node-1".to_owned();
    let script = "import px
df = px.DataFrame('http_events').head(1)
df.pid = df.ctx['pid']
df.cmd = df.ctx['cmdline']
df.node = df.ctx['node']
df.pod = df.ctx['pod']
px.display(df[['pid', 'cmd', 'node', 'pod']])
";
    let compiled = compile(script, &catalog, &options).unwrap();
    let ctx = SessionContext::new();
    let plan = compiled.outputs.into_iter().next().unwrap().plan;
    let batches = ctx
        .execute_logical_plan(plan)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = |name: &str| {
        batches[0]
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_owned()
    };
    assert_eq!(ints(&batches, "pid"), vec![4000]);
    assert_eq!(text("cmd"), "", "no process table");
    assert_eq!(text("node"), "node-1");
    assert_eq!(text("pod"), "", "no cluster metadata in local mode");
    let e = compile(
        "import px\ndf = px.DataFrame('http_events')\nx = df.ctx['bogus']\n",
        &catalog,
        &options,
    )
    .unwrap_err();
    assert!(e.message.contains("df.ctx has no key 'bogus'"), "{e}");
}

#[tokio::test]
async fn merge_and_append() {
    let script = "import px
df = px.DataFrame('http_events')
counts = df.groupby('service').agg(n=('latency', px.count))
worst = df.groupby('service').agg(n=('latency', px.max))
both = counts.merge(worst, how='inner', left_on='service', right_on='service', suffixes=['', '_max'])
px.display(both, 'merged')
errors = df[df.resp_status == 500]
px.display(errors.append(errors), 'twice')
";
    let out = run(script).await;
    let merged = &out[0].1;
    assert_eq!(rows(merged), 3);
    let names: Vec<String> = merged[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["service", "n", "service_max", "n_max"]);
    assert_eq!(rows(&out[1].1), 20);
    let e = compile(
        "import px\ndf = px.DataFrame('http_events')\nx = df.merge(df, how='sideways', left_on='service', right_on='service')\n",
        &Catalog(table()),
        &CompileOptions::at(NOW),
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("is not one of inner, left, right, outer"),
        "{e}"
    );
}

#[tokio::test]
async fn quantiles_and_pluck() {
    let script = "import px
df = px.DataFrame('http_events')
q = df.groupby('service').agg(lat=('latency', px.quantiles), n=('latency', px.count))
q.p50 = px.pluck_float64(q.lat, 'p50')
q.p99 = px.pluck_float64(q.lat, 'p99')
px.display(q[['service', 'lat', 'p50', 'p99', 'n']])
";
    let out = run(script).await;
    let batches = &out[0].1;
    assert_eq!(rows(batches), 3);
    let batch = &batches[0];
    let lat = batch
        .column_by_name("lat")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_owned();
    assert!(
        lat.starts_with("{\"p01\":") && lat.contains("\"p99\":"),
        "{lat}"
    );
    let p50 = batch
        .column_by_name("p50")
        .unwrap()
        .as_primitive::<Float64Type>();
    let p99 = batch
        .column_by_name("p99")
        .unwrap()
        .as_primitive::<Float64Type>();
    for i in 0..batch.num_rows() {
        // Latencies are 0..99,000 in steps of 1,000 spread over three services.
        assert!(
            (40_000.0..60_000.0).contains(&p50.value(i)),
            "{}",
            p50.value(i)
        );
        assert!(p99.value(i) >= 95_000.0, "{}", p99.value(i));
    }
}

#[tokio::test]
async fn semantic_type_wrappers_mark_the_output_columns() {
    let out = run("import px
df = px.DataFrame('http_events')
df = df.groupby('service').agg(lat=('latency', px.mean), n=('latency', px.count))
df.lat = px.DurationNanos(df.lat)
df.share = px.Percent(df.n / 100.0)
df.size = px.Bytes(df.n * 1024)
df.plain = df.n
px.display(df, 'out')
")
    .await;
    let schema = out[0].1[0].schema();
    let semantic = |column: &str| {
        schema
            .field_with_name(column)
            .unwrap()
            .metadata()
            .get("px.semantic_type")
            .cloned()
    };
    assert_eq!(semantic("lat").as_deref(), Some("ST_DURATION_NS"));
    assert_eq!(semantic("share").as_deref(), Some("ST_PERCENT"));
    assert_eq!(semantic("size").as_deref(), Some("ST_BYTES"));
    assert_eq!(semantic("plain"), None);
    // The values are unchanged.
    assert_eq!(ints(&out[0].1, "size").iter().sum::<i64>(), 100 * 1024);
}

#[tokio::test]
async fn floor_rounds_down() {
    let out = run("import px
df = px.DataFrame('http_events')
df.ms = px.floor(df.latency / 3000.0)
df.c = px.floor(2.7)
df = df[df.latency == 10000]
px.display(df[['ms', 'c']], 'out')
")
    .await;
    let batch = &out[0].1[0];
    let values = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<arrow_array::types::Float64Type>()
            .value(0)
    };
    assert_eq!(values("ms"), 3.0);
    assert_eq!(values("c"), 2.0);
}

#[tokio::test]
async fn px_sql_plans_sql_over_the_same_tables() {
    let out = run("import px
df = px.sql('''
    SELECT service, count(*) AS n,
           sum(CASE WHEN resp_status >= 400 THEN 1 ELSE 0 END) AS errors
    FROM http_events GROUP BY service ORDER BY service
''')
df.error_rate = df.errors / df.n
px.display(df, 'by_service')
")
    .await;
    let batches = &out[0].1;
    assert_eq!(ints(batches, "n"), [34, 33, 33]);
    assert_eq!(ints(batches, "errors"), [4, 3, 3]);

    let unknown = error("import px\npx.display(px.sql('SELECT * FROM nope'))\n");
    assert_eq!(unknown.line, 2);
    assert!(
        unknown.message.contains("Table 'nope' not found"),
        "{unknown}"
    );
    let writes = error("import px\npx.display(px.sql('DROP TABLE http_events'))\n");
    assert!(writes.message.contains("cannot change"), "{writes}");
    let two = error("import px\npx.display(px.sql('SELECT 1; SELECT 2'))\n");
    assert!(two.message.contains("one query"), "{two}");
}

#[test]
fn arguments_at_line_breaks_need_no_comma_as_in_pixie() {
    let catalog = Catalog(table());
    let script = "import px
df = px.DataFrame('http_events')
df = df.groupby('resp_status').agg(
    n=('latency', px.count)
    worst=('latency', px.max)
)
px.display(df)
";
    let compiled = compile(script, &catalog, &CompileOptions::at(NOW)).unwrap();
    assert_eq!(compiled.outputs.len(), 1);
    // A real syntax error still says where it is.
    let e = error("import px\nx = (1 +\n");
    assert!(e.message.contains("syntax error"), "{}", e.message);
}

#[test]
fn booleans_aggregate_as_pixie_does_and_types_are_pythons() {
    let catalog = Catalog(table());
    let script = "import px
px.Pod = str
df = px.DataFrame('http_events')
df.failure = df.resp_status >= 400
name = 'n'
df[name] = str(df.resp_status)
df = df.groupby('resp_status').agg(
    error_rate=('failure', px.mean),
    errors=('failure', px.sum),
)
px.display(df)
";
    compile(script, &catalog, &CompileOptions::at(NOW)).unwrap();
}

#[tokio::test]
async fn script_references_are_pixies_json_links() {
    let catalog = Catalog(table());
    let script = "import px
df = px.DataFrame('http_events').head(1)
df.link = px.script_reference(df.service, 'px/service', {'service': df.service, 'start_time': '-5m'})
px.display(df[['link']])
";
    let compiled = compile(script, &catalog, &CompileOptions::at(NOW)).unwrap();
    let batches = first_output(compiled).await;
    let link = batches[0].column(0).as_string::<i32>().value(0).to_owned();
    let link: serde_json::Value = serde_json::from_str(&link).unwrap();
    assert_eq!(link["script"], "px/service");
    assert_eq!(link["args"]["start_time"], "-5m");
    assert_eq!(link["label"], link["args"]["service"]);
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name(column).unwrap();
            let column = datafusion::arrow::compute::cast(
                column,
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let column = column.as_string::<i32>();
            (0..arrow_array::Array::len(column))
                .map(|i| column.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn string_functions_as_pixie_has_them() {
    let script = "import px
df = px.DataFrame('http_events')
df = df.groupby('service').agg(n=('latency', px.count))
df.name = 'svc-' + df.service + '.ns.svc.cluster'
df.whole = px.regex_match('svc-[ab]', df.name)
df.part = px.regex_match('[ab]', df.name)
df.masked = px.replace('[a-c]', df.service, 'X')
df.swapped = px.replace('(svc)-(.)', df.name, '\\\\2-\\\\1')
df.at = px.find(df.name, '.svc.cluster')
df.missing = px.find(df.name, 'nowhere')
df.short = px.substring(df.name, 0, df.at)
df.len = px.length(df.name)
df.second = px.pluck_array(px.split(df.name, '.'), 1)
px.display(df)
";
    let out = run(script).await;
    let batches = &out[0].1;
    let sorted = |column: &str| {
        let mut rows: Vec<(String, String)> = strings(batches, "service")
            .into_iter()
            .zip(strings(batches, column))
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, v)| v).collect::<Vec<_>>()
    };
    // Pixie's patterns match the whole string.
    assert_eq!(sorted("whole"), ["false", "false", "false"]);
    assert_eq!(sorted("part"), ["false", "false", "false"]);
    assert_eq!(sorted("masked"), ["X", "X", "X"]);
    assert_eq!(sorted("swapped")[0], "a-svc.ns.svc.cluster");
    assert_eq!(sorted("at"), ["8", "8", "8"]);
    assert_eq!(sorted("missing"), ["-1", "-1", "-1"]);
    assert_eq!(sorted("short"), ["svc-a.ns", "svc-b.ns", "svc-c.ns"]);
    assert_eq!(sorted("len"), ["20", "20", "20"]);
    assert_eq!(sorted("second"), ["ns", "ns", "ns"]);

    let matching = "import px
df = px.DataFrame('http_events')
df = df[px.regex_match('[ab]', df.service)]
df = df.groupby('service').agg(n=('latency', px.count))
px.display(df)
";
    let mut services = strings(&run(matching).await[0].1, "service");
    services.sort();
    assert_eq!(services, ["a", "b"]);
}

#[tokio::test]
async fn time_differences_are_nanoseconds_in_arithmetic() {
    let script = "import px
df = px.DataFrame('http_events')
df = df.groupby('service').agg(first=('time_', px.min), last=('time_', px.max), n=('latency', px.count))
df.span = df.last - df.first
df.per_second = df.n * 1000000000 / df.span
df.later = df.first + px.seconds(1)
px.display(df[['service', 'span', 'per_second', 'later']])
";
    let out = run(script).await;
    let batches = &out[0].1;
    // Each service has a row every 3 s over 99 s.
    assert!(
        ints(batches, "span")
            .iter()
            .all(|&s| (96_000_000_000..=99_000_000_000).contains(&s))
    );
    assert_eq!(ints(batches, "per_second"), [0, 0, 0]);
    let later = batches[0].column_by_name("later").unwrap();
    assert!(matches!(
        later.data_type(),
        datafusion::arrow::datatypes::DataType::Timestamp(..)
    ));
}

#[tokio::test]
async fn pxviews_is_a_module_of_views_pixies_scripts_import() {
    let script = "import px
import pxviews
df = pxviews.inbound_http_summary(start_time='-5m', end_time=px.now())
px.display(df)
";
    let catalog = Catalog(table());
    // The test table lacks the columns of real http_events: the module's function runs,
    // and its error says where, in the module and in the script.
    let failed = compile(script, &catalog, &CompileOptions::at(NOW)).unwrap_err();
    assert_eq!((failed.line, failed.column), (3, 6), "{failed}");
    assert!(
        failed
            .message
            .starts_with("pxviews.inbound_http_summary, at "),
        "{failed}"
    );
    let unknown = error("import pxviews\npxviews.nothing()\n");
    assert!(
        unknown
            .message
            .contains("pxviews has no function 'nothing'"),
        "{unknown}"
    );
    let private = error("import pxviews\npxviews._workload(1)\n");
    assert!(
        private.message.contains("no function '_workload'"),
        "{private}"
    );
    let other = error("import os\n");
    assert!(other.message.contains("import px and pxviews"), "{other}");
}

#[tokio::test]
async fn function_lists_have_pixies_columns() {
    let script = "import px
px.display(px.GetUDFList(), 'udfs')
px.display(px.GetUDAList(), 'udas')
px.display(px.GetUDTFList(), 'udtfs')
";
    let out = run(script).await;
    let columns = |i: usize| -> Vec<String> {
        let (_, batches) = &out[i];
        batches[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    };
    assert_eq!(columns(0), ["name", "return_type", "args"]);
    assert_eq!(columns(1), ["name", "return_type", "args"]);
    assert_eq!(
        columns(2),
        ["name", "executor", "init_args", "output_relation"]
    );
    let udfs: Vec<(String, String)> = strings(&out[0].1, "name")
        .into_iter()
        .zip(strings(&out[0].1, "args"))
        .collect();
    assert!(udfs.contains(&("upid_to_pod_name".into(), r#"{"args":["UINT128"]}"#.into())));
    assert!(udfs.contains(&(
        "regex_match".into(),
        r#"{"args":["STRING","STRING"]}"#.into()
    )));
    assert!(strings(&out[1].1, "name").contains(&"quantiles".to_owned()));
    let udtfs = strings(&out[2].1, "name");
    let relations = strings(&out[2].1, "output_relation");
    let agents = udtfs.iter().position(|n| n == "GetAgentStatus").unwrap();
    assert!(
        relations[agents].contains(r#""name":"asid","ptype":"GENERAL","type":"INT64""#),
        "{}",
        relations[agents]
    );
}

#[tokio::test]
async fn the_cluster_name_is_the_vizier_name_and_on_every_agent() {
    struct WithAgents;
    impl TableCatalog for WithAgents {
        fn table(&self, _: &str) -> Option<Arc<dyn TableSource>> {
            None
        }
        fn table_names(&self) -> Vec<String> {
            Vec::new()
        }
        fn agents(&self) -> Vec<pxl::AgentInfo> {
            ["node-a", "node-b"]
                .iter()
                .map(|h| pxl::AgentInfo {
                    agent_id: 1,
                    asid: 1,
                    hostname: (*h).to_owned(),
                    ip_address: String::new(),
                    agent_state: "AGENT_STATE_HEALTHY".to_owned(),
                    create_time_ns: 0,
                    last_heartbeat_ns: 0,
                })
                .collect()
        }
    }
    let mut options = CompileOptions::at(NOW);
    options.cluster_name = "prod-eu-1".to_owned();
    options.cluster_namespace = "pl".to_owned();
    let script = "import px
df = px.GetAgentStatus()
df.vizier = px.vizier_name()
df.ns = px.vizier_namespace()
px.display(df[['hostname', 'cluster_name', 'vizier', 'ns']])
";
    let compiled = compile(script, &WithAgents, &options).unwrap();
    let batches = first_output(compiled).await;
    assert_eq!(
        strings(&batches, "cluster_name"),
        ["prod-eu-1", "prod-eu-1"]
    );
    assert_eq!(strings(&batches, "vizier"), ["prod-eu-1", "prod-eu-1"]);
    assert_eq!(strings(&batches, "ns"), ["pl", "pl"]);
}
