//! What a PxL expression evaluates to while a script is compiled.

use datafusion::logical_expr::{Expr, LogicalPlan};

/// A value in the compiler's environment.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A list or tuple.
    List(Vec<Value>),
    /// A `{'key': value}` literal, keys in the order written.
    Dict(Vec<(String, Value)>),
    /// A point in time, ns since the epoch (`px.now()`).
    Time(i64),
    /// The `px` module.
    PxModule,
    /// An imported module of PxL functions (`pxviews`).
    Module(String),
    /// A function of the `px` module, not yet called (or passed as an aggregate).
    PxFunction(String),
    /// A dataframe: the plan that computes it.
    DataFrame(LogicalPlan),
    /// An expression over a dataframe's columns (`df.latency * 2`).
    Column(Expr),
    /// A dataframe method, not yet called.
    Method(LogicalPlan, String),
    /// `df.groupby(keys)`, waiting for its `.agg(...)`.
    GroupBy(LogicalPlan, Vec<String>),
    /// `df.groupby(keys).agg`, not yet called.
    GroupByAgg(LogicalPlan, Vec<String>),
    /// A function the script defines.
    UserFunction(String),
    /// `df.ctx`: metadata looked up from a dataframe's `upid`.
    Context(LogicalPlan),
}

impl Value {
    /// How the value is called in error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Time(_) => "a time",
            Value::PxModule => "the px module",
            Value::Module(_) => "a module",
            Value::PxFunction(_) => "a px function",
            Value::DataFrame(_) => "a DataFrame",
            Value::Column(_) => "a column expression",
            Value::Method(..) | Value::GroupByAgg(..) => "a method",
            Value::GroupBy(..) => "a groupby (call .agg on it)",
            Value::UserFunction(_) => "a function",
            Value::Context(_) => "df.ctx (index it: df.ctx['pid'])",
        }
    }
}
