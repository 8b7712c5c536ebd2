//! Row-at-a-time appends into Arrow column builders, in schema order.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampNanosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;

use crate::schema::{DataType, TableSchema, u128_to_bytes};

enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int64(Int64Builder),
    UInt128(FixedSizeBinaryBuilder),
    Float64(Float64Builder),
    String(StringBuilder),
    Time64Ns(TimestampNanosecondBuilder),
}

impl ColumnBuilder {
    fn new(data_type: DataType) -> Self {
        match data_type {
            DataType::Boolean => Self::Boolean(BooleanBuilder::new()),
            DataType::Int64 => Self::Int64(Int64Builder::new()),
            DataType::UInt128 => Self::UInt128(FixedSizeBinaryBuilder::new(16)),
            DataType::Float64 => Self::Float64(Float64Builder::new()),
            DataType::String => Self::String(StringBuilder::new()),
            DataType::Time64Ns => Self::Time64Ns(TimestampNanosecondBuilder::new()),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Boolean(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::UInt128(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::String(b) => b.append_null(),
            Self::Time64Ns(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Boolean(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::UInt128(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::String(b) => Arc::new(b.finish()),
            Self::Time64Ns(b) => Arc::new(b.finish()),
        }
    }
}

/// Builds a table's record batches one row at a time.
///
/// Values are appended column by column in schema order, then [`RowBuilder::finish_row`]
/// closes the row. A value of the wrong type for its column, or a row with too few
/// values, is a bug in the caller: it is stored as null (so the batch stays valid) and
/// counted in [`RowBuilder::misuses`], and debug builds assert.
pub struct RowBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    cursor: usize,
    rows: usize,
    misuses: u64,
}

macro_rules! append_fn {
    ($(#[$doc:meta])* $name:ident, $variant:ident, $ty:ty, |$b:ident, $v:ident| $body:expr) => {
        $(#[$doc])*
        pub fn $name(&mut self, $v: $ty) {
            match self.columns.get_mut(self.cursor) {
                Some(ColumnBuilder::$variant($b)) => $body,
                other => {
                    debug_assert!(false, "column {} is not {}", self.cursor, stringify!($variant));
                    if let Some(column) = other {
                        column.append_null();
                    }
                    self.misuses += 1;
                }
            }
            self.cursor += 1;
        }
    };
}

impl RowBuilder {
    /// An empty builder for `schema`.
    #[must_use]
    pub fn new(schema: &TableSchema) -> Self {
        Self {
            schema: schema.arrow_schema(),
            columns: schema
                .columns
                .iter()
                .map(|c| ColumnBuilder::new(c.data_type))
                .collect(),
            cursor: 0,
            rows: 0,
            misuses: 0,
        }
    }

    append_fn!(
        /// Appends a `TIME64NS` value (nanoseconds since the Unix epoch).
        append_time, Time64Ns, i64, |b, v| b.append_value(v)
    );
    append_fn!(
        /// Appends a `UINT128` value.
        append_u128, UInt128, u128, |b, v| {
            // Length is always 16, the builder's width: this cannot fail.
            let _ = b.append_value(u128_to_bytes(v));
        }
    );
    append_fn!(
        /// Appends an `INT64` value.
        append_i64, Int64, i64, |b, v| b.append_value(v)
    );
    append_fn!(
        /// Appends a `FLOAT64` value.
        append_f64, Float64, f64, |b, v| b.append_value(v)
    );
    append_fn!(
        /// Appends a `BOOLEAN` value.
        append_bool, Boolean, bool, |b, v| b.append_value(v)
    );
    append_fn!(
        /// Appends a `STRING` value.
        append_str, String, &str, |b, v| b.append_value(v)
    );

    /// Closes the current row; columns not given a value are filled with null.
    pub fn finish_row(&mut self) {
        debug_assert_eq!(self.cursor, self.columns.len(), "row has missing values");
        if self.cursor != self.columns.len() {
            self.misuses += 1;
        }
        for column in self.columns.iter_mut().skip(self.cursor) {
            column.append_null();
        }
        self.cursor = 0;
        self.rows += 1;
    }

    /// Rows built and not yet taken by [`RowBuilder::finish`].
    #[must_use]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values that did not match their column's type, or rows closed early.
    #[must_use]
    pub fn misuses(&self) -> u64 {
        self.misuses
    }

    /// The Arrow schema of the batches this builder makes.
    #[must_use]
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Takes every finished row as one record batch and starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        if self.cursor != 0 {
            // A half-built row would leave columns of unequal length: close it first.
            self.finish_row();
        }
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        // Every column has exactly `rows` values of its declared type, so this holds;
        // fall back to an empty batch rather than panic if it ever did not.
        RecordBatch::try_new(Arc::clone(&self.schema), arrays)
            .unwrap_or_else(|_| RecordBatch::new_empty(Arc::clone(&self.schema)))
    }
}
