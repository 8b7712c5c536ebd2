//! Table schemas with Pixie's data types and semantic types, mapped onto Arrow.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};

/// Arrow field metadata key holding the Pixie data type name (e.g. `TIME64NS`).
pub const META_DATA_TYPE: &str = "px.data_type";
/// Arrow field metadata key holding the Pixie semantic type name (e.g. `ST_UPID`).
pub const META_SEMANTIC_TYPE: &str = "px.semantic_type";
/// Arrow field metadata key holding the column's description.
pub const META_DESC: &str = "px.desc";

/// Pixie's column data types (vizierpb `DataType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `BOOLEAN` (1).
    Boolean,
    /// `INT64` (2).
    Int64,
    /// `UINT128` (3): stored as 16 big-endian bytes (high word first), so byte order sorts.
    UInt128,
    /// `FLOAT64` (4).
    Float64,
    /// `STRING` (5).
    String,
    /// `TIME64NS` (6): nanoseconds since the Unix epoch.
    Time64Ns,
}

impl DataType {
    /// The vizierpb enum value.
    #[must_use]
    pub fn pixie_value(self) -> i32 {
        match self {
            DataType::Boolean => 1,
            DataType::Int64 => 2,
            DataType::UInt128 => 3,
            DataType::Float64 => 4,
            DataType::String => 5,
            DataType::Time64Ns => 6,
        }
    }

    /// The vizierpb enum name.
    #[must_use]
    pub fn pixie_name(self) -> &'static str {
        match self {
            DataType::Boolean => "BOOLEAN",
            DataType::Int64 => "INT64",
            DataType::UInt128 => "UINT128",
            DataType::Float64 => "FLOAT64",
            DataType::String => "STRING",
            DataType::Time64Ns => "TIME64NS",
        }
    }

    /// The Arrow type that stores this column.
    #[must_use]
    pub fn arrow_type(self) -> ArrowType {
        match self {
            DataType::Boolean => ArrowType::Boolean,
            DataType::Int64 => ArrowType::Int64,
            DataType::UInt128 => ArrowType::FixedSizeBinary(16),
            DataType::Float64 => ArrowType::Float64,
            DataType::String => ArrowType::Utf8,
            DataType::Time64Ns => ArrowType::Timestamp(TimeUnit::Nanosecond, None),
        }
    }
}

/// Pixie's semantic types (vizierpb `SemanticType`), the subset the tables use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each variant is the vizierpb name it maps to
pub enum SemanticType {
    None,
    TimeNs,
    AgentUid,
    Asid,
    Upid,
    ServiceName,
    PodName,
    NodeName,
    ContainerName,
    NamespaceName,
    Bytes,
    Percent,
    DurationNs,
    ThroughputPerNs,
    ThroughputBytesPerNs,
    Quantiles,
    DurationNsQuantiles,
    IpAddress,
    Port,
    HttpReqMethod,
    HttpRespStatus,
    HttpRespMessage,
    ScriptReference,
}

