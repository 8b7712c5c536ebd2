//! A table of the store as a DataFusion `TableProvider`, so queries (PxL compiled to
//! logical plans, or SQL) run on it with DataFusion's engine.
//!
//! Like DataFusion's `MemTable`, a scan snapshots the table's batches under its read
//! lock and hands them to an in-memory source with the projection applied. Filters on
//! `time_` are pushed down inexactly: whole batches outside the time range are skipped
//! (each batch knows its time span), and DataFusion still applies the filter to rows.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;

use crate::table::Table;

/// Name of the time column whose filters prune batches.
const TIME_COLUMN: &str = "time_";

/// A [`Table`] as DataFusion sees it.
pub struct TableScan {
    table: Arc<Table>,
}

impl TableScan {
    /// Wraps a table of the store.
    #[must_use]
    pub fn new(table: Arc<Table>) -> Self {
        Self { table }
    }
}

impl std::fmt::Debug for TableScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableScan")
            .field("table", &self.table.schema().name)
            .finish()
    }
}

#[async_trait]
impl TableProvider for TableScan {
    fn schema(&self) -> SchemaRef {
        self.table.arrow_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if time_bound(f).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let range = TimeRange::from_filters(filters);
        let batches = self.table.snapshot_time_range(range.start, range.end);
        let source = MemorySourceConfig::try_new(&[batches], self.schema(), projection.cloned())?
            .with_limit(limit);
        Ok(datafusion::datasource::source::DataSourceExec::from_data_source(source))
    }
}

/// The tightest `[start, end]` (ns since the epoch) that the filters imply for `time_`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Rows before this cannot match.
    pub start: Option<i64>,
    /// Rows after this cannot match.
    pub end: Option<i64>,
}

impl TimeRange {
    /// Combines every `time_` comparison among `filters` (others are ignored).
    #[must_use]
    pub fn from_filters(filters: &[Expr]) -> Self {
        let mut range = Self::default();
        for (is_lower, bound) in filters.iter().filter_map(time_bound) {
            if is_lower {
                range.start = Some(range.start.map_or(bound, |s| s.max(bound)));
            } else {
                range.end = Some(range.end.map_or(bound, |e| e.min(bound)));
            }
        }
        range
    }
}

/// `time_ >= x` (and `>`, `<=`, `<`, either side) as (is lower bound, x).
fn time_bound(expr: &Expr) -> Option<(bool, i64)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    let (op, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) if c.name == TIME_COLUMN => (*op, v),
        (Expr::Literal(v, _), Expr::Column(c)) if c.name == TIME_COLUMN => (op.swap()?, v),
        _ => return None,
    };
    let value = match value {
        ScalarValue::TimestampNanosecond(Some(v), _) | ScalarValue::Int64(Some(v)) => *v,
        _ => return None,
    };
    match op {
        Operator::Gt | Operator::GtEq => Some((true, value)),
        Operator::Lt | Operator::LtEq => Some((false, value)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use datafusion::logical_expr::{col, lit};
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::row_builder::RowBuilder;
    use crate::schema::{ColumnSchema, DataType, SemanticType, TableSchema};

    fn table() -> Arc<Table> {
        let schema = TableSchema::new(
            "t",
            "",
            vec![
                ColumnSchema::new("time_", DataType::Time64Ns, SemanticType::None, ""),
                ColumnSchema::new("v", DataType::Int64, SemanticType::None, ""),
                ColumnSchema::new("s", DataType::String, SemanticType::None, ""),
            ],
        );
        let table = Arc::new(Table::new(schema.clone(), u64::MAX));
        for batch in 0..10 {
            let mut rows = RowBuilder::new(&schema);
            for i in 0..100 {
                let t = batch * 100 + i;
                rows.append_time(t);
                rows.append_i64(t);
                rows.append_str(if t % 2 == 0 { "even" } else { "odd" });
                rows.finish_row();
            }
            table.append(rows.finish()).unwrap();
        }
        table
    }

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(v), None))
    }

    #[test]
    fn time_filters_become_a_range() {
        let filters = [
            col("time_").gt_eq(ts(250)),
            ts(700).gt(col("time_")),
            col("time_").gt(ts(100)),
            col("v").lt(lit(5i64)),
        ];
        let range = TimeRange::from_filters(&filters);
        assert_eq!(
            range,
            TimeRange {
                start: Some(250),
                end: Some(700)
            }
        );
    }

    #[tokio::test]
    async fn queries_see_the_rows_and_time_filters_skip_batches() {
        let ctx = SessionContext::new();
        let scan = Arc::new(TableScan::new(table()));
        ctx.register_table("t", Arc::clone(&scan) as Arc<dyn TableProvider>)
            .unwrap();
        let df = ctx
            .table("t")
            .await
            .unwrap()
            .filter(col("time_").gt_eq(ts(250)).and(col("time_").lt(ts(420))))
            .unwrap()
            .filter(col("s").eq(lit("even")))
            .unwrap()
            .select(vec![col("v")])
            .unwrap();
        let batches = df.collect().await.unwrap();
        let values: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(
            values,
            (250..420).filter(|v| v % 2 == 0).collect::<Vec<_>>()
        );

        // The scan itself only read the batches whose span meets [250, 420].
        let state = ctx.state();
        let plan = scan
            .scan(
                &state,
                Some(&vec![1]),
                &[col("time_").gt_eq(ts(250)), col("time_").lt(ts(420))],
                None,
            )
            .await
            .unwrap();
        let rows: usize = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap()
            .iter()
            .map(arrow_array::RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 300, "batches 200..300, 300..400, 400..500");
    }
}
