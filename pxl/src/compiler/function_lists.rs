//! `px.GetUDFList()`, `px.GetUDAList()` and `px.GetUDTFList()`: the functions a script
//! can call, with Pixie's columns and type names.

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;

use super::*;

/// Scalar functions of `px` besides the metadata ones: name, return type, argument types
/// (one row per form).
const SCALAR_FUNCTIONS: &[(&str, &str, &[&str])] = &[
    ("bin", "INT64", &["INT64", "INT64"]),
    ("bin", "TIME64NS", &["TIME64NS", "INT64"]),
    ("contains", "BOOLEAN", &["STRING", "STRING"]),
    ("find", "INT64", &["STRING", "STRING"]),
    ("floor", "FLOAT64", &["FLOAT64"]),
    ("has_service_name", "BOOLEAN", &["STRING", "STRING"]),
    ("length", "INT64", &["STRING"]),
    ("pluck", "STRING", &["STRING", "STRING"]),
    ("pluck_array", "STRING", &["STRING", "INT64"]),
    ("pluck_float64", "FLOAT64", &["STRING", "STRING"]),
    ("pluck_int64", "INT64", &["STRING", "STRING"]),
    ("regex_match", "BOOLEAN", &["STRING", "STRING"]),
    ("replace", "STRING", &["STRING", "STRING", "STRING"]),
    ("select", "STRING", &["BOOLEAN", "STRING", "STRING"]),
    ("select", "INT64", &["BOOLEAN", "INT64", "INT64"]),
    ("select", "FLOAT64", &["BOOLEAN", "FLOAT64", "FLOAT64"]),
    ("split", "STRING", &["STRING", "STRING"]),
    ("substring", "STRING", &["STRING", "INT64", "INT64"]),
    ("upid_to_asid", "INT64", &["UINT128"]),
    ("upid_to_pid", "INT64", &["UINT128"]),
];

/// Aggregates: name, return type, argument types.
const AGGREGATES: &[(&str, &str, &[&str])] = &[
    ("any", "STRING", &["STRING"]),
    ("any", "INT64", &["INT64"]),
    ("count", "INT64", &["STRING"]),
    ("count", "INT64", &["INT64"]),
    ("max", "INT64", &["INT64"]),
    ("max", "FLOAT64", &["FLOAT64"]),
    ("max", "TIME64NS", &["TIME64NS"]),
    ("mean", "FLOAT64", &["INT64"]),
    ("mean", "FLOAT64", &["FLOAT64"]),
    ("mean", "FLOAT64", &["BOOLEAN"]),
    ("min", "INT64", &["INT64"]),
    ("min", "FLOAT64", &["FLOAT64"]),
    ("min", "TIME64NS", &["TIME64NS"]),
    ("quantiles", "STRING", &["INT64"]),
    ("quantiles", "STRING", &["FLOAT64"]),
    ("sum", "INT64", &["INT64"]),
    ("sum", "FLOAT64", &["FLOAT64"]),
    ("sum", "INT64", &["BOOLEAN"]),
];

/// Table functions, and the agents they run on (Pixie's executor names).
const TABLE_FUNCTIONS: &[(&str, &str)] = &[
    ("GetAgentStatus", "UDTF_ONE_KELVIN"),
    ("GetSchemas", "UDTF_ONE_KELVIN"),
    ("GetTables", "UDTF_ONE_KELVIN"),
    ("GetTracepointStatus", "UDTF_ONE_KELVIN"),
    ("GetUDAList", "UDTF_ONE_KELVIN"),
    ("GetUDFList", "UDTF_ONE_KELVIN"),
    ("GetUDTFList", "UDTF_ONE_KELVIN"),
];

fn args_json(args: &[&str]) -> String {
    serde_json::json!({ "args": args }).to_string()
}

fn text(values: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

impl Compiler<'_> {
    /// `px.GetUDFList()` (scalar functions) or `px.GetUDAList()` (aggregates): name,
    /// return type, arguments (`{"args": [...]}`).
    pub(super) fn function_list(&self, at: &ast::Expr, name: &str) -> Result<Value> {
        let rows: Vec<(String, String, String)> = if name == "GetUDAList" {
            AGGREGATES
                .iter()
                .map(|(n, r, a)| ((*n).to_owned(), (*r).to_owned(), args_json(a)))
                .collect()
        } else {
            let mut rows: Vec<_> = SCALAR_FUNCTIONS
                .iter()
                .map(|(n, r, a)| ((*n).to_owned(), (*r).to_owned(), args_json(a)))
                .chain(
                    crate::metadata::signatures()
                        .map(|(n, r, a)| (n.to_owned(), r.to_owned(), args_json(a))),
                )
                .collect();
            rows.sort();
            rows
        };
        let (names, returns, args) = rows.into_iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut n, mut r, mut a), (name, ret, arg)| {
                n.push(name);
                r.push(ret);
                a.push(arg);
                (n, r, a)
            },
        );
        self.memory_table(
            at,
            name,
            vec![
                ("name", DataType::Utf8, "STRING", text(names)),
                ("return_type", DataType::Utf8, "STRING", text(returns)),
                ("args", DataType::Utf8, "STRING", text(args)),
            ],
        )
    }

    /// `px.GetUDTFList()`: each table function with its executor, its arguments (none
    /// here) and its output relation, as Pixie's JSON.
    pub(super) fn table_function_list(&self, at: &ast::Expr) -> Result<Value> {
        let mut names = Vec::new();
        let mut executors = Vec::new();
        let mut init_args = Vec::new();
        let mut relations = Vec::new();
        for (name, executor) in TABLE_FUNCTIONS {
            let plan = match *name {
                "GetAgentStatus" => self.agent_status(at)?,
                "GetTracepointStatus" => self.tracepoint_status(at)?,
                "GetSchemas" | "GetTables" => self.catalog_table(at, name)?,
                "GetUDTFList" => {
                    let columns = ["name", "executor", "init_args", "output_relation"];
                    relations.push(relation_json(columns.iter().map(|c| (*c, "STRING"))));
                    names.push((*name).to_owned());
                    executors.push((*executor).to_owned());
                    init_args.push(serde_json::json!({ "args": [] }).to_string());
                    continue;
                }
                _ => self.function_list(at, name)?,
            };
            let Value::DataFrame(plan) = plan else {
                continue;
            };
            let columns: Vec<(String, String)> = plan
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    let px_type = f
                        .metadata()
                        .get("px.data_type")
                        .cloned()
                        .unwrap_or_else(|| "STRING".to_owned());
                    (f.name().clone(), px_type)
                })
                .collect();
            relations.push(relation_json(
                columns.iter().map(|(n, t)| (n.as_str(), t.as_str())),
            ));
            names.push((*name).to_owned());
            executors.push((*executor).to_owned());
            init_args.push(serde_json::json!({ "args": [] }).to_string());
        }
        self.memory_table(
            at,
            "GetUDTFList",
            vec![
                ("name", DataType::Utf8, "STRING", text(names)),
                ("executor", DataType::Utf8, "STRING", text(executors)),
                ("init_args", DataType::Utf8, "STRING", text(init_args)),
                ("output_relation", DataType::Utf8, "STRING", text(relations)),
            ],
        )
    }
}

/// Pixie's `{"relation": [{"name", "type", "ptype", "desc"}]}`.
fn relation_json<'a>(columns: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let relation: Vec<serde_json::Value> = columns
        .map(|(name, data_type)| {
            serde_json::json!({ "name": name, "type": data_type, "ptype": "GENERAL", "desc": "" })
        })
        .collect();
    serde_json::json!({ "relation": relation }).to_string()
}
