//! Scalar functions of the `px` module that DataFusion does not have.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

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
