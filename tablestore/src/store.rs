//! All of a node's tables, each within the budget derived from one memory limit.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::budget::BudgetConfig;
use crate::error::Error;
use crate::redaction::DataAccess;
use crate::schema::TableSchema;
use crate::table::Table;

/// The node's tables by name. Creating or dropping a table re-divides the budget.
pub struct TableStore {
    budgets: RwLock<BudgetConfig>,
    /// What the sensitive columns of every table keep.
    data_access: RwLock<DataAccess>,
    tables: RwLock<BTreeMap<String, Arc<Table>>>,
}

impl TableStore {
    /// An empty store.
    ///
    /// # Errors
    /// [`Error::InvalidBudget`] when the budget settings cannot be met.
    pub fn new(budgets: BudgetConfig) -> Result<Self, Error> {
        budgets.validate()?;
        Ok(Self {
            budgets: RwLock::new(budgets),
            data_access: RwLock::new(DataAccess::Full),
            tables: RwLock::new(BTreeMap::new()),
        })
    }

    /// Creates a table, or returns the existing one if its schema is the same.
    ///
    /// # Errors
    /// [`Error::TableExists`] when a table of that name has other columns.
    pub fn create_table(&self, schema: TableSchema) -> Result<Arc<Table>, Error> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = tables.get(&schema.name) {
            if existing.schema().columns == schema.columns {
                return Ok(Arc::clone(existing));
            }
            return Err(Error::TableExists { table: schema.name });
        }
        let table = Arc::new(Table::new(schema.clone(), 0));
        table.set_data_access(self.data_access());
        tables.insert(schema.name, Arc::clone(&table));
        self.rebalance(&tables);
        Ok(table)
    }

    /// Sets what the sensitive columns of every table, and of tables made later, keep of
    /// the rows appended from now on.
    pub fn set_data_access(&self, access: DataAccess) {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        *self
            .data_access
            .write()
            .unwrap_or_else(PoisonError::into_inner) = access;
        for table in tables.values() {
            table.set_data_access(access);
        }
    }

    /// What the sensitive columns keep.
    #[must_use]
    pub fn data_access(&self) -> DataAccess {
        *self
            .data_access
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes a table and frees its memory once no reader holds its batches.
    pub fn drop_table(&self, name: &str) -> bool {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let dropped = tables.remove(name).is_some();
        if dropped {
            self.rebalance(&tables);
        }
        dropped
    }

    /// The table named `name`.
    #[must_use]
    pub fn table(&self, name: &str) -> Option<Arc<Table>> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        tables.get(name).cloned()
    }

    /// Every table, by name.
    #[must_use]
    pub fn tables(&self) -> Vec<Arc<Table>> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        tables.values().cloned().collect()
    }

    /// Replaces the budget settings and applies them to every table at once.
    ///
    /// # Errors
    /// [`Error::InvalidBudget`] when the settings cannot be met (nothing changes then).
    pub fn set_budgets(&self, budgets: BudgetConfig) -> Result<(), Error> {
        budgets.validate()?;
        *self.budgets.write().unwrap_or_else(PoisonError::into_inner) = budgets;
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        self.rebalance(&tables);
        Ok(())
    }

    /// The budget settings in force.
    #[must_use]
    pub fn budgets(&self) -> BudgetConfig {
        self.budgets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Bytes held by all tables together.
    #[must_use]
    pub fn bytes_held(&self) -> u64 {
        self.tables().iter().map(|t| t.stats().bytes_held).sum()
    }

    fn rebalance(&self, tables: &BTreeMap<String, Arc<Table>>) {
        let config = self.budgets.read().unwrap_or_else(PoisonError::into_inner);
        let split = config.split(tables.keys().map(String::as_str));
        for (name, table) in tables {
            if let Some(budget) = split.get(name) {
                table.set_budget(*budget);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::schema::{ColumnSchema, DataType, SemanticType};

    fn schema(name: &str) -> TableSchema {
        TableSchema::new(
            name,
            "",
            vec![ColumnSchema::new(
                "v",
                DataType::Int64,
                SemanticType::None,
                "",
            )],
        )
    }

    #[test]
    fn budgets_follow_the_tables_that_exist() {
        let store = TableStore::new(BudgetConfig::for_memory_limit(1000 * 100)).unwrap();
        let http = store.create_table(schema("http_events")).unwrap();
        let conn = store.create_table(schema("conn_stats")).unwrap();
        assert_eq!(http.stats().budget_bytes, 24_000);
        assert_eq!(conn.stats().budget_bytes, 36_000);
        let extra = store.create_table(schema("extra")).unwrap();
        assert_eq!(conn.stats().budget_bytes, 18_000);
        assert_eq!(extra.stats().budget_bytes, 18_000);
        assert!(store.drop_table("extra"));
        assert_eq!(conn.stats().budget_bytes, 36_000);
        assert!(store.table("extra").is_none());
    }

    #[test]
    fn a_second_create_with_other_columns_is_refused() {
        let store = TableStore::new(BudgetConfig::for_memory_limit(1 << 20)).unwrap();
        store.create_table(schema("t")).unwrap();
        assert!(store.create_table(schema("t")).is_ok());
        let other = TableSchema::new(
            "t",
            "",
            vec![ColumnSchema::new(
                "w",
                DataType::Int64,
                SemanticType::None,
                "",
            )],
        );
        assert!(matches!(
            store.create_table(other),
            Err(Error::TableExists { .. })
        ));
    }
}