impl SemanticType {
    /// The vizierpb enum value and name.
    #[must_use]
    pub fn pixie(self) -> (i32, &'static str) {
        match self {
            SemanticType::None => (1, "ST_NONE"),
            SemanticType::TimeNs => (2, "ST_TIME_NS"),
            SemanticType::AgentUid => (100, "ST_AGENT_UID"),
            SemanticType::Asid => (101, "ST_ASID"),
            SemanticType::Upid => (200, "ST_UPID"),
            SemanticType::ServiceName => (300, "ST_SERVICE_NAME"),
            SemanticType::PodName => (400, "ST_POD_NAME"),
            SemanticType::NodeName => (500, "ST_NODE_NAME"),
            SemanticType::ContainerName => (600, "ST_CONTAINER_NAME"),
            SemanticType::NamespaceName => (700, "ST_NAMESPACE_NAME"),
            SemanticType::Bytes => (800, "ST_BYTES"),
            SemanticType::Percent => (900, "ST_PERCENT"),
            SemanticType::DurationNs => (901, "ST_DURATION_NS"),
            SemanticType::ThroughputPerNs => (902, "ST_THROUGHPUT_PER_NS"),
            SemanticType::ThroughputBytesPerNs => (903, "ST_THROUGHPUT_BYTES_PER_NS"),
            SemanticType::Quantiles => (1000, "ST_QUANTILES"),
            SemanticType::DurationNsQuantiles => (1001, "ST_DURATION_NS_QUANTILES"),
            SemanticType::IpAddress => (1100, "ST_IP_ADDRESS"),
            SemanticType::Port => (1200, "ST_PORT"),
            SemanticType::HttpReqMethod => (1300, "ST_HTTP_REQ_METHOD"),
            SemanticType::HttpRespStatus => (1400, "ST_HTTP_RESP_STATUS"),
            SemanticType::HttpRespMessage => (1500, "ST_HTTP_RESP_MESSAGE"),
            SemanticType::ScriptReference => (3000, "ST_SCRIPT_REFERENCE"),
        }
    }
}

/// One column: name, Pixie types and a description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSchema {
    /// Column name, as PxL scripts use it.
    pub name: String,
    /// Pixie data type.
    pub data_type: DataType,
    /// Pixie semantic type.
    pub semantic_type: SemanticType,
    /// What the column holds.
    pub desc: String,
    /// Whether it may hold what a restricted data access mode hides (bodies, headers,
    /// query text: Pixie's sensitive columns).
    pub sensitive: bool,
}

impl ColumnSchema {
    /// A column.
    #[must_use]
    pub fn new(name: &str, data_type: DataType, semantic_type: SemanticType, desc: &str) -> Self {
        Self {
            name: name.to_owned(),
            data_type,
            semantic_type,
            desc: desc.to_owned(),
            sensitive: false,
        }
    }

    /// The same column, marked sensitive: redacted under a restricted data access mode.
    #[must_use]
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    fn arrow_field(&self) -> Field {
        let metadata = HashMap::from([
            (
                META_DATA_TYPE.to_owned(),
                self.data_type.pixie_name().to_owned(),
            ),
            (
                META_SEMANTIC_TYPE.to_owned(),
                self.semantic_type.pixie().1.to_owned(),
            ),
            (META_DESC.to_owned(), self.desc.clone()),
        ]);
        Field::new(&self.name, self.data_type.arrow_type(), true).with_metadata(metadata)
    }
}

/// A table: its name, a description, and its columns in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    /// Table name, as `px.DataFrame(...)` names it.
    pub name: String,
    /// What the table records.
    pub desc: String,
    /// Columns in order.
    pub columns: Vec<ColumnSchema>,
}

impl TableSchema {
    /// A table schema.
    #[must_use]
    pub fn new(name: &str, desc: &str, columns: Vec<ColumnSchema>) -> Self {
        Self {
            name: name.to_owned(),
            desc: desc.to_owned(),
            columns,
        }
    }

    /// The Arrow schema of this table's record batches (field metadata carries the Pixie types).
    #[must_use]
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self.columns.iter().map(ColumnSchema::arrow_field).collect();
        Arc::new(
            Schema::new(fields)
                .with_metadata(HashMap::from([(META_DESC.to_owned(), self.desc.clone())])),
        )
    }

    /// Index of the column named `name`.
    #[must_use]
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// Encodes a UINT128 as the 16 bytes stored in Arrow (big-endian: high word first).
#[must_use]
pub fn u128_to_bytes(v: u128) -> [u8; 16] {
    v.to_be_bytes()
}

/// Decodes the 16 bytes of a UINT128 column value.
#[must_use]
pub fn u128_from_bytes(bytes: &[u8]) -> Option<u128> {
    <[u8; 16]>::try_from(bytes).ok().map(u128::from_be_bytes)
}
