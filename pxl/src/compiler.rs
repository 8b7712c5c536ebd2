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

mod arithmetic;
mod dataframe;
mod function_lists;
mod line_breaks;
mod modules;
mod px_calls;
mod system_tables;

use arithmetic::pixie_arithmetic;
use dataframe::DATAFRAME_METHODS;
use line_breaks::parse_with_line_break_commas;
use px_calls::PX_FUNCTIONS;

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
    /// The module whose function is running (`pxviews`), if any.
    module: Option<&'static str>,
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
            module: None,
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
        // `px` needs no import, as in Pixie (old scripts use it without one).
        self.vars.insert("px".to_owned(), Value::PxModule);
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
                    let module = self.import(statement, alias.name.as_str())?;
                    let name = alias.asname.as_ref().unwrap_or(&alias.name);
                    self.vars.insert(name.to_string(), module);
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
            // `False = 0 == 1`, as old Pixie scripts begin: Python 3 has them already.
            ast::Expr::Constant(ast::ExprConstant {
                value: ast::Constant::Bool(constant),
                ..
            }) => match value {
                Value::Bool(b) if b != *constant => {
                    Err(self.error(target, format!("{constant} cannot be made {b}")))
                }
                _ => Ok(()),
            },
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
        let expr = pixie_arithmetic(self.to_expr(target, value)?, plan.schema()).alias(column);
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
            ast::Expr::Name(name) => self.name(expr, name.id.as_str()),
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
    /// What a name stands for: a variable, a function, or one of Python's type names.
    fn name(&self, at: &ast::Expr, name: &str) -> Result<Value> {
        if let Some(value) = self.vars.get(name) {
            return Ok(value.clone());
        }
        // Inside a module's function, its own functions come first.
        if let Some(module) = self.module {
            let qualified = format!("{module}.{name}");
            if self.functions.contains_key(&qualified) {
                return Ok(Value::UserFunction(qualified));
            }
        }
        if self.functions.contains_key(name) {
            return Ok(Value::UserFunction(name.to_owned()));
        }
        // Python's type names, as Pixie's scripts use them in annotations, type aliases
        // (`px.Pod = str`) and conversions (`str(x)`).
        if ["str", "int", "float", "bool"].contains(&name) {
            return Ok(Value::PxFunction(format!("builtin_{name}")));
        }
        Err(self.error(at, format!("name '{name}' is not defined")))
    }

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
            Value::Module(module) => self.module_function(at, &module, name),
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
            Value::Column(predicate) => {
                let predicate = pixie_arithmetic(predicate, plan.schema());
                self.plan(at, LogicalPlanBuilder::from(plan).filter(predicate))
                    .map(Value::DataFrame)
            }
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
            // Without a process, a pod's keys come from the pod's id, as in Pixie
            // (network_stats rows and the views of pods have `pod_id`, not `upid`).
            key if !plan.schema().has_column_with_unqualified_name("upid")
                && plan.schema().has_column_with_unqualified_name("pod_id") =>
            {
                let pod_id = Expr::Column(Column::from_name("pod_id"));
                match crate::metadata::pod_context_function(key) {
                    Some("pod_id") => pod_id,
                    Some(f) => crate::metadata::MetadataFunction::udf(f, lookup)
                        .ok_or_else(|| self.error(at, format!("df.ctx has no key '{key}'")))?
                        .call(vec![pod_id]),
                    None => {
                        return Err(self.error(
                            at,
                            format!("df.ctx['{key}'] needs a upid column; this DataFrame has only pod_id"),
                        ));
                    }
                }
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
        // A module's function runs in its module: its own `px`, its own functions, and
        // positions in its own source.
        let module = Self::module_of(name);
        let saved_module = self.module;
        let saved_source = module.map(|(module, source)| {
            self.vars.insert("px".to_owned(), Value::PxModule);
            self.module = Some(module);
            std::mem::replace(&mut self.source, std::borrow::Cow::Borrowed(source))
        });
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
        self.module = saved_module;
        if let Some(source) = saved_source {
            self.source = source;
            // Said where the script called it, with where in the module it failed.
            result = result.map_err(|e| {
                let mut error = self.error(at, String::new());
                error.message = format!("{name}, at {}:{}: {}", e.line, e.column, e.message);
                error
            });
        }
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
        if let Some(folded) = fold_constants(op.op, &left, &right) {
            return Ok(folded);
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

/// The name of a parameter's annotation: `str`, `int`, or `px.Service` as `Service`.
fn annotation_name(annotation: &ast::Expr) -> String {
    match annotation {
        ast::Expr::Name(name) => name.id.to_string(),
        ast::Expr::Attribute(attribute) => attribute.attr.to_string(),
        _ => String::new(),
    }
}

/// Arithmetic on constants, done here: numbers, times (`px.now() - px.parse_duration(t)`
/// is a time, a time minus a time is nanoseconds) and strings.
fn fold_constants(op: ast::Operator, left: &Value, right: &Value) -> Option<Value> {
    use ast::Operator::{Add, Mult, Sub};
    let ints = |a: i64, b: i64| match op {
        Add => a.checked_add(b),
        Sub => a.checked_sub(b),
        Mult => a.checked_mul(b),
        _ => None,
    };
    match (left, op, right) {
        (Value::Int(a), _, Value::Int(b)) => ints(*a, *b).map(Value::Int),
        (Value::Time(a), Add | Sub, Value::Int(b)) => ints(*a, *b).map(Value::Time),
        (Value::Int(a), Add, Value::Time(b)) => ints(*a, *b).map(Value::Time),
        (Value::Time(a), Sub, Value::Time(b)) => ints(*a, *b).map(Value::Int),
        (Value::Str(a), Add, Value::Str(b)) => Some(Value::Str(format!("{a}{b}"))),
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
