//! Scalar functions of the `px` module that DataFusion does not have.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use px_tablestore::{META_SEMANTIC_TYPE, SemanticType};

/// `px.upid_to_pid(upid)`: the PID inside a UPID (bits 64..96 of the 128-bit value,
/// stored big-endian as 16 bytes: bytes 4..8).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct UpidToPid {
    signature: Signature,
}

impl UpidToPid {
    pub(crate) fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            signature: Signature::exact(vec![DataType::FixedSizeBinary(16)], Volatility::Immutable),
        }))
    }
}

fn pid_of(upid: &[u8]) -> Option<i64> {
    let bytes: [u8; 4] = upid.get(4..8)?.try_into().ok()?;
    Some(i64::from(u32::from_be_bytes(bytes)))
}

impl ScalarUDFImpl for UpidToPid {
    fn name(&self) -> &str {
        "upid_to_pid"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("upid_to_pid takes one argument");
        };
        match arg {
            ColumnarValue::Scalar(ScalarValue::FixedSizeBinary(16, value)) => Ok(
                ColumnarValue::Scalar(ScalarValue::Int64(value.as_deref().and_then(pid_of))),
            ),
            ColumnarValue::Array(array) => {
                let Some(upids) = array
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::FixedSizeBinaryArray>()
                else {
                    return exec_err!("upid_to_pid takes a UINT128 (UPID) column");
                };
                let pids: Int64Array = (0..upids.len())
                    .map(|i| upids.is_valid(i).then(|| pid_of(upids.value(i))).flatten())
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(pids) as ArrayRef))
            }
            _ => exec_err!("upid_to_pid takes a UINT128 (UPID) column"),
        }
    }
}

/// Percentiles `px.quantiles` reports, as Pixie names them.
pub(crate) const QUANTILES: [(&str, f64); 5] = [
    ("p01", 0.01),
    ("p10", 0.1),
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
];

/// Builds Pixie's quantiles value, a JSON object such as `{"p01":1,"p10":2,...}`, from
/// one float column per percentile in [`QUANTILES`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct QuantilesJson {
    signature: Signature,
}

impl QuantilesJson {
    pub(crate) fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            signature: Signature::exact(
                vec![DataType::Float64; QUANTILES.len()],
                Volatility::Immutable,
            ),
        }))
    }
}

impl ScalarUDFImpl for QuantilesJson {
    fn name(&self) -> &str {
        "quantiles"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(args.number_rows))
            .collect::<Result<Vec<_>>>()?;
        let columns: Vec<&datafusion::arrow::array::Float64Array> = arrays
            .iter()
            .filter_map(|a| a.as_any().downcast_ref())
            .collect();
        if columns.len() != QUANTILES.len() {
            return exec_err!("quantiles takes {} float columns", QUANTILES.len());
        }
        let json: datafusion::arrow::array::StringArray = (0..args.number_rows)
            .map(|row| {
                let mut object = serde_json::Map::new();
                for ((name, _), column) in QUANTILES.iter().zip(&columns) {
                    let value = if column.is_valid(row) {
                        column.value(row)
                    } else {
                        f64::NAN
                    };
                    object.insert((*name).to_owned(), serde_json::json!(value));
                }
                Some(serde_json::Value::Object(object).to_string())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(json) as ArrayRef))
    }
}

/// What `px.pluck*` takes out of a JSON object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PluckKind {
    /// `px.pluck`: the value as text (a string as itself, anything else as JSON).
    Text,
    /// `px.pluck_int64`: a whole number.
    Int64,
    /// `px.pluck_float64`: a number.
    Float64,
    /// `px.pluck_array`: an element of a JSON list (by index from 0), as text.
    ArrayElement,
}

/// `px.pluck(json, key)` and its typed forms: a value from a JSON object string, NULL
/// when the text is not an object or the key is absent.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Pluck {
    kind: PluckKind,
    signature: Signature,
}

