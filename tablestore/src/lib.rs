//! The node's in-memory tables: columnar (Arrow record batches), append-only, each
//! within a byte budget derived from the PEM's memory limit; the oldest batches are
//! dropped first, and counted, when a table is full.
//!
//! Schemas carry Pixie's data and semantic types, so the query side can answer with
//! Pixie's column metadata.

mod budget;
mod error;
mod provider;
mod redaction;
mod row_builder;
mod schema;
mod store;
mod table;

pub use budget::{BudgetConfig, HTTP_EVENTS};
pub use error::Error;
pub use provider::{TableScan, TimeRange};
pub use redaction::{DataAccess, REDACTED, redact_pii};
pub use row_builder::RowBuilder;
pub use schema::{
    ColumnSchema, DataType, META_DATA_TYPE, META_DESC, META_SEMANTIC_TYPE, SemanticType,
    TableSchema, u128_from_bytes, u128_to_bytes,
};
pub use store::TableStore;
pub use table::{ReadSince, Table, TableStats};
