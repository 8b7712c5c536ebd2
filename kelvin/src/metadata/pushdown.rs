//! Filters on a row's process (`df.ctx['pod'] == 'shop/web'`), pushed down to the PEMs.
//!
//! A PEM cannot resolve pods or services, but Kelvin knows the PEM's processes: it
//! evaluates the filter over the UPIDs it has of that PEM and sends the PEM the answer as
//! a set of UPIDs, which any PEM can test. A row of a process Kelvin does not know yet
//! resolves as every unknown process of that PEM does (the PEM's node, no pod), so one
//! evaluation of such a process says which way those go: the set lists the processes
//! that pass (`upid IN (...)`), or those that fail when unknown ones pass
//! (`upid NOT IN (...)`). The filter stays in Kelvin as well, so the PEM's copy only
//! saves bytes.

use std::sync::Arc;

use arrow_array::cast::AsArray as _;
use arrow_array::{Array as _, FixedSizeBinaryArray, RecordBatch};
use arrow_schema::{Field, Schema};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, col, lit};

/// The column that names a row's process.
pub(crate) const UPID: &str = "upid";

/// Most UPIDs one pushed filter lists; beyond it the filter stays in Kelvin alone.
const MAX_LISTED_UPIDS: usize = 4096;

/// Whether `filter` reads nothing but the row's process: `upid` is its only column.
pub(crate) fn reads_only_upid(filter: &Expr) -> bool {
    let columns = filter.column_refs();
    !columns.is_empty() && columns.iter().all(|c| c.name == UPID)
}

