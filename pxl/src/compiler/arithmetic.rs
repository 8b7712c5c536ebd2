//! Arithmetic as Pixie does it: `+` joins strings, and arithmetic on times is on their
//! nanoseconds. Pixie's times and durations are 64-bit
//! nanoseconds, so `df.time_max - df.time_min` is a number a script divides or multiplies
//! like any other; DataFusion's is a `Duration`, which it will not mix with integers. A
//! time minus a time is therefore its nanoseconds, a time plus or minus a number stays a
//! time, and a duration in any other arithmetic is its nanoseconds.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode as _};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable as _, Operator, cast};

/// `expr` with its arithmetic on strings and times written as Pixie means it, over
/// `schema`.
pub(super) fn pixie_arithmetic(expr: Expr, schema: &DFSchema) -> Expr {
    let rewritten = expr.clone().transform_up(|e| {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
            return Ok(Transformed::no(e));
        };
        if !op.is_numerical_operators() {
            return Ok(Transformed::no(e));
        }
        let (Ok(left_type), Ok(right_type)) = (left.get_type(schema), right.get_type(schema))
        else {
            return Ok(Transformed::no(e));
        };
        let nanos = |side: &Expr, t: &DataType| match t {
            DataType::Timestamp(..) | DataType::Duration(_) => cast(side.clone(), DataType::Int64),
            _ => side.clone(),
        };
        let is_time = |t: &DataType| matches!(t, DataType::Timestamp(..));
        let is_duration = |t: &DataType| matches!(t, DataType::Duration(_));
        let number = |t: &DataType| t.is_integer();
        let arithmetic = Expr::BinaryExpr(BinaryExpr::new(
            Box::new(nanos(left, &left_type)),
            *op,
            Box::new(nanos(right, &right_type)),
        ));
        let is_text =
            |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        Ok(match (&left_type, op, &right_type) {
            (l, Operator::Plus, r) if is_text(l) && is_text(r) => {
                Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                    left.clone(),
                    Operator::StringConcat,
                    right.clone(),
                )))
            }
            (l, Operator::Minus, r) if is_time(l) && is_time(r) => Transformed::yes(arithmetic),
            (l, Operator::Plus | Operator::Minus, r) if is_time(l) && number(r) => {
                Transformed::yes(cast(
                    arithmetic,
                    DataType::Timestamp(TimeUnit::Nanosecond, None),
                ))
            }
            (l, Operator::Plus, r) if number(l) && is_time(r) => Transformed::yes(cast(
                arithmetic,
                DataType::Timestamp(TimeUnit::Nanosecond, None),
            )),
            (l, _, r) if is_duration(l) || is_duration(r) => Transformed::yes(arithmetic),
            _ => Transformed::no(e),
        })
    });
    // A rewrite cannot fail (the closure never errs); keep the expression as it was if
    // it somehow did, and let planning say what is wrong with it.
    rewritten.map(|t| t.data).unwrap_or(expr)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn schema() -> DFSchema {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        DFSchema::try_from(Arc::new(Schema::new(vec![
            Field::new("start", ts.clone(), false),
            Field::new("end", ts, false),
            Field::new("n", DataType::Int64, false),
            Field::new("d", DataType::Duration(TimeUnit::Nanosecond), false),
        ])))
        .unwrap()
    }

    fn type_of(expr: Expr) -> DataType {
        let schema = schema();
        pixie_arithmetic(expr, &schema).get_type(&schema).unwrap()
    }

    #[test]
    fn time_differences_are_nanoseconds_and_mix_with_numbers() {
        assert_eq!(type_of(col("end") - col("start")), DataType::Int64);
        assert_eq!(
            type_of(col("n") / (col("end") - col("start"))),
            DataType::Int64
        );
        assert_eq!(type_of(col("d") * lit(2)), DataType::Int64);
        assert_eq!(
            type_of(col("start") + lit(1_000_i64)),
            DataType::Timestamp(TimeUnit::Nanosecond, None)
        );
        assert_eq!(type_of(col("n") + lit(1)), DataType::Int64);
        assert_eq!(type_of(lit("a") + lit("b")), DataType::Utf8);
    }
}
