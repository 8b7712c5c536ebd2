//! `px run` and `px scripts`: run a PxL script against Kelvin's API and print the tables.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use comfy_table::{Table, presets::NOTHING};
use px_api::vizierpb::{
    Column, ExecuteScriptRequest, RowBatchData,
    column::ColData,
    execute_script_request::{FuncToExecute, func_to_execute::ArgValue},
    execute_script_response,
    vizier_service_client::VizierServiceClient,
};
use serde_json::{Map, Value};

/// Where `px local` serves the API, and where `px run` looks for it by default
/// (the port Pixie's query broker uses).
pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:50300";

/// The scripts that come with px: (name, source). The first comment line describes it.
const SCRIPTS: &[(&str, &str)] = &[
    (
        "px/agent_status",
        include_str!("../scripts/px/agent_status.pxl"),
    ),
    ("px/cluster", include_str!("../scripts/px/cluster.pxl")),
    (
        "px/conn_stats",
        include_str!("../scripts/px/conn_stats.pxl"),
    ),
    ("px/http_data", include_str!("../scripts/px/http_data.pxl")),
    (
        "px/http_request_stats",
        include_str!("../scripts/px/http_request_stats.pxl"),
    ),
    (
        "px/inbound_conns",
        include_str!("../scripts/px/inbound_conns.pxl"),
    ),
    ("px/namespace", include_str!("../scripts/px/namespace.pxl")),
    (
        "px/namespaces",
        include_str!("../scripts/px/namespaces.pxl"),
    ),
    (
        "px/net_flow_graph",
        include_str!("../scripts/px/net_flow_graph.pxl"),
    ),
    (
        "px/network_stats",
        include_str!("../scripts/px/network_stats.pxl"),
    ),
    ("px/node", include_str!("../scripts/px/node.pxl")),
    ("px/nodes", include_str!("../scripts/px/nodes.pxl")),
    (
        "px/outbound_conns",
        include_str!("../scripts/px/outbound_conns.pxl"),
    ),
    (
        "px/pid_memory_usage",
        include_str!("../scripts/px/pid_memory_usage.pxl"),
    ),
    ("px/pod", include_str!("../scripts/px/pod.pxl")),
    ("px/pods", include_str!("../scripts/px/pods.pxl")),
    ("px/schemas", include_str!("../scripts/px/schemas.pxl")),
    ("px/service", include_str!("../scripts/px/service.pxl")),
    (
        "px/service_stats",
        include_str!("../scripts/px/service_stats.pxl"),
    ),
    ("px/services", include_str!("../scripts/px/services.pxl")),
    ("px/upids", include_str!("../scripts/px/upids.pxl")),
];

fn description(source: &str) -> &str {
    source
        .lines()
        .next()
        .and_then(|l| l.strip_prefix('#'))
        .map_or("", str::trim)
}

/// How `px run` prints results.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns, one block per table.
    Table,
    /// One JSON object per row, with the table's name in `_table`.
    Json,
    /// Comma-separated values, one header line per table.
    Csv,
}

/// What to run, and where.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// A bundled script (list them with `px scripts`), e.g. px/http_data.
    #[arg(required_unless_present_any = ["file", "sql"], conflicts_with_all = ["file", "sql"])]
    script: Option<String>,
    /// Run the PxL script in this file instead.
    #[arg(short = 'f', long = "file", conflicts_with = "sql")]
    file: Option<PathBuf>,
    /// Run this SQL query over the tables instead (DataFusion's SQL, through PxL's
    /// `px.sql`); its result is the table `output`.
    #[arg(long)]
    sql: Option<String>,
    #[command(flatten)]
    api: crate::api_client::ApiArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Format,
    /// The script's function that `-- ARGS` are passed to [default: the script's name
    /// without its folder, e.g. http_data].
    #[arg(long)]
    func: Option<String>,
    /// Arguments of the script's function, after `--`: `--start_time=-30m` or
    /// `--start_time -30m`, parsed to the types its parameters are annotated with.
    #[arg(last = true, value_name = "ARGS")]
    script_args: Vec<String>,
}

impl RunArgs {
    /// The function call `-- ARGS` ask for, if any (`ExecuteScriptRequest.exec_funcs`).
    fn exec_funcs(&self) -> anyhow::Result<Vec<FuncToExecute>> {
        if self.script_args.is_empty() && self.func.is_none() {
            return Ok(Vec::new());
        }
        let name = match (&self.func, &self.script, &self.file) {
            (Some(func), _, _) => func.clone(),
            (None, Some(script), _) => script.rsplit('/').next().unwrap_or(script).to_owned(),
            (None, None, Some(file)) => file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            (None, None, None) => bail!("name a script or give one with -f FILE"),
        };
        Ok(vec![FuncToExecute {
            func_name: name.clone(),
            arg_values: parse_script_args(&self.script_args)?,
            output_table_prefix: name,
        }])
    }
}

