//! Tables the system itself answers: `px.GetAgentStatus()`, `px.GetTracepointStatus()`,
//! `px.GetTables()`, `px.GetSchemas()`.

use super::*;

impl Compiler<'_> {
    /// `px.GetAgentStatus()`: the agents answering queries, with Pixie's columns.
    pub(super) fn agent_status(&self, at: &ast::Expr) -> Result<Value> {
        use datafusion::arrow::array::{
            ArrayRef, Int64Array, StringArray, TimestampNanosecondArray,
        };
        use datafusion::arrow::datatypes::{DataType, TimeUnit};

        let agents = self.catalog.agents();
        let ids = uint128_column(agents.iter().map(|a| a.agent_id));
        let text = |f: fn(&crate::AgentInfo) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(agents.iter().map(f)))
        };
        let columns: Vec<(&str, DataType, &str, ArrayRef)> = vec![
            ("agent_id", DataType::FixedSizeBinary(16), "UINT128", ids),
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
            // Not Pixie's: which cluster each agent belongs to (the Vizier's clusterName).
            (
                "cluster_name",
                DataType::Utf8,
                "STRING",
                Arc::new(StringArray::from_iter_values(
                    agents.iter().map(|_| self.options.cluster_name.as_str()),
                )),
            ),
        ];
        self.memory_table(at, "GetAgentStatus", columns)
    }

    /// `px.GetTracepointStatus()`: the dynamic probes and their states, Pixie's columns.
    pub(super) fn tracepoint_status(&self, at: &ast::Expr) -> Result<Value> {
        use datafusion::arrow::array::{ArrayRef, StringArray};
        use datafusion::arrow::datatypes::DataType;

        let tracepoints = self.catalog.tracepoints();
        let ids = uint128_column(tracepoints.iter().map(|t| t.tracepoint_id));
        let text = |f: fn(&crate::TracepointInfo) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(tracepoints.iter().map(f)))
        };
        let columns: Vec<(&str, DataType, &str, ArrayRef)> = vec![
            (
                "tracepoint_id",
                DataType::FixedSizeBinary(16),
                "UINT128",
                ids,
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
    pub(super) fn memory_table(
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
    pub(super) fn catalog_table(&self, at: &ast::Expr, name: &str) -> Result<Value> {
        use datafusion::arrow::array::StringArray;

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
        let columns = names
            .iter()
            .zip(columns)
            .map(|(name, values)| {
                let array: datafusion::arrow::array::ArrayRef = Arc::new(StringArray::from(values));
                (
                    *name,
                    datafusion::arrow::datatypes::DataType::Utf8,
                    "STRING",
                    array,
                )
            })
            .collect();
        self.memory_table(at, name, columns)
    }
}

/// A UINT128 column (ids): 16 big-endian bytes per value.
fn uint128_column(values: impl Iterator<Item = u128>) -> datafusion::arrow::array::ArrayRef {
    use datafusion::arrow::array::FixedSizeBinaryArray;
    // Building fails only on no values at all: an empty column.
    Arc::new(
        FixedSizeBinaryArray::try_from_iter(values.map(u128::to_be_bytes))
            .unwrap_or_else(|_| FixedSizeBinaryArray::new_null(16, 0)),
    )
}
