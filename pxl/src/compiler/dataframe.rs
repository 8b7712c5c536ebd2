//! `px.DataFrame(...)` and the methods of a dataframe: `head`, `drop`, `groupby`/`agg`,
//! `merge`, `append`.

use super::*;

impl Compiler<'_> {
    pub(super) fn dataframe(&self, at: &ast::Expr, mut args: Args) -> Result<Value> {
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
    pub(super) fn time_arg(&self, at: &ast::Expr, value: Option<Value>) -> Result<Option<i64>> {
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

    pub(super) fn method(
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
    pub(super) fn merge(
        &mut self,
        at: &ast::Expr,
        left: LogicalPlan,
        mut args: Args,
    ) -> Result<Value> {
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
    pub(super) fn aggregate(
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
}

/// DataFrame methods (any other attribute is a column).
pub(super) const DATAFRAME_METHODS: &[&str] =
    &["head", "drop", "groupby", "agg", "merge", "append"];
