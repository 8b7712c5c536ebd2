//! Walks a parsed script statement by statement, evaluating expressions to [`Value`]s
//! and building DataFusion plans for dataframes.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{Column, ScalarValue};
use datafusion::functions_aggregate::expr_fn::{approx_percentile_cont, avg, count, max, min, sum};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, lit, when};
use rustpython_parser::ast::{self, Ranged};
use rustpython_parser::{Mode, parse};

use crate::error::CompileError;
use crate::time::parse_duration_ns;
use crate::value::Value;
use crate::{CompileOptions, Output, Script, TableCatalog};

/// Scripts larger than this are refused before parsing.
const MAX_SOURCE_BYTES: usize = 1 << 20;
/// Expressions nested deeper than this are refused (the compiler recurses on them).
const MAX_DEPTH: usize = 256;
/// Name of the time column every Pixie table has.
const TIME_COLUMN: &str = "time_";

type Result<T> = std::result::Result<T, CompileError>;

pub(crate) struct Compiler<'a> {
    source: std::borrow::Cow<'a, str>,
    catalog: &'a dyn TableCatalog,
    options: &'a CompileOptions,
    vars: HashMap<String, Value>,
    functions: HashMap<String, ast::StmtFunctionDef>,
    outputs: Vec<Output>,
    /// The value of the `return` just executed, while a function body runs.
    returned: Option<Value>,
    depth: usize,
}

impl<'a> Compiler<'a> {
    pub(crate) fn new(
        source: &'a str,
        catalog: &'a dyn TableCatalog,
        options: &'a CompileOptions,
    ) -> Self {
        Self {
            source: std::borrow::Cow::Borrowed(source),
            catalog,
            options,
            vars: HashMap::new(),
            functions: HashMap::new(),
            outputs: Vec::new(),
            returned: None,
            depth: 0,
        }
    }

