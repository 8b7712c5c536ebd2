//! The PxL compiler: Pixie's Python-syntax dataframe language, parsed with a real
//! Python parser and planned onto Apache DataFusion logical plans.
//!
//! The compiler is pure: source text in, one logical plan per output table out. It
//! sees tables only through [`TableCatalog`] (as DataFusion's SQL planner sees them
//! through its `ContextProvider`), reads no clock (the caller passes "now") and runs
//! nothing. Every mistake in a script is a [`CompileError`] with its line and column.

mod compiler;
mod error;
mod functions;
#[doc(hidden)]
pub mod fuzzing;
mod metadata;
mod sql;
mod time;
mod value;

use std::sync::Arc;

use datafusion::logical_expr::{LogicalPlan, TableSource};

pub use error::CompileError;
pub use metadata::{ContainerMeta, MetadataLookup, PodMeta, ProcessMeta, ServiceMeta};
pub use time::parse_duration_ns;

/// Where the compiler finds tables.
pub trait TableCatalog {
    /// The table named `name` (as `px.DataFrame(table=...)` names it), if it exists.
    fn table(&self, name: &str) -> Option<Arc<dyn TableSource>>;
    /// Every table's name, for `px.GetTables()` and `px.GetSchemas()`.
    fn table_names(&self) -> Vec<String>;
    /// The agents (PEMs) answering queries, for `px.GetAgentStatus()`.
    fn agents(&self) -> Vec<AgentInfo> {
        Vec::new()
    }
    /// The dynamic probes, for `px.GetTracepointStatus()`.
    fn tracepoints(&self) -> Vec<TracepointInfo> {
        Vec::new()
    }
}

/// One Tracepoint, as `px.GetTracepointStatus()` lists it (Pixie's columns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TracepointInfo {
    /// The Tracepoint's id (its Kubernetes UID as a 128-bit number).
    pub tracepoint_id: u128,
    /// `namespace/name`.
    pub name: String,
    /// `RUNNING_STATE`, `PENDING_STATE`, `FAILED_STATE` or `TERMINATED_STATE`.
    pub state: String,
    /// JSON: why it is not running, per node where it failed.
    pub status: String,
    /// JSON list of the tables it writes.
    pub output_tables: String,
}

/// One agent (PEM), as `px.GetAgentStatus()` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentInfo {
    /// The agent's id.
    pub agent_id: u128,
    /// Its short id (the high bits of the UPIDs it writes).
    pub asid: i64,
    /// The host it runs on.
    pub hostname: String,
    /// Its IP address.
    pub ip_address: String,
    /// `AGENT_STATE_HEALTHY`, or what is wrong.
    pub agent_state: String,
    /// When it started, ns since the epoch.
    pub create_time_ns: i64,
    /// Nanoseconds since it was last heard from.
    pub last_heartbeat_ns: i64,
}

/// What the caller decides for a compilation.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// "Now", in nanoseconds since the epoch: relative times such as `'-5m'` count from it.
    pub now_ns: i64,
    /// Row limit on each output table unless the script sets
    /// `#px:set max_output_rows_per_table=N` (Pixie's default: 10,000).
    pub max_output_rows: usize,
    /// Functions of the script to call, with string arguments parsed to the types the
    /// function's parameters are annotated with (`ExecuteScriptRequest.exec_funcs`).
    /// When there are any, only their results are output.
    pub exec_funcs: Vec<FuncCall>,
    /// This host's name, for `df.ctx['hostname']` and `df.ctx['node']`.
    pub hostname: String,
    /// The cluster's name (the Vizier's `clusterName`), for `px.vizier_name()` and the
    /// `cluster_name` column of `px.GetAgentStatus()`.
    pub cluster_name: String,
    /// The Vizier's namespace, for `px.vizier_namespace()`.
    pub cluster_namespace: String,
    /// Processes, pods and services, for `df.ctx[...]` and the metadata functions
    /// (without one they answer empty strings, and `df.ctx['node']` is `hostname`).
    pub metadata: Option<Arc<dyn MetadataLookup>>,
}

/// A call of one of the script's functions, as the API asks for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FuncCall {
    /// The function's name.
    pub name: String,
    /// Argument name and value, as text.
    pub args: Vec<(String, String)>,
    /// Name of the output table (`prefix[i]` when the function returns a list).
    pub output_prefix: String,
}

impl CompileOptions {
    /// Pixie's defaults, at time `now_ns`.
    #[must_use]
    pub fn at(now_ns: i64) -> Self {
        Self {
            now_ns,
            max_output_rows: 10_000,
            exec_funcs: Vec::new(),
            hostname: String::new(),
            cluster_name: String::new(),
            cluster_namespace: String::new(),
            metadata: None,
        }
    }
}

/// One table the script displays.
#[derive(Debug)]
pub struct Output {
    /// Its name (`px.display(df, 'name')`; `output` when none is given).
    pub name: String,
    /// The plan that computes it.
    pub plan: LogicalPlan,
}

/// A compiled script: its output tables, in the order the script displays them.
#[derive(Debug)]
pub struct Script {
    /// The tables to send back.
    pub outputs: Vec<Output>,
}

/// Compiles a PxL script.
///
/// # Errors
/// The first mistake found, with its line and column (1-based) and a message that says
/// what is wrong.
pub fn compile(
    source: &str,
    catalog: &dyn TableCatalog,
    options: &CompileOptions,
) -> Result<Script, CompileError> {
    compiler::Compiler::new(source, catalog, options).compile()
}