/// `--name=value` and `--name value` pairs.
fn parse_script_args(args: &[String]) -> anyhow::Result<Vec<ArgValue>> {
    let mut values = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            bail!("script argument {arg:?} must be --NAME=VALUE or --NAME VALUE");
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => {
                let value = rest
                    .next()
                    .with_context(|| format!("script argument --{flag} has no value"))?;
                (flag.to_owned(), value.clone())
            }
        };
        values.push(ArgValue { name, value });
    }
    Ok(values)
}

/// `px scripts`: the bundled scripts with one line each.
pub(crate) fn list_scripts() {
    let width = SCRIPTS.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, source) in SCRIPTS {
        println!("{name:<width$}  {}", description(source));
    }
}

struct OutputTable {
    name: String,
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// A PxL script that displays the result of one SQL query.
fn sql_script(query: &str) -> String {
    // A JSON string is also a valid Python string literal.
    let literal = serde_json::Value::String(query.to_owned()).to_string();
    format!("import px\npx.display(px.sql({literal}), 'output')\n")
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let source = match (&args.script, &args.file) {
        _ if args.sql.is_some() => sql_script(args.sql.as_deref().unwrap_or_default()),
        (_, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        (Some(name), None) => match SCRIPTS.iter().find(|(n, _)| n == name) {
            Some((_, source)) => (*source).to_owned(),
            None => bail!("no bundled script {name:?}; `px scripts` lists them"),
        },
        (None, None) => bail!("name a script or give one with -f FILE"),
    };
    let channel = args.api.connect().await?;
    let mut client = VizierServiceClient::new(channel);
    let mut request = tonic::Request::new(ExecuteScriptRequest {
        query_str: source,
        exec_funcs: args.exec_funcs()?,
        ..ExecuteScriptRequest::default()
    });
    args.api.authorize(&mut request)?;
    let mut stream = client
        .execute_script(request)
        .await
        .map_err(crate::api_client::refused)?
        .into_inner();
    let mut tables: Vec<OutputTable> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    while let Some(response) = stream.message().await? {
        if let Some(status) = response.status.filter(|s| s.code != 0) {
            bail!("the script failed: {}", status.message);
        }
        match response.result {
            Some(execute_script_response::Result::MetaData(meta)) => {
                let columns = meta
                    .relation
                    .map(|r| r.columns.into_iter().map(|c| c.column_name).collect())
                    .unwrap_or_default();
                by_id.insert(meta.id, tables.len());
                tables.push(OutputTable {
                    name: meta.name,
                    columns,
                    rows: Vec::new(),
                });
            }
            Some(execute_script_response::Result::Data(data)) => {
                if let Some(batch) = data.batch
                    && let Some(index) = by_id.get(&batch.table_id)
                {
                    append_rows(&mut tables[*index], &batch);
                }
            }
            None => {}
        }
    }
    print_tables(&tables, args.output)
}

fn append_rows(table: &mut OutputTable, batch: &RowBatchData) {
    let rows = usize::try_from(batch.num_rows).unwrap_or(0);
    for row in 0..rows {
        table
            .rows
            .push(batch.cols.iter().map(|c| cell(c, row)).collect());
    }
}

fn cell(column: &Column, row: usize) -> Value {
    match &column.col_data {
        Some(ColData::BooleanData(c)) => c.data.get(row).copied().map_or(Value::Null, Value::Bool),
        Some(ColData::Int64Data(c)) => c.data.get(row).map_or(Value::Null, |v| Value::from(*v)),
        Some(ColData::Float64Data(c)) => c.data.get(row).map_or(Value::Null, |v| Value::from(*v)),
        Some(ColData::Time64nsData(c)) => c
            .data
            .get(row)
            .map_or(Value::Null, |v| Value::String(format_time(*v))),
        Some(ColData::StringData(c)) => c.data.get(row).map_or(Value::Null, |v| {
            Value::String(String::from_utf8_lossy(v).into_owned())
        }),
        Some(ColData::Uint128Data(c)) => c.data.get(row).map_or(Value::Null, |v| {
            let h = v.high;
            let l = v.low;
            Value::String(format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                h >> 32,
                (h >> 16) & 0xffff,
                h & 0xffff,
                l >> 48,
                l & 0xffff_ffff_ffff
            ))
        }),
        None => Value::Null,
    }
}

/// RFC 3339 in UTC with nanoseconds, e.g. 2026-11-22T09:58:55.123456789Z.
fn format_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn print_tables(tables: &[OutputTable], format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => {
            for table in tables {
                writeln!(out, "{}:", table.name)?;
                let mut printed = Table::new();
                printed.load_style(NOTHING).set_header(&table.columns);
                for row in &table.rows {
                    printed.add_row(row.iter().map(text));
                }
                writeln!(out, "{printed}\n")?;
            }
        }
        Format::Json => {
            for table in tables {
                for row in &table.rows {
                    let mut object = Map::new();
                    object.insert("_table".into(), Value::String(table.name.clone()));
                    for (name, value) in table.columns.iter().zip(row) {
                        object.insert(name.clone(), value.clone());
                    }
                    writeln!(out, "{}", Value::Object(object))?;
                }
            }
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            for table in tables {
                writer.write_record(
                    std::iter::once("_table").chain(table.columns.iter().map(String::as_str)),
                )?;
                for row in &table.rows {
                    writer.write_record(
                        std::iter::once(table.name.clone()).chain(row.iter().map(text)),
                    )?;
                }
            }
            writer.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_rfc3339_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_time(1_795_337_936_255_147_452),
            "2026-11-22T08:58:56.255147452Z"
        );
    }