    pub(crate) fn compile(mut self) -> Result<Script> {
        if self.source.len() > MAX_SOURCE_BYTES {
            return Err(CompileError {
                line: 1,
                column: 1,
                message: format!(
                    "the script is {} bytes; scripts are limited to {MAX_SOURCE_BYTES} bytes",
                    self.source.len()
                ),
            });
        }
        let max_rows = self.max_output_rows()?;
        let (patched, parsed) = parse_with_line_break_commas(&self.source);
        if let Some(patched) = patched {
            self.source = std::borrow::Cow::Owned(patched);
        }
        let module = parsed.map_err(|e| {
            let offset = u32::from(e.offset) as usize;
            self.error_at(offset, format!("syntax error: {}", e.error))
        })?;
        let ast::Mod::Module(module) = module else {
            return Err(self.error_at(0, "expected a module".into()));
        };
        for statement in &module.body {
            self.statement(statement)?;
        }
        if !self.options.exec_funcs.is_empty() {
            // Run as functions, the script's own displays are not outputs (as in Pixie).
            self.outputs.clear();
            for call in &self.options.exec_funcs {
                self.exec_func(call)?;
            }
        }
        let outputs = std::mem::take(&mut self.outputs)
            .into_iter()
            .map(|o| {
                let plan = LogicalPlanBuilder::from(o.plan)
                    .limit(0, Some(max_rows))
                    .and_then(LogicalPlanBuilder::build)
                    .map_err(|e| self.error_at(0, format!("internal planning error: {e}")))?;
                Ok(Output { name: o.name, plan })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Script { outputs })
    }

    /// `#px:set max_output_rows_per_table=N` lines.
    fn max_output_rows(&self) -> Result<usize> {
        let mut max = self.options.max_output_rows;
        for (i, line) in self.source.lines().enumerate() {
            let Some(setting) = line.trim().strip_prefix("#px:set") else {
                continue;
            };
            let Some((key, value)) = setting.trim().split_once('=') else {
                continue;
            };
            if key.trim() == "max_output_rows_per_table" {
                max = value.trim().parse().map_err(|_| CompileError {
                    line: i as u64 + 1,
                    column: 1,
                    message: format!(
                        "max_output_rows_per_table must be a whole number, not {:?}",
                        value.trim()
                    ),
                })?;
            }
        }
        Ok(max)
    }

    fn error_at(&self, offset: usize, message: String) -> CompileError {
        let before = &self.source.as_bytes()[..offset.min(self.source.len())];
        let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count() as u64
            + 1;
        CompileError {
            line,
            column,
            message,
        }
    }

    fn error(&self, node: &impl Ranged, message: impl Into<String>) -> CompileError {
        self.error_at(u32::from(node.start()) as usize, message.into())
    }

    // ---- statements ----

    fn statement(&mut self, statement: &ast::Stmt) -> Result<()> {
        match statement {
            ast::Stmt::Import(import) => {
                for alias in &import.names {
                    if alias.name.as_str() != "px" {
                        return Err(self.error(
                            statement,
                            format!("cannot import {}: PxL scripts import only px", alias.name),
                        ));
                    }
                    let name = alias.asname.as_ref().unwrap_or(&alias.name);
                    self.vars.insert(name.to_string(), Value::PxModule);
                }
                Ok(())
            }
            ast::Stmt::Assign(assign) => {
                let value = self.eval(&assign.value)?;
                for target in &assign.targets {
                    self.assign(target, value.clone())?;
                }
                Ok(())
            }
            ast::Stmt::Expr(expr) => self.eval(&expr.value).map(drop),
            ast::Stmt::FunctionDef(def) => {
                self.functions.insert(def.name.to_string(), def.clone());
                Ok(())
            }
            ast::Stmt::Return(ret) => {
                if self.depth == 0 {
                    return Err(self.error(statement, "'return' outside a function"));
                }
                let value = match &ret.value {
                    Some(value) => self.eval(value)?,
                    None => Value::None,
                };
                self.returned = Some(value);
                Ok(())
            }
            _ => Err(self.error(statement, "this kind of statement is not supported in PxL")),
        }
    }

    fn assign(&mut self, target: &ast::Expr, value: Value) -> Result<()> {
        match target {
            ast::Expr::Name(name) => {
                self.vars.insert(name.id.to_string(), value);
                Ok(())
            }
            // df.col = expr and df['col'] = expr add or replace a column.
            // `px.Pod = str`: Pixie's scripts name their argument types; nothing to do.
            ast::Expr::Attribute(ast::ExprAttribute { value: module, .. })
                if matches!(module.as_ref(), ast::Expr::Name(n)
                    if matches!(self.vars.get(n.id.as_str()), Some(Value::PxModule))) =>
            {
                Ok(())
            }
            ast::Expr::Attribute(ast::ExprAttribute {
                value: df, attr, ..
            }) => self.assign_column(target, df, attr.as_str(), value),
            ast::Expr::Subscript(ast::ExprSubscript {
                value: df, slice, ..
            }) => {
                // The name may be any expression that makes a string: df[name] = ...
                let Value::Str(column) = self.eval(slice)? else {
                    return Err(self.error(slice.as_ref(), "a column name must be a string"));
                };
                self.assign_column(target, df, &column, value)
            }
            _ => Err(self.error(target, "cannot assign to this")),
        }
    }

    fn assign_column(
        &mut self,
        target: &ast::Expr,
        df: &ast::Expr,
        column: &str,
        value: Value,
    ) -> Result<()> {
        let ast::Expr::Name(name) = df else {
            return Err(self.error(df, "assign columns to a DataFrame variable"));
        };
        let Some(Value::DataFrame(plan)) = self.vars.get(name.id.as_str()) else {
            return Err(self.error(df, format!("{} is not a DataFrame", name.id)));
        };
        let expr = self.to_expr(target, value)?.alias(column);
        let mut exprs: Vec<Expr> = plan
            .schema()
            .iter()
            .filter(|(_, field)| field.name() != column)
            .map(|(qualifier, field)| Expr::Column(Column::new(qualifier.cloned(), field.name())))
            .collect();
        exprs.push(expr);
        let plan = self.plan(
            target,
            LogicalPlanBuilder::from(plan.clone()).project(exprs),
        )?;
        self.vars
            .insert(name.id.to_string(), Value::DataFrame(plan));
        Ok(())
    }

    // ---- expressions ----

    fn eval(&mut self, expr: &ast::Expr) -> Result<Value> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(
                expr,
                format!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        self.depth += 1;
        let value = self.eval_inner(expr);
        self.depth -= 1;
        value
    }

    fn eval_inner(&mut self, expr: &ast::Expr) -> Result<Value> {
        match expr {
            ast::Expr::Constant(c) => self.constant(expr, &c.value),
            ast::Expr::Name(name) => match self.vars.get(name.id.as_str()) {
                Some(value) => Ok(value.clone()),
                None if self.functions.contains_key(name.id.as_str()) => {
                    Ok(Value::UserFunction(name.id.to_string()))
                }
                // Python's type names, as Pixie's scripts use them in annotations, type
                // aliases (`px.Pod = str`) and conversions (`str(x)`).
                None if ["str", "int", "float", "bool"].contains(&name.id.as_str()) => {
                    Ok(Value::PxFunction(format!("builtin_{}", name.id)))
                }
                None => Err(self.error(expr, format!("name '{}' is not defined", name.id))),
            },
            ast::Expr::List(list) => Ok(Value::List(
                list.elts
                    .iter()
                    .map(|e| self.eval(e))
                    .collect::<Result<_>>()?,
            )),
            ast::Expr::Dict(dict) => self.dict(expr, dict),
            ast::Expr::Tuple(tuple) => Ok(Value::List(
                tuple
                    .elts
                    .iter()
                    .map(|e| self.eval(e))
                    .collect::<Result<_>>()?,
            )),
            ast::Expr::Attribute(attribute) => self.attribute(expr, attribute),
            ast::Expr::Subscript(subscript) => self.subscript(expr, subscript),
            ast::Expr::Call(call) => self.call(expr, call),
            ast::Expr::Compare(compare) => self.compare(expr, compare),
            ast::Expr::BinOp(op) => self.binary(expr, op),
            ast::Expr::BoolOp(op) => self.boolean(expr, op),
            ast::Expr::UnaryOp(op) => self.unary(expr, op),
            _ => Err(self.error(expr, "this kind of expression is not supported in PxL")),
        }
    }

    // Its own function, so the frame of the recursive `eval_inner` stays small.
    #[inline(never)]
    fn dict(&mut self, at: &ast::Expr, dict: &ast::ExprDict) -> Result<Value> {
        let mut entries = Vec::with_capacity(dict.values.len());
        for (key, value) in dict.keys.iter().zip(&dict.values) {
            let Some(Value::Str(key)) = key.as_ref().map(|k| self.eval(k)).transpose()? else {
                return Err(self.error(at, "dict keys are strings in PxL"));
            };
            entries.push((key, self.eval(value)?));
        }
        Ok(Value::Dict(entries))
    }

    fn constant(&self, at: &ast::Expr, constant: &ast::Constant) -> Result<Value> {
        Ok(match constant {
            ast::Constant::None => Value::None,
            ast::Constant::Bool(b) => Value::Bool(*b),
            ast::Constant::Str(s) => Value::Str(s.clone()),
            ast::Constant::Int(i) => Value::Int(
                i.to_string()
                    .parse()
                    .map_err(|_| self.error(at, "integer does not fit in 64 bits"))?,
            ),
            ast::Constant::Float(f) => Value::Float(*f),
            _ => return Err(self.error(at, "this kind of constant is not supported in PxL")),
        })
    }

    fn attribute(&mut self, at: &ast::Expr, attribute: &ast::ExprAttribute) -> Result<Value> {
        let name = attribute.attr.as_str();
        match self.eval(&attribute.value)? {
            Value::PxModule => {
                if PX_FUNCTIONS.contains(&name)
                    || crate::metadata::METADATA_FUNCTIONS.contains(&name)
                    || ["upid_to_asid", "has_service_name"].contains(&name)
                {
                    Ok(Value::PxFunction(name.to_owned()))
                } else {
                    Err(self.error(at, format!("px has no function '{name}'")))
                }
            }
            Value::DataFrame(plan) if DATAFRAME_METHODS.contains(&name) => {
                Ok(Value::Method(plan, name.to_owned()))
            }
            Value::DataFrame(plan) if name == "ctx" => Ok(Value::Context(plan)),
            Value::DataFrame(plan) => self.column(at, &plan, name),
            Value::GroupBy(plan, keys) if name == "agg" => Ok(Value::GroupByAgg(plan, keys)),
            other => Err(self.error(at, format!("{} has no attribute '{name}'", other.kind()))),
        }
    }

    fn column(&self, at: &ast::Expr, plan: &LogicalPlan, name: &str) -> Result<Value> {
        if plan.schema().has_column_with_unqualified_name(name) {
            return Ok(Value::Column(Expr::Column(Column::from_name(name))));
        }
        let columns: Vec<&str> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        Err(self.error(
            at,
            format!(
                "column '{name}' not found; the DataFrame has {}",
                columns.join(", ")
            ),
        ))
    }

    fn subscript(&mut self, at: &ast::Expr, subscript: &ast::ExprSubscript) -> Result<Value> {
        let plan = match self.eval(&subscript.value)? {
            Value::DataFrame(plan) => plan,
            Value::Context(plan) => return self.context(at, &plan, &subscript.slice),
            _ => return Err(self.error(at, "only DataFrames can be indexed")),
        };
        match self.eval(&subscript.slice)? {
            Value::Str(name) => self.column(at, &plan, &name),
            Value::List(names) => {
                let columns = self.column_names(at, &plan, names)?;
                let exprs = columns.iter().map(|c| Expr::Column(Column::from_name(c)));
                self.plan(at, LogicalPlanBuilder::from(plan).project(exprs))
                    .map(Value::DataFrame)
            }
            Value::Column(predicate) => self
                .plan(at, LogicalPlanBuilder::from(plan).filter(predicate))
                .map(Value::DataFrame),
            other => Err(self.error(
                at,
                format!("a DataFrame is indexed by a column name, a list of names or a condition, not {}", other.kind()),
            )),
        }
    }

    /// `df.ctx['key']`: what this host can tell about a row's process. Kubernetes keys
    /// (pod, service, namespace, ...) are empty until cluster metadata is available.
    fn context(&mut self, at: &ast::Expr, plan: &LogicalPlan, key: &ast::Expr) -> Result<Value> {
        let Value::Str(key) = self.eval(key)? else {
            return Err(self.error(at, "df.ctx is indexed by a name, e.g. df.ctx['pid']"));
        };
        let upid = || -> Result<Expr> {
            match self.column(at, plan, "upid")? {
                Value::Column(upid) => Ok(upid),
                _ => Err(self.error(at, "df.ctx needs a upid column")),
            }
        };
        let lookup = self.metadata();
        Ok(Value::Column(match key.as_str() {
            "pid" => crate::functions::UpidToPid::udf().call(vec![upid()?]),
            "upid" => upid()?,
            "asid" => crate::metadata::UpidToAsid::udf().call(vec![upid()?]),
            "hostname" | "host" | "node_name" | "node" if self.options.metadata.is_none() => {
                lit(self.options.hostname.clone())
            }
            key => match crate::metadata::context_function(key)
                .and_then(|f| crate::metadata::MetadataFunction::udf(f, lookup))
            {
                Some(function) => function.call(vec![upid()?]),
                None => return Err(self.error(at, format!("df.ctx has no key '{key}'"))),
            },
        }))
    }

    /// Where metadata functions find their answers.
    fn metadata(&self) -> Arc<dyn crate::MetadataLookup> {
        self.options
            .metadata
            .clone()
            .unwrap_or_else(|| Arc::new(crate::metadata::NoMetadata))
    }

    fn column_names(
        &self,
        at: &ast::Expr,
        plan: &LogicalPlan,
        names: Vec<Value>,
    ) -> Result<Vec<String>> {
        names
            .into_iter()
            .map(|v| match v {
                Value::Str(name) => self.column(at, plan, &name).map(|_| name),
                other => Err(self.error(
                    at,
                    format!("column names are strings, not {}", other.kind()),
                )),
            })
            .collect()
    }

    fn plan(
        &self,
        at: &impl Ranged,
        built: datafusion::common::Result<LogicalPlanBuilder>,
    ) -> Result<LogicalPlan> {
        built
            .and_then(LogicalPlanBuilder::build)
            .map_err(|e| self.error(at, e.strip_backtrace()))
    }

    // ---- calls ----

    fn call(&mut self, at: &ast::Expr, call: &ast::ExprCall) -> Result<Value> {
        let callee = self.eval(&call.func)?;
        let args = call
            .args
            .iter()
            .map(|a| self.eval(a))
            .collect::<Result<Vec<_>>>()?;
        let mut kwargs = Vec::with_capacity(call.keywords.len());
        for keyword in &call.keywords {
            let Some(name) = &keyword.arg else {
                return Err(self.error(at, "**kwargs are not supported in PxL"));
            };
            kwargs.push((name.to_string(), self.eval(&keyword.value)?));
        }
        let args = Args {
            positional: args,
            keywords: kwargs,
        };
        match callee {
            Value::PxFunction(name) => self.px_call(at, &name, args),
            Value::Method(plan, name) => self.method(at, plan, &name, args),
            Value::GroupByAgg(plan, keys) => self.aggregate(at, plan, &keys, args),
            Value::UserFunction(name) => self.call_user(at, &name, args),
            other => Err(self.error(at, format!("{} cannot be called", other.kind()))),
        }
    }

    fn px_call(&mut self, at: &ast::Expr, name: &str, mut args: Args) -> Result<Value> {
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

    /// Calls a function of the script: its parameters are bound in a scope of their own
    /// (over the script's globals), and its `return` value is the result.
    fn call_user(&mut self, at: &impl Ranged, name: &str, mut args: Args) -> Result<Value> {
        let Some(def) = self.functions.get(name).cloned() else {
            return Err(self.error(at, format!("function '{name}' is not defined")));
        };
        if self.depth >= MAX_DEPTH {
            return Err(self.error(at, "functions call each other too deeply"));
        }
        let mut scope = self.vars.clone();
        for (i, param) in def.args.args.iter().enumerate() {
            let param_name = param.def.arg.as_str();
            let value = match args.take(i, param_name) {
                Some(value) => value,
                None => match &param.default {
                    Some(default) => self.eval(default)?,
                    None => {
                        return Err(
                            self.error(at, format!("{name}() is missing argument '{param_name}'"))
                        );
                    }
                },
            };
            scope.insert(param_name.to_owned(), value);
        }
        let saved = std::mem::replace(&mut self.vars, scope);
        self.depth += 1;
        let mut result = Ok(());
        for statement in &def.body {
            result = self.statement(statement);
            if result.is_err() || self.returned.is_some() {
                break;
            }
        }
        self.depth -= 1;
        self.vars = saved;
        let returned = self.returned.take();
        result.map(|()| returned.unwrap_or(Value::None))
    }

    /// One of `exec_funcs`: string arguments parsed to the parameters' annotated types,
    /// the returned DataFrame(s) become outputs.
    fn exec_func(&mut self, call: &crate::FuncCall) -> Result<()> {
        let Some(def) = self.functions.get(&call.name).cloned() else {
            return Err(CompileError {
                line: 1,
                column: 1,
                message: format!("function '{}' not found in the script", call.name),
            });
        };
        let mut keywords = Vec::with_capacity(call.args.len());
        for (arg, text) in &call.args {
            let Some(param) = def.args.args.iter().find(|p| p.def.arg.as_str() == arg) else {
                return Err(self.error(&def, format!("{}() has no parameter '{arg}'", call.name)));
            };
            let annotation = param
                .def
                .annotation
                .as_deref()
                .map(annotation_name)
                .unwrap_or_default();
            let value = match annotation.as_str() {
                "int" => text.parse().map(Value::Int).map_err(|_| {
                    self.error(
                        &param.def,
                        format!("argument '{arg}' must be an integer, not {text:?}"),
                    )
                })?,
                "float" => text.parse().map(Value::Float).map_err(|_| {
                    self.error(
                        &param.def,
                        format!("argument '{arg}' must be a number, not {text:?}"),
                    )
                })?,
                "bool" => match text.to_ascii_lowercase().as_str() {
                    "true" | "1" => Value::Bool(true),
                    "false" | "0" => Value::Bool(false),
                    _ => {
                        return Err(self.error(
                            &param.def,
                            format!("argument '{arg}' must be true or false, not {text:?}"),
                        ));
                    }
                },
                _ => Value::Str(text.clone()),
            };
            keywords.push((arg.clone(), value));
        }
        let result = self.call_user(
            &def,
            &call.name,
            Args {
                positional: Vec::new(),
                keywords,
            },
        )?;
        let prefix = if call.output_prefix.is_empty() {
            call.name.clone()
        } else {
            call.output_prefix.clone()
        };
        match result {
            Value::DataFrame(plan) => self.outputs.push(Output { name: prefix, plan }),
            Value::List(values) => {
                for (i, value) in values.into_iter().enumerate() {
                    let Value::DataFrame(plan) = value else {
                        return Err(
                            self.error(&def, format!("{}() must return DataFrames", call.name))
                        );
                    };
                    self.outputs.push(Output {
                        name: format!("{prefix}[{i}]"),
                        plan,
                    });
                }
            }
            other => {
                return Err(self.error(
                    &def,
                    format!("{}() returned {}, not a DataFrame", call.name, other.kind()),
                ));
            }
        }
        Ok(())
    }

    /// `px.GetAgentStatus()`: the agents answering queries, with Pixie's columns.
    fn agent_status(&self, at: &ast::Expr) -> Result<Value> {
        use datafusion::arrow::array::{
            ArrayRef, FixedSizeBinaryArray, Int64Array, StringArray, TimestampNanosecondArray,
        };
        use datafusion::arrow::datatypes::{DataType, TimeUnit};

        let agents = self.catalog.agents();
        let ids =
            FixedSizeBinaryArray::try_from_iter(agents.iter().map(|a| a.agent_id.to_be_bytes()))
                .unwrap_or_else(|_| FixedSizeBinaryArray::new_null(16, 0));
        let text = |f: fn(&crate::AgentInfo) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(agents.iter().map(f)))
        };
        let columns: Vec<(&str, DataType, &str, ArrayRef)> = vec![
            (
                "agent_id",
                DataType::FixedSizeBinary(16),
                "UINT128",
                Arc::new(ids),
            ),
            (
                "asid",
                DataType::Int64,
                "INT64",
                Arc::new(Int64Array::from_iter_values(agents.iter().map(|a| a.asid))),
            ),
            ("hostname", DataType::Utf8, "STRING", text(|a| &a.hostname)),
            (
                "ip_address",
                DataType::Utf8,
                "STRING",
                text(|a| &a.ip_address),
            ),
            (
                "agent_state",
                DataType::Utf8,
                "STRING",
                text(|a| &a.agent_state),
            ),
            (
                "create_time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                "TIME64NS",
                Arc::new(TimestampNanosecondArray::from_iter_values(
                    agents.iter().map(|a| a.create_time_ns),
                )),
            ),
            (
                "last_heartbeat_ns",
                DataType::Int64,
                "INT64",
                Arc::new(Int64Array::from_iter_values(
                    agents.iter().map(|a| a.last_heartbeat_ns),
                )),
            ),
            // The PEM's programs are compiled ahead of time: no node needs kernel
            // headers, so none lacks what this column asks about.
            (
                "kernel_headers_installed",
                DataType::Boolean,
                "BOOLEAN",
                Arc::new(datafusion::arrow::array::BooleanArray::from(vec![
                    true;
                    agents
                        .len()
                ])),
            ),
        ];
        self.memory_table(at, "GetAgentStatus", columns)
    }