/// `filter`, which reads only `upid`, as a set of UPIDs the PEM whose ASID is `asid` and
/// whose known processes are `upids` can test. `None` when it cannot be evaluated here
/// or the set would be too long; `Some(lit(true))` when every row passes.
pub(crate) fn upid_filter(
    filter: &Expr,
    upid_field: &Field,
    asid: u32,
    upids: &[u128],
) -> Option<Expr> {
    let schema = Arc::new(Schema::new(vec![upid_field.clone().with_name(UPID)]));
    let df_schema = DFSchema::try_from(Arc::clone(&schema)).ok()?;
    let expr = unnormalize_col(filter.clone());
    let physical = datafusion::physical_expr::create_physical_expr(
        &expr,
        &df_schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .ok()?;
    let unknown = unknown_upid(asid, upids)?;
    let values = upids.iter().chain(std::iter::once(&unknown));
    let array = FixedSizeBinaryArray::try_from_iter(values.map(|u| u.to_be_bytes())).ok()?;
    let batch = RecordBatch::try_new(schema, vec![Arc::new(array)]).ok()?;
    let result = physical
        .evaluate(&batch)
        .ok()?
        .into_array(batch.num_rows())
        .ok()?;
    let passes = result.as_boolean_opt()?;
    let pass = |i: usize| passes.is_valid(i) && passes.value(i);
    let unknown_passes = pass(upids.len());
    let listed: Vec<Expr> = upids
        .iter()
        .enumerate()
        .filter(|&(i, _)| pass(i) != unknown_passes)
        .map(|(_, u)| {
            lit(ScalarValue::FixedSizeBinary(
                16,
                Some(u.to_be_bytes().to_vec()),
            ))
        })
        .collect();
    if listed.len() > MAX_LISTED_UPIDS {
        return None;
    }
    Some(match (listed.is_empty(), unknown_passes) {
        (true, passes) => lit(passes),
        (false, negated) => col(UPID).in_list(listed, negated),
    })
}

/// A UPID of this PEM's ASID that is none of `upids`: it resolves as every process Kelvin
/// has not heard of yet.
fn unknown_upid(asid: u32, upids: &[u128]) -> Option<u128> {
    let base = u128::from(asid) << 96;
    (0..=u64::from(u16::MAX))
        .map(|start| base | (u128::from(u32::MAX) << 64) | u128::from(u64::MAX - start))
        .find(|candidate| !upids.contains(candidate))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arrow_schema::DataType;
    use datafusion::logical_expr::ScalarUDF;

    use super::*;

    /// A stand-in for a metadata function: the PID inside the UPID, as text.
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct PidText(datafusion::logical_expr::Signature);

    impl datafusion::logical_expr::ScalarUDFImpl for PidText {
        fn name(&self) -> &'static str {
            "pid_text"
        }
        fn signature(&self) -> &datafusion::logical_expr::Signature {
            &self.0
        }
        fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
            Ok(DataType::Utf8)
        }
        fn invoke_with_args(
            &self,
            args: datafusion::logical_expr::ScalarFunctionArgs,
        ) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
            let upids = args.args[0].to_array(args.number_rows)?;
            let upids = upids.as_fixed_size_binary();
            let text: arrow_array::StringArray = (0..upids.len())
                .map(|i| {
                    let pid = u32::from_be_bytes(upids.value(i)[4..8].try_into().unwrap());
                    // Unknown processes (the stand-in: PID u32::MAX) resolve to "".
                    Some(if pid == u32::MAX {
                        String::new()
                    } else {
                        pid.to_string()
                    })
                })
                .collect();
            Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
                text,
            )))
        }
    }

    fn pid_text() -> ScalarUDF {
        ScalarUDF::new_from_impl(PidText(datafusion::logical_expr::Signature::any(
            1,
            datafusion::logical_expr::Volatility::Immutable,
        )))
    }

    fn upid(asid: u32, pid: u32) -> u128 {
        (u128::from(asid) << 96) | (u128::from(pid) << 64) | 99
    }

    fn field() -> Field {
        Field::new("upid", DataType::FixedSizeBinary(16), false)
    }

    fn listed(expr: &Expr) -> (Vec<u128>, bool) {
        let Expr::InList(list) = expr else {
            panic!("not an IN list: {expr}")
        };
        let upids = list
            .list
            .iter()
            .map(|e| match e {
                Expr::Literal(ScalarValue::FixedSizeBinary(16, Some(b)), _) => {
                    u128::from_be_bytes(b.as_slice().try_into().unwrap())
                }
                other => panic!("not a UPID: {other}"),
            })
            .collect();
        (upids, list.negated)
    }

    #[test]
    fn a_filter_on_the_process_becomes_the_upids_that_pass() {
        let upids = [upid(7, 10), upid(7, 11), upid(7, 12)];
        let filter = pid_text().call(vec![col("http_events.upid")]).eq(lit("11"));
        assert!(reads_only_upid(&filter));
        let pushed = upid_filter(&filter, &field(), 7, &upids).unwrap();
        assert_eq!(listed(&pushed), (vec![upid(7, 11)], false));
    }

    #[test]
    fn when_unknown_processes_pass_the_set_lists_those_that_fail() {
        let upids = [upid(7, 10), upid(7, 11)];
        // Host processes and processes Kelvin has not heard of both resolve to "".
        let filter = pid_text().call(vec![col("upid")]).not_eq(lit("10"));
        let pushed = upid_filter(&filter, &field(), 7, &upids).unwrap();
        assert_eq!(listed(&pushed), (vec![upid(7, 10)], true));
        // Nothing known fails: every row passes, nothing to push.
        let all = pid_text().call(vec![col("upid")]).not_eq(lit("99"));
        assert_eq!(upid_filter(&all, &field(), 7, &upids), Some(lit(true)));
        // Nothing passes: the PEM sends nothing.
        let none = pid_text().call(vec![col("upid")]).eq(lit("99"));
        assert_eq!(upid_filter(&none, &field(), 7, &upids), Some(lit(false)));
    }

    #[test]
    fn filters_on_other_columns_are_not_process_filters() {
        let filter = pid_text().call(vec![col("upid")]).eq(col("req_path"));
        assert!(!reads_only_upid(&filter));
        assert!(!reads_only_upid(&lit(true)));
    }
}