    #[test]
    fn every_script_file_is_bundled() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/px");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().replace(".pxl", ""))
            .map(|name| format!("px/{name}"))
            .collect();
        files.sort();
        let bundled: Vec<String> = SCRIPTS.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(files, bundled);
    }

    #[test]
    fn every_bundled_script_has_a_description() {
        for (name, source) in SCRIPTS {
            assert!(!description(source).is_empty(), "{name}");
        }
    }

    /// The PEM's tables, empty, as a compiler catalog.
    struct PemTables(Vec<std::sync::Arc<px_tablestore::Table>>);

    impl pxl::TableCatalog for PemTables {
        fn table(
            &self,
            name: &str,
        ) -> Option<std::sync::Arc<dyn datafusion::logical_expr::TableSource>> {
            let table = self.0.iter().find(|t| t.schema().name == name)?;
            Some(datafusion::datasource::provider_as_source(
                std::sync::Arc::new(px_tablestore::TableScan::new(std::sync::Arc::clone(table))),
            ))
        }

        fn table_names(&self) -> Vec<String> {
            self.0.iter().map(|t| t.schema().name.clone()).collect()
        }
    }

    fn bundled(name: &str) -> &'static str {
        SCRIPTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, source)| *source)
            .unwrap()
    }

    fn pem_tables() -> PemTables {
        PemTables(
            vizier_pem::tables::schemas()
                .into_iter()
                .map(|schema| std::sync::Arc::new(px_tablestore::Table::new(schema, 1 << 20)))
                .collect(),
        )
    }

    fn run_args(script: &str, script_args: &[&str]) -> RunArgs {
        RunArgs {
            script: Some(script.to_owned()),
            file: None,
            api: crate::api_client::ApiArgs::default(),
            output: Format::Json,
            func: None,
            sql: None,
            script_args: script_args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn every_bundled_script_compiles_against_the_pems_tables() {
        for (name, source) in SCRIPTS {
            let options = pxl::CompileOptions::at(1_800_000_000_000_000_000);
            let script = pxl::compile(source, &pem_tables(), &options)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // One of its tables is named after it.
            assert!(
                script
                    .outputs
                    .iter()
                    .any(|o| format!("px/{}", o.name) == *name),
                "{name}"
            );
        }
    }

    #[test]
    fn sql_becomes_a_script_that_displays_it() {
        let query =
            "SELECT req_path, count(*) AS \"n\" FROM http_events WHERE req_path <> '\\' GROUP BY 1";
        let options = pxl::CompileOptions::at(1_800_000_000_000_000_000);
        let script = pxl::compile(&sql_script(query), &pem_tables(), &options).unwrap();
        assert_eq!(script.outputs[0].name, "output");
        let fields: Vec<String> = script.outputs[0]
            .plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(fields, ["req_path", "n"]);
    }

    #[test]
    fn script_arguments_call_the_scripts_function() {
        let args = run_args(
            "px/http_data",
            &[
                "--start_time=-30m",
                "--path_contains",
                "/api",
                "--max_rows=5",
            ],
        );
        let funcs = args.exec_funcs().unwrap();
        assert_eq!(funcs[0].func_name, "http_data");
        let pairs: Vec<(&str, &str)> = funcs[0]
            .arg_values
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("start_time", "-30m"),
                ("path_contains", "/api"),
                ("max_rows", "5")
            ]
        );
        let mut options = pxl::CompileOptions::at(1_800_000_000_000_000_000);
        options.exec_funcs = kelvin::func_calls(&funcs);
        let script = pxl::compile(bundled("px/http_data"), &pem_tables(), &options).unwrap();
        assert_eq!(script.outputs[0].name, "http_data");

        let bad = run_args("px/http_data", &["start_time=-30m"]);
        assert!(
            bad.exec_funcs()
                .unwrap_err()
                .to_string()
                .contains("--NAME=VALUE")
        );
        let missing = run_args("px/http_data", &["--start_time"]);
        assert!(
            missing
                .exec_funcs()
                .unwrap_err()
                .to_string()
                .contains("has no value")
        );
        options.exec_funcs[0].args = vec![("max_rows".to_owned(), "many".to_owned())];
        let error = pxl::compile(bundled("px/http_data"), &pem_tables(), &options).unwrap_err();
        assert!(error.message.contains("must be an integer"), "{error}");
    }
}