    /// `px.GetTracepointStatus()`: the dynamic probes and their states, Pixie's columns.
    fn tracepoint_status(&self, at: &ast::Expr) -> Result<Value> {
        use datafusion::arrow::array::{ArrayRef, FixedSizeBinaryArray, StringArray};
        use datafusion::arrow::datatypes::DataType;

        let tracepoints = self.catalog.tracepoints();
        let ids = FixedSizeBinaryArray::try_from_iter(
            tracepoints.iter().map(|t| t.tracepoint_id.to_be_bytes()),
        )
        .unwrap_or_else(|_| FixedSizeBinaryArray::new_null(16, 0));
        let text = |f: fn(&crate::TracepointInfo) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(tracepoints.iter().map(f)))
        };
        let columns: Vec<(&str, DataType, &str, ArrayRef)> = vec![
            (
                "tracepoint_id",
                DataType::FixedSizeBinary(16),
                "UINT128",
                Arc::new(ids),
            ),
            ("name", DataType::Utf8, "STRING", text(|t| &t.name)),
            ("state", DataType::Utf8, "STRING", text(|t| &t.state)),
            ("status", DataType::Utf8, "STRING", text(|t| &t.status)),
            (
                "output_tables",
                DataType::Utf8,
                "STRING",
                text(|t| &t.output_tables),
            ),
        ];
        self.memory_table(at, "GetTracepointStatus", columns)
    }

    /// A DataFrame over columns built here, each typed for Pixie with `px.data_type`.
    fn memory_table(
        &self,
        at: &ast::Expr,
        name: &str,
        columns: Vec<(
            &str,
            datafusion::arrow::datatypes::DataType,
            &str,
            datafusion::arrow::array::ArrayRef,
        )>,
    ) -> Result<Value> {
        use datafusion::arrow::datatypes::{Field, Schema};
        use datafusion::arrow::record_batch::RecordBatch;

        let internal = |e: datafusion::error::DataFusionError| {
            self.error(at, format!("internal error: {}", e.strip_backtrace()))
        };
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, t, px, _)| {
                Field::new(*n, t.clone(), false).with_metadata(HashMap::from([(
                    "px.data_type".to_owned(),
                    (*px).to_owned(),
                )]))
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let arrays = columns.into_iter().map(|(_, _, _, a)| a).collect();
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), arrays).map_err(|e| internal(e.into()))?;
        let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])
            .map_err(internal)?;
        let source = datafusion::datasource::provider_as_source(Arc::new(table));
        self.plan(at, LogicalPlanBuilder::scan(name, source, None))
            .map(Value::DataFrame)
    }

    /// `px.GetTables()` and `px.GetSchemas()`: the catalog as a table.
    fn catalog_table(&self, at: &ast::Expr, name: &str) -> Result<Value> {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::datatypes::{Field, Schema};
        use datafusion::arrow::record_batch::RecordBatch;

        let mut columns: Vec<Vec<String>> = Vec::new();
        let names: &[&str] = if name == "GetTables" {
            &["table_name", "table_desc"]
        } else {
            &[
                "table_name",
                "column_name",
                "column_type",
                "pattern_type",
                "column_desc",
            ]
        };
        columns.resize(names.len(), Vec::new());
        let mut tables = self.catalog.table_names();
        tables.sort();
        for table in tables {
            let Some(source) = self.catalog.table(&table) else {
                continue;
            };
            let schema = source.schema();
            let meta = |m: &std::collections::HashMap<String, String>, key: &str| {
                m.get(key).cloned().unwrap_or_default()
            };
            if name == "GetTables" {
                columns[0].push(table.clone());
                columns[1].push(meta(schema.metadata(), "px.desc"));
                continue;
            }
            for field in schema.fields() {
                let row = [
                    table.clone(),
                    field.name().clone(),
                    meta(field.metadata(), "px.data_type"),
                    "GENERAL".to_owned(),
                    meta(field.metadata(), "px.desc"),
                ];
                for (column, value) in columns.iter_mut().zip(row) {
                    column.push(value);
                }
            }
        }
        let schema = Arc::new(Schema::new(
            names
                .iter()
                .map(|n| Field::new(*n, datafusion::arrow::datatypes::DataType::Utf8, false))
                .collect::<Vec<_>>(),
        ));
        let arrays = columns
            .into_iter()
            .map(|c| Arc::new(StringArray::from(c)) as datafusion::arrow::array::ArrayRef)
            .collect();
        let internal = |e: datafusion::error::DataFusionError| {
            self.error(at, format!("internal error: {}", e.strip_backtrace()))
        };
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), arrays).map_err(|e| internal(e.into()))?;
        let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])
            .map_err(internal)?;
        let source = datafusion::datasource::provider_as_source(Arc::new(table));
        self.plan(at, LogicalPlanBuilder::scan(name, source, None))
            .map(Value::DataFrame)
    }

    fn unique_output_name(&self, name: String) -> String {
        let taken = |n: &str| self.outputs.iter().any(|o| o.name == n);
        if !taken(&name) {
            return name;
        }
        (1..)
            .map(|i| format!("{name}_{i}"))
            .find(|n| !taken(n))
            .unwrap_or(name)
    }

    fn dataframe(&self, at: &ast::Expr, mut args: Args) -> Result<Value> {
        let Some(Value::Str(table)) = args.take(0, "table") else {
            return Err(self.error(
                at,
                "px.DataFrame needs a table name, e.g. px.DataFrame(table='http_events')",
            ));
        };
        let source = self
            .catalog
            .table(&table)
            .ok_or_else(|| self.error(at, format!("Table '{table}' not found")))?;
        let mut builder = LogicalPlanBuilder::scan(table.as_str(), source, None)
            .map_err(|e| self.error(at, e.strip_backtrace()))?;
        for (bound, is_start) in [
            (args.take(2, "start_time"), true),
            (args.take(3, "end_time"), false),
        ] {
            let Some(ns) = self.time_arg(at, bound)? else {
                continue;
            };
            let time = Expr::Column(Column::from_name(TIME_COLUMN));
            let value = lit(ScalarValue::TimestampNanosecond(Some(ns), None));
            let predicate = if is_start {
                time.gt_eq(value)
            } else {
                time.lt_eq(value)
            };
            builder = builder
                .filter(predicate)
                .map_err(|e| self.error(at, e.strip_backtrace()))?;
        }
        let plan = self.plan(at, Ok(builder))?;
        match args.take(1, "select") {
            None => Ok(Value::DataFrame(plan)),
            Some(Value::List(names)) if names.is_empty() => Ok(Value::DataFrame(plan)),
            Some(Value::List(names)) => {
                let columns = self.column_names(at, &plan, names)?;
                let exprs = columns.iter().map(|c| Expr::Column(Column::from_name(c)));
                self.plan(at, LogicalPlanBuilder::from(plan).project(exprs))
                    .map(Value::DataFrame)
            }
            Some(other) => Err(self.error(
                at,
                format!(
                    "select must be a list of column names, not {}",
                    other.kind()
                ),
            )),
        }
    }

    /// A start or end time: relative string, integer ns, px.now(), or None.
    fn time_arg(&self, at: &ast::Expr, value: Option<Value>) -> Result<Option<i64>> {
        match value {
            None | Some(Value::None) => Ok(None),
            Some(Value::Int(ns) | Value::Time(ns)) => Ok(Some(ns)),
            Some(Value::Str(text)) => parse_duration_ns(&text)
                .map(|d| Some(self.options.now_ns.saturating_add(d)))
                .ok_or_else(|| {
                    self.error(at, format!("{text:?} is not a time; write a relative time such as '-5m', '-30s' or '-2h', or nanoseconds since the epoch"))
                }),
            Some(other) => Err(self.error(at, format!("a time must be a string or an integer, not {}", other.kind()))),
        }
    }

    fn method(
        &mut self,
        at: &ast::Expr,
        plan: LogicalPlan,
        name: &str,
        mut args: Args,
    ) -> Result<Value> {
        match name {
            "head" => {
                let n = match args.take(0, "n") {
                    None => 5,
                    Some(Value::Int(n)) if n >= 0 => n as usize,
                    Some(other) => {
                        return Err(
                            self.error(at, format!("head takes a row count, not {}", other.kind()))
                        );
                    }
                };
                self.plan(at, LogicalPlanBuilder::from(plan).limit(0, Some(n)))
                    .map(Value::DataFrame)
            }
            "drop" => {
                let names = match args.take(0, "columns") {
                    Some(Value::Str(name)) => vec![Value::Str(name)],
                    Some(Value::List(names)) => names,
                    _ => return Err(self.error(at, "drop takes a column name or a list of names")),
                };
                let dropped = self.column_names(at, &plan, names)?;
                let exprs: Vec<Expr> = plan
                    .schema()
                    .iter()
                    .filter(|(_, f)| !dropped.iter().any(|d| d == f.name()))
                    .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
                    .collect();
                self.plan(at, LogicalPlanBuilder::from(plan).project(exprs))
                    .map(Value::DataFrame)
            }
            "groupby" => {
                let names = match args.take(0, "by") {
                    Some(Value::Str(name)) => vec![Value::Str(name)],
                    Some(Value::List(names)) => names,
                    _ => {
                        return Err(
                            self.error(at, "groupby takes a column name or a list of names")
                        );
                    }
                };
                let keys = self.column_names(at, &plan, names)?;
                Ok(Value::GroupBy(plan, keys))
            }
            "agg" => self.aggregate(at, plan, &[], args),
            "merge" => self.merge(at, plan, args),
            "append" => match args.take(0, "other") {
                Some(Value::DataFrame(other)) => self
                    .plan(at, LogicalPlanBuilder::from(plan).union(other))
                    .map(Value::DataFrame),
                _ => Err(self.error(at, "append takes a DataFrame with the same columns")),
            },
            _ => Err(self.error(at, format!("DataFrame.{name} is not supported yet"))),
        }
    }

    /// `left.merge(right, how='inner', left_on=[...], right_on=[...], suffixes=['_x', '_y'])`:
    /// a join on equal keys; columns both sides have get the suffixes, as in pandas.
    fn merge(&mut self, at: &ast::Expr, left: LogicalPlan, mut args: Args) -> Result<Value> {
        use datafusion::logical_expr::JoinType;
        let Some(Value::DataFrame(right)) = args.take(0, "right") else {
            return Err(self.error(at, "merge needs the DataFrame to join with"));
        };
        let how = match args.take(1, "how") {
            None => JoinType::Inner,
            Some(Value::Str(how)) => match how.as_str() {
                "inner" => JoinType::Inner,
                "left" => JoinType::Left,
                "right" => JoinType::Right,
                "outer" => JoinType::Full,
                other => {
                    return Err(self.error(
                        at,
                        format!("merge how='{other}' is not one of inner, left, right, outer"),
                    ));
                }
            },
            Some(other) => {
                return Err(self.error(
                    at,
                    format!("merge how must be a string, not {}", other.kind()),
                ));
            }
        };
        let keys = |this: &mut Self,
                    value: Option<Value>,
                    plan: &LogicalPlan,
                    side: &str|
         -> Result<Vec<String>> {
            match value {
                Some(Value::Str(name)) => this.column_names(at, plan, vec![Value::Str(name)]),
                Some(Value::List(names)) => this.column_names(at, plan, names),
                _ => Err(this.error(
                    at,
                    format!("merge needs {side}_on: a column name or a list of names"),
                )),
            }
        };
        let left_on = keys(self, args.take(2, "left_on"), &left, "left")?;
        let right_on = keys(self, args.take(3, "right_on"), &right, "right")?;
        if left_on.len() != right_on.len() {
            return Err(self.error(at, "left_on and right_on must name as many columns"));
        }
        let (suffix_x, suffix_y) = match args.take(4, "suffixes") {
            None => ("_x".to_owned(), "_y".to_owned()),
            Some(Value::List(pair)) => match pair.as_slice() {
                [Value::Str(x), Value::Str(y)] => (x.clone(), y.clone()),
                _ => return Err(self.error(at, "suffixes must be two strings")),
            },
            Some(other) => {
                return Err(
                    self.error(at, format!("suffixes must be a list, not {}", other.kind()))
                );
            }
        };
        let names = |plan: &LogicalPlan| -> Vec<String> {
            plan.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        };
        let (left_names, right_names) = (names(&left), names(&right));
        let left = self.plan(at, LogicalPlanBuilder::from(left).alias("__left"))?;
        let right = self.plan(at, LogicalPlanBuilder::from(right).alias("__right"))?;
        let left_keys: Vec<Column> = left_on
            .iter()
            .map(|k| Column::new(Some("__left"), k))
            .collect();
        let right_keys: Vec<Column> = right_on
            .iter()
            .map(|k| Column::new(Some("__right"), k))
            .collect();
        let joined = LogicalPlanBuilder::from(left)
            .join(right, how, (left_keys, right_keys), None)
            .map_err(|e| self.error(at, e.strip_backtrace()))?;
        let output = |qualifier: &str, name: &String, others: &[String], suffix: &str| {
            let column = Expr::Column(Column::new(Some(qualifier), name));
            if others.contains(name) {
                column.alias(format!("{name}{suffix}"))
            } else {
                column.alias(name)
            }
        };
        let mut exprs: Vec<Expr> = left_names
            .iter()
            .map(|n| output("__left", n, &right_names, &suffix_x))
            .collect();
        exprs.extend(
            right_names
                .iter()
                .map(|n| output("__right", n, &left_names, &suffix_y)),
        );
        self.plan(at, joined.project(exprs)).map(Value::DataFrame)
    }

    /// `groupby(keys).agg(out=(column, px.fn), ...)`; with no keys, over the whole table.
    fn aggregate(
        &mut self,
        at: &ast::Expr,
        plan: LogicalPlan,
        keys: &[String],
        args: Args,
    ) -> Result<Value> {
        if !args.positional.is_empty() {
            return Err(self.error(
                at,
                "agg takes keyword arguments: agg(name=('column', px.count))",
            ));
        }
        let mut aggregates = Vec::with_capacity(args.keywords.len());
        // What the caller sees: the keys, plain aggregates by name, quantiles built from parts.
        let mut outputs: Vec<Expr> = keys
            .iter()
            .map(|k| Expr::Column(Column::from_name(k.as_str())))
            .collect();
        for (out, spec) in args.keywords {
            let Value::List(parts) = spec else {
                return Err(self.error(at, format!("{out} must be a (column, function) pair")));
            };
            let [Value::Str(column), Value::PxFunction(function)] = parts.as_slice() else {
                return Err(self.error(
                    at,
                    format!("{out} must be a (column, function) pair such as ('latency', px.mean)"),
                ));
            };
            self.column(at, &plan, column)?;
            let mut input = Expr::Column(Column::from_name(column.as_str()));
            // Pixie sums and averages booleans as 0 and 1 (an error rate is
            // `('failure', px.mean)`), and durations as their nanoseconds.
            let input_type = plan
                .schema()
                .field_with_unqualified_name(column)
                .map(|f| f.data_type().clone())
                .ok();
            if matches!(function.as_str(), "sum" | "mean")
                && matches!(
                    input_type,
                    Some(
                        datafusion::arrow::datatypes::DataType::Boolean
                            | datafusion::arrow::datatypes::DataType::Duration(_)
                    )
                )
            {
                input = datafusion::logical_expr::cast(
                    input,
                    datafusion::arrow::datatypes::DataType::Int64,
                );
            }
            if function == "quantiles" {
                let mut parts = Vec::with_capacity(crate::functions::QUANTILES.len());
                for (name, percentile) in crate::functions::QUANTILES {
                    let part = format!("__{out}_{name}");
                    let sorted = input.clone().sort(true, false);
                    aggregates
                        .push(approx_percentile_cont(sorted, lit(percentile), None).alias(&part));
                    parts.push(datafusion::logical_expr::cast(
                        Expr::Column(Column::from_name(part)),
                        datafusion::arrow::datatypes::DataType::Float64,
                    ));
                }
                outputs.push(
                    crate::functions::QuantilesJson::udf()
                        .call(parts)
                        .alias(&out),
                );
                continue;
            }
            let aggregate = match function.as_str() {
                "count" => count(input),
                "sum" => sum(input),
                "mean" => avg(input),
                "min" => min(input),
                "max" => max(input),
                // Any value of the group: the smallest is one.
                "any" => min(input),
                other => {
                    return Err(self.error(at, format!("px.{other} is not an aggregate function")));
                }
            };
            aggregates.push(aggregate.alias(&out));
            outputs.push(Expr::Column(Column::from_name(out)));
        }
        let groups = keys
            .iter()
            .map(|k| Expr::Column(Column::from_name(k.as_str())));
        let builder = LogicalPlanBuilder::from(plan)
            .aggregate(groups, aggregates)
            .and_then(|b| b.project(outputs));
        self.plan(at, builder).map(Value::DataFrame)
    }

    // ---- operators ----

    fn to_expr(&self, at: &impl Ranged, value: Value) -> Result<Expr> {
        Ok(match value {
            Value::Column(expr) => expr,
            Value::Bool(b) => lit(b),
            Value::Int(i) => lit(i),
            Value::Float(f) => lit(f),
            Value::Str(s) => lit(s),
            Value::Time(ns) => lit(ScalarValue::TimestampNanosecond(Some(ns), None)),
            Value::None => lit(ScalarValue::Null),
            other => {
                return Err(self.error(
                    at,
                    format!("{} cannot be used in an expression", other.kind()),
                ));
            }
        })
    }

    fn compare(&mut self, at: &ast::Expr, compare: &ast::ExprCompare) -> Result<Value> {
        let ([op], [right]) = (compare.ops.as_slice(), compare.comparators.as_slice()) else {
            return Err(self.error(at, "chained comparisons are not supported; use 'and'"));
        };
        let left = self.eval(&compare.left)?;
        let right = self.eval(right)?;
        let (l, r) = (self.to_expr(at, left)?, self.to_expr(at, right)?);
        Ok(Value::Column(match op {
            ast::CmpOp::Eq => l.eq(r),
            ast::CmpOp::NotEq => l.not_eq(r),
            ast::CmpOp::Lt => l.lt(r),
            ast::CmpOp::LtE => l.lt_eq(r),
            ast::CmpOp::Gt => l.gt(r),
            ast::CmpOp::GtE => l.gt_eq(r),
            _ => return Err(self.error(at, "this comparison is not supported in PxL")),
        }))
    }

    fn binary(&mut self, at: &ast::Expr, op: &ast::ExprBinOp) -> Result<Value> {
        let left = self.eval(&op.left)?;
        let right = self.eval(&op.right)?;
        if let (Value::Int(a), Value::Int(b)) = (&left, &right)
            && let Some(folded) = fold_ints(op.op, *a, *b)
        {
            return Ok(Value::Int(folded));
        }
        let (l, r) = (self.to_expr(at, left)?, self.to_expr(at, right)?);
        Ok(Value::Column(match op.op {
            ast::Operator::Add => l + r,
            ast::Operator::Sub => l - r,
            ast::Operator::Mult => l * r,
            ast::Operator::Div => l / r,
            ast::Operator::Mod => l % r,
            _ => return Err(self.error(at, "this operator is not supported in PxL")),
        }))
    }

    fn boolean(&mut self, at: &ast::Expr, op: &ast::ExprBoolOp) -> Result<Value> {
        let mut exprs = Vec::with_capacity(op.values.len());
        for value in &op.values {
            let value = self.eval(value)?;
            exprs.push(self.to_expr(at, value)?);
        }
        let combined = exprs.into_iter().reduce(|a, b| match op.op {
            ast::BoolOp::And => a.and(b),
            ast::BoolOp::Or => a.or(b),
        });
        combined
            .map(Value::Column)
            .ok_or_else(|| self.error(at, "empty boolean expression"))
    }

    fn unary(&mut self, at: &ast::Expr, op: &ast::ExprUnaryOp) -> Result<Value> {
        match (op.op, self.eval(&op.operand)?) {
            (ast::UnaryOp::USub, Value::Int(i)) => Ok(Value::Int(-i)),
            (ast::UnaryOp::USub, Value::Float(f)) => Ok(Value::Float(-f)),
            (ast::UnaryOp::Not, value) => Ok(Value::Column(!self.to_expr(at, value)?)),
            (ast::UnaryOp::USub, value) => Ok(Value::Column(-self.to_expr(at, value)?)),
            _ => Err(self.error(at, "this operator is not supported in PxL")),
        }
    }
}