impl Pluck {
    /// The function for `px.<name>`, if it is one of the plucks.
    pub(crate) fn named(name: &str) -> Option<Arc<ScalarUDF>> {
        let kind = match name {
            "pluck" => PluckKind::Text,
            "pluck_int64" => PluckKind::Int64,
            "pluck_float64" => PluckKind::Float64,
            _ => return None,
        };
        Some(Self::udf(kind))
    }

    pub(crate) fn udf(kind: PluckKind) -> Arc<ScalarUDF> {
        let key = match kind {
            PluckKind::ArrayElement => DataType::Int64,
            _ => DataType::Utf8,
        };
        Arc::new(ScalarUDF::new_from_impl(Self {
            kind,
            signature: Signature::exact(vec![DataType::Utf8, key], Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for Pluck {
    fn name(&self) -> &str {
        match self.kind {
            PluckKind::Text => "pluck",
            PluckKind::Int64 => "pluck_int64",
            PluckKind::Float64 => "pluck_float64",
            PluckKind::ArrayElement => "pluck_array",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            PluckKind::Text | PluckKind::ArrayElement => DataType::Utf8,
            PluckKind::Int64 => DataType::Int64,
            PluckKind::Float64 => DataType::Float64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [json, key] = args.args.as_slice() else {
            return exec_err!("{} takes a JSON column and a key", self.name());
        };
        let (json, key) = (
            json.to_array(args.number_rows)?,
            key.to_array(args.number_rows)?,
        );
        let Some(json) = json
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
        else {
            return exec_err!("{} takes a string column", self.name());
        };
        let keys = key
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>();
        let indices = key.as_any().downcast_ref::<Int64Array>();
        if keys.is_none() && indices.is_none() {
            return exec_err!("{} takes a string key or an index", self.name());
        }
        let value = |i: usize| -> Option<serde_json::Value> {
            if json.is_null(i) || key.is_null(i) {
                return None;
            }
            let mut object: serde_json::Value = serde_json::from_str(json.value(i)).ok()?;
            let found = match (keys, indices) {
                (Some(keys), _) => object.get_mut(keys.value(i)),
                (_, Some(indices)) => object.get_mut(usize::try_from(indices.value(i)).ok()?),
                _ => None,
            };
            found.map(serde_json::Value::take)
        };
        let array: ArrayRef = match self.kind {
            PluckKind::Float64 => Arc::new(
                (0..json.len())
                    .map(|i| value(i)?.as_f64())
                    .collect::<datafusion::arrow::array::Float64Array>(),
            ),
            PluckKind::Int64 => Arc::new(
                (0..json.len())
                    .map(|i| {
                        let v = value(i)?;
                        v.as_i64().or_else(|| v.as_str()?.parse().ok())
                    })
                    .collect::<Int64Array>(),
            ),
            PluckKind::Text | PluckKind::ArrayElement => Arc::new(
                (0..json.len())
                    .map(|i| {
                        Some(match value(i)? {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        })
                    })
                    .collect::<datafusion::arrow::array::StringArray>(),
            ),
        };
        Ok(ColumnarValue::Array(array))
    }
}

/// `px.split(value, delimiter)`: the parts of a string, as a JSON list (Pixie's form,
/// which `px.pluck_array` reads).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Split {
    signature: Signature,
}

impl Split {
    pub(crate) fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Utf8],
                Volatility::Immutable,
            ),
        }))
    }
}

impl ScalarUDFImpl for Split {
    fn name(&self) -> &str {
        "split"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value, delimiter] = args.args.as_slice() else {
            return exec_err!("split takes a string and a delimiter");
        };
        let (value, delimiter) = (
            value.to_array(args.number_rows)?,
            delimiter.to_array(args.number_rows)?,
        );
        let (Some(value), Some(delimiter)) = (
            value
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>(),
            delimiter
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>(),
        ) else {
            return exec_err!("split takes a string column and a string delimiter");
        };
        let parts: datafusion::arrow::array::StringArray = (0..value.len())
            .map(|i| {
                if value.is_null(i) || delimiter.is_null(i) {
                    return None;
                }
                let (text, by) = (value.value(i), delimiter.value(i));
                let parts: Vec<&str> = if by.is_empty() {
                    vec![text]
                } else {
                    text.split(by).collect()
                };
                Some(serde_json::Value::from(parts).to_string())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(parts)))
    }
}

