//! Arrow record batches to Pixie's columnar row batches and relations.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampNanosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType as ArrowType, Field, Schema, TimeUnit};
use datafusion::arrow::compute::cast;
use px_api::vizierpb::{
    self, BooleanColumn, Column, Float64Column, Int64Column, Relation, RowBatchData, StringColumn,
    Time64NsColumn, UInt128, UInt128Column, column::ColData, relation::ColumnInfo,
};
use px_tablestore::{META_DATA_TYPE, META_DESC, META_SEMANTIC_TYPE};

/// Batches are split so that one message stays under this many bytes, as Pixie's
/// result sink keeps them under (1 MiB - 16 KiB) * 0.9.
pub(crate) const MAX_BATCH_BYTES: usize = 900_000;

/// Pixie's data type of an Arrow column: from the field metadata when the table store
/// set it, else from the Arrow type (other numeric types are sent as INT64 or FLOAT64).
fn pixie_type(field: &Field) -> vizierpb::DataType {
    if let Some(name) = field.metadata().get(META_DATA_TYPE)
        && let Some(t) = vizierpb::DataType::from_str_name(name)
    {
        return t;
    }
    match field.data_type() {
        ArrowType::Boolean => vizierpb::DataType::Boolean,
        ArrowType::Float16
        | ArrowType::Float32
        | ArrowType::Float64
        | ArrowType::Decimal128(..) => vizierpb::DataType::Float64,
        ArrowType::Timestamp(..) | ArrowType::Date64 => vizierpb::DataType::Time64ns,
        ArrowType::FixedSizeBinary(16) => vizierpb::DataType::Uint128,
        t if t.is_integer() => vizierpb::DataType::Int64,
        _ => vizierpb::DataType::String,
    }
}

fn semantic_type(field: &Field) -> i32 {
    field
        .metadata()
        .get(META_SEMANTIC_TYPE)
        .and_then(|name| vizierpb::SemanticType::from_str_name(name))
        .unwrap_or(vizierpb::SemanticType::StNone) as i32
}

/// The relation (column names, types, descriptions) Pixie's clients read first.
pub(crate) fn relation(schema: &Schema) -> Relation {
    Relation {
        columns: schema
            .fields()
            .iter()
            .map(|field| ColumnInfo {
                column_name: field.name().clone(),
                column_type: pixie_type(field) as i32,
                column_desc: field.metadata().get(META_DESC).cloned().unwrap_or_default(),
                column_semantic_type: semantic_type(field),
            })
            .collect(),
    }
}

/// One Arrow batch as Pixie row batches of at most [`MAX_BATCH_BYTES`] each.
pub(crate) fn row_batches(
    batch: &RecordBatch,
    table_id: &str,
) -> datafusion::error::Result<Vec<RowBatchData>> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Ok(Vec::new());
    }
    let per_row = (batch.get_array_memory_size() / rows).max(1);
    let rows_per_message = (MAX_BATCH_BYTES / per_row).clamp(1, rows);
    let mut out = Vec::with_capacity(rows.div_ceil(rows_per_message));
    let mut offset = 0;
    while offset < rows {
        let len = rows_per_message.min(rows - offset);
        let slice = batch.slice(offset, len);
        let cols = slice
            .schema()
            .fields()
            .iter()
            .zip(slice.columns())
            .map(|(field, array)| column(field, array))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        out.push(RowBatchData {
            table_id: table_id.to_owned(),
            cols,
            num_rows: len as i64,
            eow: false,
            eos: false,
        });
        offset += len;
    }
    Ok(out)
}

/// A column in Pixie's form. Pixie columns have no nulls: a null is sent as the type's zero.
fn column(field: &Field, array: &ArrayRef) -> datafusion::error::Result<Column> {
    let data = match pixie_type(field) {
        vizierpb::DataType::Boolean => {
            let a = cast(array, &ArrowType::Boolean)?;
            let a = a.as_boolean();
            ColData::BooleanData(BooleanColumn {
                data: (0..a.len()).map(|i| a.is_valid(i) && a.value(i)).collect(),
            })
        }
        vizierpb::DataType::Float64 => {
            let a = cast(array, &ArrowType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            ColData::Float64Data(Float64Column {
                data: (0..a.len())
                    .map(|i| if a.is_valid(i) { a.value(i) } else { 0.0 })
                    .collect(),
            })
        }
        vizierpb::DataType::Time64ns => {
            let a = cast(array, &ArrowType::Timestamp(TimeUnit::Nanosecond, None))?;
            let a = a.as_primitive::<TimestampNanosecondType>();
            ColData::Time64nsData(Time64NsColumn {
                data: (0..a.len())
                    .map(|i| if a.is_valid(i) { a.value(i) } else { 0 })
                    .collect(),
            })
        }
        vizierpb::DataType::Uint128 => match array.as_fixed_size_binary_opt() {
            Some(a) => ColData::Uint128Data(UInt128Column {
                data: (0..a.len())
                    .map(|i| {
                        let v = if a.is_valid(i) {
                            px_tablestore::u128_from_bytes(a.value(i)).unwrap_or(0)
                        } else {
                            0
                        };
                        UInt128 {
                            high: (v >> 64) as u64,
                            low: v as u64,
                        }
                    })
                    .collect(),
            }),
            None => return string_column(array),
        },
        vizierpb::DataType::Int64 => {
            let a = cast(array, &ArrowType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            ColData::Int64Data(Int64Column {
                data: (0..a.len())
                    .map(|i| if a.is_valid(i) { a.value(i) } else { 0 })
                    .collect(),
            })
        }
        _ => return string_column(array),
    };
    Ok(Column {
        col_data: Some(data),
    })
}

fn string_column(array: &ArrayRef) -> datafusion::error::Result<Column> {
    let a = cast(array, &ArrowType::Utf8)?;
    let a = a.as_string::<i32>();
    Ok(Column {
        col_data: Some(ColData::StringData(StringColumn {
            data: (0..a.len())
                .map(|i| {
                    if a.is_valid(i) {
                        a.value(i).as_bytes().to_vec()
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
        })),
    })
}