/// Parses a script as Pixie's parser does, which also takes call arguments and list
/// items separated by a line break without a comma: where Python's parser stops at
/// the first token of a line inside brackets, right after a value, a comma is put at the
/// end of the line before and the script parsed again. Returns the patched source when
/// it needed one (only commas at line ends are added, so lines and columns stay where
/// they were).
fn parse_with_line_break_commas(
    source: &str,
) -> (
    Option<String>,
    std::result::Result<ast::Mod, rustpython_parser::ParseError>,
) {
    /// Commas added at most: a script with more is not waiting for commas.
    const MAX_PATCHES: usize = 256;
    let mut patched: Option<String> = None;
    for _ in 0..MAX_PATCHES {
        let text = patched.as_deref().unwrap_or(source);
        match parse(text, Mode::Module, "<script>") {
            Ok(module) => return (patched, Ok(module)),
            Err(error) => {
                let offset = (u32::from(error.offset) as usize).min(text.len());
                let Some(at) = comma_position(text, offset) else {
                    return (patched, Err(error));
                };
                let mut next = text.to_owned();
                next.insert(at, ',');
                patched = Some(next);
            }
        }
    }
    let text = patched.as_deref().unwrap_or(source);
    (patched.clone(), parse(text, Mode::Module, "<script>"))
}

