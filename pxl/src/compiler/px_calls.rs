//! Calls of the `px` module's functions: `px.display`, time helpers, string and JSON
//! functions, metadata lookups.

use datafusion::arrow::datatypes::DataType;
use datafusion::functions::regex::expr_fn::{regexp_like, regexp_replace};
use datafusion::functions::string::expr_fn::octet_length;
use datafusion::functions::unicode::expr_fn::{strpos, substring};

use super::*;

impl Compiler<'_> {
    pub(super) fn px_call(&mut self, at: &ast::Expr, name: &str, mut args: Args) -> Result<Value> {
        match name {
            "DataFrame" => self.dataframe(at, args),
            "display" => {
                let Some(Value::DataFrame(plan)) = args.take(0, "df") else {
                    return Err(self.error(at, "px.display needs a DataFrame"));
                };
                let name = match args.take(1, "name") {
                    None => "output".to_owned(),
                    Some(Value::Str(name)) => name,
                    Some(other) => {
                        return Err(self.error(
                            at,
                            format!("the output name must be a string, not {}", other.kind()),
                        ));
                    }
                };
                self.outputs.push(Output {
                    name: self.unique_output_name(name),
                    plan,
                });
                Ok(Value::None)
            }
            "now" => Ok(Value::Time(self.options.now_ns)),
            // The Vizier's (the cluster's) name and namespace, as Pixie's UDFs give them.
            "vizier_name" => Ok(Value::Str(self.options.cluster_name.clone())),
            "vizier_namespace" => Ok(Value::Str(self.options.cluster_namespace.clone())),
            // A time as a script's arguments give it: relative ('-5m') or ns since the epoch.
            "parse_time" => {
                let value = args.take(0, "time");
                Ok(self.time_arg(at, value)?.map_or(Value::None, Value::Time))
            }
            "format_duration" => match args.take(0, "duration") {
                Some(Value::Int(ns)) => Ok(Value::Str(crate::time::format_duration_ns(ns))),
                _ => Err(self.error(at, "px.format_duration needs a whole number of nanoseconds, e.g. px.format_duration(px.parse_duration('-5m'))")),
            },
            "parse_duration" => match args.take(0, "duration") {
                Some(Value::Str(s)) => parse_duration_ns(&s).map(Value::Int).ok_or_else(|| {
                    self.error(
                        at,
                        format!("{s:?} is not a duration; write it like '-5m', '30s' or '2h'"),
                    )
                }),
                _ => Err(self.error(at, "px.parse_duration needs a string such as '-5m'")),
            },
            // Semantic-type wrappers: the value is unchanged, its column is marked.
            "DurationNanos" | "Percent" | "Bytes" => {
                let value = args
                    .take(0, "value")
                    .ok_or_else(|| self.error(at, format!("px.{name} needs a value")))?;
                match (value, crate::functions::SemanticTag::udf(name)) {
                    (Value::Column(expr), Some(tag)) => Ok(Value::Column(tag.call(vec![expr]))),
                    (other, _) => Ok(other),
                }
            }
            "select" => {
                let (cond, then, otherwise) =
                    (args.take(0, "cond"), args.take(1, "a"), args.take(2, "b"));
                let (Some(cond), Some(then), Some(otherwise)) = (cond, then, otherwise) else {
                    return Err(self.error(at, "px.select needs a condition and two values"));
                };
                let case = when(self.to_expr(at, cond)?, self.to_expr(at, then)?)
                    .otherwise(self.to_expr(at, otherwise)?)
                    .map_err(|e| self.error(at, e.strip_backtrace()))?;
                Ok(Value::Column(case))
            }
            "pluck" | "pluck_int64" | "pluck_float64" => {
                match (args.take(0, "json"), args.take(1, "key")) {
                    (Some(json), Some(key)) => {
                        let (json, key) = (self.to_expr(at, json)?, self.to_expr(at, key)?);
                        let pluck = crate::functions::Pluck::named(name)
                            .ok_or_else(|| self.error(at, format!("px.{name} is unknown")))?;
                        Ok(Value::Column(pluck.call(vec![json, key])))
                    }
                    _ => Err(self.error(
                        at,
                        format!("px.{name} needs a column and a key, e.g. px.{name}(df.q, 'p99')"),
                    )),
                }
            }
            "upid_to_pid" => match args.take(0, "upid") {
                Some(Value::Column(upid)) => Ok(Value::Column(
                    crate::functions::UpidToPid::udf().call(vec![upid]),
                )),
                _ => Err(self.error(at, "px.upid_to_pid needs a UPID column, e.g. px.upid_to_pid(df.upid)")),
            },
            "bin" => match (args.take(0, "column"), args.take(1, "size")) {
                (Some(Value::Column(column)), Some(Value::Int(size))) if size > 0 => {
                    Ok(Value::Column(bin(column, size)))
                }
                _ => Err(self.error(at, "px.bin needs a column and a positive size, e.g. px.bin(df.time_, px.seconds(10))")),
            },
            "seconds" | "minutes" | "hours" | "milliseconds" => match args.take(0, "n") {
                Some(Value::Int(n)) => {
                    let unit: i64 = match name {
                        "milliseconds" => 1_000_000,
                        "seconds" => 1_000_000_000,
                        "minutes" => 60_000_000_000,
                        _ => 3_600_000_000_000,
                    };
                    n.checked_mul(unit)
                        .map(Value::Int)
                        .ok_or_else(|| self.error(at, "duration too large"))
                }
                _ => Err(self.error(at, format!("px.{name} needs a whole number"))),
            },
            "floor" => match args.take(0, "x") {
                Some(Value::Column(x)) => Ok(Value::Column(
                    datafusion::functions::math::expr_fn::floor(x),
                )),
                Some(Value::Float(x)) => Ok(Value::Float(x.floor())),
                Some(Value::Int(x)) => Ok(Value::Int(x)),
                _ => Err(self.error(at, "px.floor needs a number or a numeric column")),
            },
            "GetTables" | "GetSchemas" => self.catalog_table(at, name),
            "GetAgentStatus" => self.agent_status(at),
            "GetTracepointStatus" => self.tracepoint_status(at),
            "GetUDFList" | "GetUDAList" => self.function_list(at, name),
            "GetUDTFList" => self.table_function_list(at),
            "sql" => match args.take(0, "query") {
                Some(Value::Str(query)) => {
                    let functions = vec![
                        crate::functions::UpidToPid::udf(),
                        crate::functions::Pluck::udf(crate::functions::PluckKind::Float64),
                    ];
                    crate::sql::plan(&query, self.catalog, functions)
                        .map(Value::DataFrame)
                        .map_err(|e| self.error(at, format!("px.sql: {}", e.strip_backtrace())))
                }
                _ => Err(self.error(at, "px.sql needs the query as a string")),
            },
            "contains" => match (args.take(0, "s"), args.take(1, "substr")) {
                (Some(Value::Column(s)), Some(Value::Str(sub))) => {
                    let pattern = format!(
                        "%{}%",
                        sub.replace('\\', "\\\\")
                            .replace('%', "\\%")
                            .replace('_', "\\_")
                    );
                    Ok(Value::Column(s.like(lit(pattern))))
                }
                _ => Err(self.error(at, "px.contains needs a string column and a string")),
            },
            // Pixie's regular expressions (RE2) match the whole string.
            "regex_match" => match (args.take(0, "pattern"), args.take(1, "value")) {
                (Some(Value::Str(pattern)), Some(value)) => {
                    let value = self.to_expr(at, value)?;
                    Ok(Value::Column(regexp_like(value, lit(format!("^(?:{pattern})$")), None)))
                }
                _ => Err(self.error(at, "px.regex_match needs a pattern and a string column, e.g. px.regex_match('.*-web', df.pod)")),
            },
            "replace" => match (args.take(0, "pattern"), args.take(1, "value"), args.take(2, "substitution")) {
                (Some(Value::Str(pattern)), Some(value), Some(Value::Str(substitution))) => {
                    let value = self.to_expr(at, value)?;
                    Ok(Value::Column(regexp_replace(value, lit(pattern), lit(substitution), Some(lit("g")))))
                }
                _ => Err(self.error(at, "px.replace needs a pattern, a string column and a substitution, e.g. px.replace('[0-9]+', df.req_path, 'N')")),
            },
            // Positions count from 0, as in Pixie; `find` is -1 when absent.
            "find" => match (args.take(0, "value"), args.take(1, "substr")) {
                (Some(value), Some(sub)) => {
                    let (value, sub) = (self.to_expr(at, value)?, self.to_expr(at, sub)?);
                    Ok(Value::Column(datafusion::logical_expr::cast(strpos(value, sub), DataType::Int64) - lit(1_i64)))
                }
                _ => Err(self.error(at, "px.find needs a string column and the string to find")),
            },
            "substring" => match (args.take(0, "value"), args.take(1, "pos"), args.take(2, "length")) {
                (Some(value), Some(pos), Some(length)) => {
                    let value = self.to_expr(at, value)?;
                    let pos = self.to_expr(at, pos)? + lit(1_i64);
                    let length = self.to_expr(at, length)?;
                    Ok(Value::Column(substring(value, pos, length)))
                }
                _ => Err(self.error(at, "px.substring needs a string column, a position (from 0) and a length")),
            },
            "length" => match args.take(0, "value") {
                Some(value) => Ok(Value::Column(datafusion::logical_expr::cast(
                    octet_length(self.to_expr(at, value)?),
                    DataType::Int64,
                ))),
                None => Err(self.error(at, "px.length needs a string column")),
            },
            "split" => match (args.take(0, "value"), args.take(1, "delimiter")) {
                (Some(value), Some(delimiter)) => {
                    let (value, delimiter) = (self.to_expr(at, value)?, self.to_expr(at, delimiter)?);
                    Ok(Value::Column(crate::functions::Split::udf().call(vec![value, delimiter])))
                }
                _ => Err(self.error(at, "px.split needs a string column and a delimiter; it makes a JSON list")),
            },
            "pluck_array" => match (args.take(0, "json"), args.take(1, "index")) {
                (Some(json), Some(index)) => {
                    let (json, index) = (self.to_expr(at, json)?, self.to_expr(at, index)?);
                    Ok(Value::Column(crate::functions::Pluck::udf(crate::functions::PluckKind::ArrayElement).call(vec![json, index])))
                }
                _ => Err(self.error(at, "px.pluck_array needs a JSON list column and an index, e.g. px.pluck_array(px.split(df.addr, ':'), 0)")),
            },
            // A link to another script for Pixie's UI: the label, the script and its
            // arguments as JSON, which clients that know no links show as text.
            "script_reference" => {
                let (label, script) = (args.take(0, "label"), args.take(1, "script"));
                let (Some(label), Some(Value::Str(script))) = (label, script) else {
                    return Err(self.error(
                        at,
                        "px.script_reference needs a label and a script name, e.g. px.script_reference(df.pod, 'px/pod', {'pod': df.pod})",
                    ));
                };
                let mut parts = vec![self.to_expr(at, label)?, lit(script)];
                match args.take(2, "args") {
                    None => {}
                    Some(Value::Dict(entries)) => {
                        for (key, value) in entries {
                            parts.push(lit(key));
                            parts.push(self.to_expr(at, value)?);
                        }
                    }
                    Some(other) => {
                        return Err(self.error(
                            at,
                            format!("px.script_reference's arguments are a dict, not {}", other.kind()),
                        ));
                    }
                }
                Ok(Value::Column(crate::functions::ScriptReference::udf().call(parts)))
            }
            "upid_to_asid" => match args.take(0, "upid") {
                Some(Value::Column(upid)) => Ok(Value::Column(
                    crate::metadata::UpidToAsid::udf().call(vec![upid]),
                )),
                _ => Err(self.error(at, "px.upid_to_asid needs a UPID column")),
            },
            "has_service_name" => match (args.take(0, "service"), args.take(1, "name")) {
                (Some(services), Some(name)) => {
                    let (services, name) = (self.to_expr(at, services)?, self.to_expr(at, name)?);
                    Ok(Value::Column(
                        crate::metadata::HasServiceName::udf().call(vec![services, name]),
                    ))
                }
                _ => Err(self.error(at, "px.has_service_name needs a service column and a name")),
            },
            "builtin_str" | "builtin_int" | "builtin_float" | "builtin_bool" => {
                let value = args
                    .take(0, "x")
                    .ok_or_else(|| self.error(at, format!("{} needs one argument", &name[8..])))?;
                let target = match name {
                    "builtin_str" => datafusion::arrow::datatypes::DataType::Utf8,
                    "builtin_int" => datafusion::arrow::datatypes::DataType::Int64,
                    "builtin_float" => datafusion::arrow::datatypes::DataType::Float64,
                    _ => datafusion::arrow::datatypes::DataType::Boolean,
                };
                match (name, value) {
                    ("builtin_str", Value::Int(i)) => Ok(Value::Str(i.to_string())),
                    ("builtin_str", Value::Float(f)) => Ok(Value::Str(f.to_string())),
                    ("builtin_str", Value::Str(s)) => Ok(Value::Str(s)),
                    ("builtin_int", Value::Float(f)) => Ok(Value::Int(f as i64)),
                    ("builtin_float", Value::Int(i)) => Ok(Value::Float(i as f64)),
                    (_, value) => Ok(Value::Column(datafusion::logical_expr::cast(
                        self.to_expr(at, value)?,
                        target,
                    ))),
                }
            }
            name if crate::metadata::is_metadata_function(name) => {
                let arg = args
                    .take(0, "value")
                    .ok_or_else(|| self.error(at, format!("px.{name} needs one argument")))?;
                let arg = self.to_expr(at, arg)?;
                let function = crate::metadata::MetadataFunction::udf(name, self.metadata())
                    .ok_or_else(|| self.error(at, format!("px.{name} cannot be called here")))?;
                Ok(Value::Column(function.call(vec![arg])))
            }
            _ => Err(self.error(at, format!("px.{name} cannot be called here"))),
        }
    }
}