/// `px.script_reference(label, script, {name: value, ...})`: Pixie's link to a script,
/// one JSON object per row: `{"label": ..., "script": ..., "args": {...}}`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ScriptReference {
    signature: Signature,
}

impl ScriptReference {
    pub(crate) fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for ScriptReference {
    fn name(&self) -> &str {
        "script_reference"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        // Every argument as text: labels and values may be of any type.
        let texts = args
            .args
            .iter()
            .map(|a| {
                let array = a.to_array(rows)?;
                datafusion::arrow::compute::cast(&array, &DataType::Utf8)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let texts: Vec<&datafusion::arrow::array::StringArray> = texts
            .iter()
            .filter_map(|a| a.as_any().downcast_ref())
            .collect();
        let [label, script, rest @ ..] = texts.as_slice() else {
            return exec_err!("script_reference takes a label and a script");
        };
        let text = |a: &datafusion::arrow::array::StringArray, i: usize| {
            if a.is_valid(i) {
                a.value(i).to_owned()
            } else {
                String::new()
            }
        };
        let values: datafusion::arrow::array::StringArray = (0..rows)
            .map(|i| {
                let args: serde_json::Map<String, serde_json::Value> = rest
                    .chunks(2)
                    .filter_map(|pair| match pair {
                        [k, v] => Some((text(k, i), serde_json::Value::String(text(v, i)))),
                        _ => None,
                    })
                    .collect();
                Some(
                    serde_json::json!({"label": text(label, i), "script": text(script, i), "args": args})
                        .to_string(),
                )
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(values) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_is_bits_64_to_96() {
        let upid: u128 = (3u128 << 96) | (0x0023_9267u128 << 64) | 0x08e6_0831;
        assert_eq!(pid_of(&upid.to_be_bytes()), Some(0x0023_9267));
        assert_eq!(pid_of(&[0; 3]), None);
    }
}

/// `px.DurationNanos(x)`, `px.Percent(x)`, `px.Bytes(x)`: the value unchanged, its
/// column marked with a semantic type (in the field's metadata, where the table store
/// keeps it too) so clients format it: `1.2 ms`, `45 %`, `3.1 KiB`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct SemanticTag {
    name: &'static str,
    semantic_type: SemanticType,
    signature: Signature,
}

impl SemanticTag {
    /// The wrapper `px.<px_name>`, if there is one of that name.
    pub(crate) fn udf(px_name: &str) -> Option<Arc<ScalarUDF>> {
        let (name, semantic_type) = match px_name {
            "DurationNanos" => ("px_duration_nanos", SemanticType::DurationNs),
            "Percent" => ("px_percent", SemanticType::Percent),
            "Bytes" => ("px_bytes", SemanticType::Bytes),
            _ => return None,
        };
        Some(Arc::new(ScalarUDF::new_from_impl(Self {
            name,
            semantic_type,
            signature: Signature::any(1, Volatility::Immutable),
        })))
    }
}

impl ScalarUDFImpl for SemanticTag {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [arg] => Ok(arg.clone()),
            _ => exec_err!("{} takes one value", self.name),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        let [arg] = args.arg_fields else {
            return exec_err!("{} takes one value", self.name);
        };
        let mut metadata = arg.metadata().clone();
        metadata.insert(
            META_SEMANTIC_TYPE.to_owned(),
            self.semantic_type.pixie().1.to_owned(),
        );
        Ok(Arc::new(
            Field::new(self.name, arg.data_type().clone(), arg.is_nullable())
                .with_metadata(metadata),
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.as_slice() {
            [arg] => Ok(arg.clone()),
            _ => exec_err!("{} takes one value", self.name),
        }
    }
}