/// Where a missing comma goes when the parser stopped at `offset`: the end of the
/// previous non-blank line, if the token there starts its line, the line before ends
/// with a value (not an opening bracket, a comma or an operator) and a bracket is open.
fn comma_position(text: &str, offset: usize) -> Option<usize> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    if !before[line_start..].trim().is_empty() {
        return None; // The token does not start its line.
    }
    let previous = before[..line_start].trim_end();
    let last = previous.chars().last()?;
    if matches!(
        last,
        ',' | '(' | '[' | '{' | ':' | '=' | '+' | '-' | '*' | '/' | '\\'
    ) {
        return None;
    }
    if text[offset..].starts_with([')', ']', '}']) {
        return None;
    }
    let depth = previous.chars().fold(0i32, |d, c| match c {
        '(' | '[' | '{' => d + 1,
        ')' | ']' | '}' => d - 1,
        _ => d,
    });
    (depth > 0).then_some(previous.len())
}

/// The name of a parameter's annotation: `str`, `int`, or `px.Service` as `Service`.
fn annotation_name(annotation: &ast::Expr) -> String {
    match annotation {
        ast::Expr::Name(name) => name.id.to_string(),
        ast::Expr::Attribute(attribute) => attribute.attr.to_string(),
        _ => String::new(),
    }
}

