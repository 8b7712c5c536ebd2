//! `px.sql('SELECT ...')`: DataFusion's SQL over the same tables, for what PxL does not
//! say (window functions, CASE, subqueries, ...). The result is a DataFrame like any
//! other: the script can display it or keep working on it.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::TableReference;
use datafusion::common::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::execution::registry::FunctionRegistry as _;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::planner::{ContextProvider, ExprPlanner};
use datafusion::logical_expr::{
    AggregateUDF, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, WindowUDF,
};
use datafusion::sql::parser::DFParser;
use datafusion::sql::planner::SqlToRel;

use crate::TableCatalog;

/// Plans one SQL query over `catalog`'s tables, with DataFusion's functions and PxL's.
pub(crate) fn plan(
    query: &str,
    catalog: &dyn TableCatalog,
    px_functions: Vec<Arc<ScalarUDF>>,
) -> Result<LogicalPlan> {
    let mut statements = DFParser::parse_sql(query)?;
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (Some(statement), true) => statement,
        (None, _) => return Err(DataFusionError::Plan("px.sql needs a query".into())),
        (Some(_), false) => {
            return Err(DataFusionError::Plan(
                "px.sql takes one query; call it once per query".into(),
            ));
        }
    };
    let mut state = SessionStateBuilder::new().with_default_features().build();
    for function in px_functions {
        state.register_udf(function)?;
    }
    let provider = SqlCatalog { catalog, state };
    let plan = SqlToRel::new(&provider).statement_to_plan(statement)?;
    match plan {
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_) => Err(
            DataFusionError::Plan("px.sql reads tables; it cannot change them".into()),
        ),
        plan => Ok(plan),
    }
}

/// The compiler's tables and a session's functions, as DataFusion's SQL planner sees them.
struct SqlCatalog<'a> {
    catalog: &'a dyn TableCatalog,
    state: SessionState,
}

impl ContextProvider for SqlCatalog<'_> {
    fn get_table_source(&self, name: TableReference) -> Result<Arc<dyn TableSource>> {
        self.catalog
            .table(name.table())
            .ok_or_else(|| DataFusionError::Plan(format!("Table '{}' not found", name.table())))
    }

    /// How `count(*)`, `a[1]`, `x IS DISTINCT FROM y`... become expressions.
    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}