/// Functions of the `px` module this compiler knows.
pub(super) const PX_FUNCTIONS: &[&str] = &[
    "DataFrame",
    "display",
    "now",
    "vizier_name",
    "vizier_namespace",
    "parse_duration",
    "parse_time",
    "format_duration",
    "DurationNanos",
    "Percent",
    "Bytes",
    "select",
    "contains",
    "floor",
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "any",
    "upid_to_pid",
    "bin",
    "seconds",
    "minutes",
    "hours",
    "milliseconds",
    "GetTables",
    "GetSchemas",
    "GetAgentStatus",
    "GetTracepointStatus",
    "GetUDFList",
    "GetUDAList",
    "GetUDTFList",
    "sql",
    "quantiles",
    "pluck_float64",
    "pluck",
    "pluck_int64",
    "script_reference",
    "regex_match",
    "replace",
    "find",
    "substring",
    "length",
    "split",
    "pluck_array",
    // Argument types of Pixie's scripts (annotations, `px.Pod = str`).
    "Pod",
    "Node",
    "Service",
    "Namespace",
    "Container",
];

/// `px.bin`: rounds down to a multiple of `size`; times stay times.
pub(super) fn bin(column: Expr, size: i64) -> Expr {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    use datafusion::logical_expr::cast;
    let is_time = matches!(&column, Expr::Column(c) if c.name == TIME_COLUMN);
    if is_time {
        let ns = cast(column, DataType::Int64);
        cast(
            ns.clone() - ns % lit(size),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
        )
    } else {
        column.clone() - column % lit(size)
    }
}