/// `px.bin`: rounds down to a multiple of `size`; times stay times.
fn bin(column: Expr, size: i64) -> Expr {
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

fn fold_ints(op: ast::Operator, a: i64, b: i64) -> Option<i64> {
    match op {
        ast::Operator::Add => a.checked_add(b),
        ast::Operator::Sub => a.checked_sub(b),
        ast::Operator::Mult => a.checked_mul(b),
        _ => None,
    }
}

/// A call's arguments; each is taken by position or by keyword, once.
struct Args {
    positional: Vec<Value>,
    keywords: Vec<(String, Value)>,
}

impl Args {
    fn take(&mut self, position: usize, keyword: &str) -> Option<Value> {
        if let Some(i) = self.keywords.iter().position(|(k, _)| k == keyword) {
            return Some(self.keywords.remove(i).1);
        }
        self.positional
            .get_mut(position)
            .map(|v| std::mem::replace(v, Value::None))
            .filter(|v| !matches!(v, Value::None))
    }
}

/// Functions of the `px` module this compiler knows.
const PX_FUNCTIONS: &[&str] = &[
    "DataFrame",
    "display",
    "now",
    "parse_duration",
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
    "sql",
    "quantiles",
    "pluck_float64",
    "pluck",
    "pluck_int64",
    "script_reference",
    // Argument types of Pixie's scripts (annotations, `px.Pod = str`).
    "Pod",
    "Node",
    "Service",
    "Namespace",
    "Container",
];

/// DataFrame methods (any other attribute is a column).
const DATAFRAME_METHODS: &[&str] = &["head", "drop", "groupby", "agg", "merge", "append"];
