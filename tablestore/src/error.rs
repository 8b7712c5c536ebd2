//! Errors of the table store.

/// What went wrong in the table store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A batch's columns differ from its table's.
    #[error("batch does not match the schema of table {table}: expected {expected}, found {found}")]
    SchemaMismatch {
        /// The table.
        table: String,
        /// The table's Arrow schema.
        expected: String,
        /// The batch's Arrow schema.
        found: String,
    },
    /// A table of that name exists with other columns.
    #[error("table {table} already exists with different columns")]
    TableExists {
        /// The table.
        table: String,
    },
    /// The budget settings cannot be met.
    #[error("invalid table budget: {reason}")]
    InvalidBudget {
        /// Why.
        reason: String,
    },
}
