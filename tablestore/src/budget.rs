//! How one memory limit is divided into per-table byte budgets, the way Pixie's PEM does.
//!
//! By default 60% of the PEM's memory limit goes to tables; `http_events` gets 40% of
//! that, and the rest is shared equally by the other tables. Every part can be
//! overridden: the total, the `http_events` share, and any table's budget in bytes.

use std::collections::BTreeMap;

use crate::error::Error;

/// The table that gets its own share of the total, as in Pixie.
pub const HTTP_EVENTS: &str = "http_events";

/// Settings from which table budgets are derived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// The PEM's memory limit in bytes.
    pub memory_limit_bytes: u64,
    /// Bytes for all tables together; default 60% of the memory limit.
    pub table_store_bytes: Option<u64>,
    /// Percent of the table store given to `http_events`; default 40.
    pub http_events_percent: u8,
    /// Fixed budgets for named tables, taken out of the total before the rest is shared.
    pub table_bytes: BTreeMap<String, u64>,
}

impl BudgetConfig {
    /// Pixie's defaults for a memory limit.
    #[must_use]
    pub fn for_memory_limit(memory_limit_bytes: u64) -> Self {
        Self {
            memory_limit_bytes,
            table_store_bytes: None,
            http_events_percent: 40,
            table_bytes: BTreeMap::new(),
        }
    }

    /// Bytes for all tables together.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.table_store_bytes
            .unwrap_or(self.memory_limit_bytes / 10 * 6)
    }

    /// Checks that the settings can be met.
    ///
    /// # Errors
    /// [`Error::InvalidBudget`] when the share is over 100% or fixed budgets exceed the total.
    pub fn validate(&self) -> Result<(), Error> {
        if self.http_events_percent > 100 {
            return Err(Error::InvalidBudget {
                reason: format!(
                    "http_events share is {}%; it must be between 0 and 100",
                    self.http_events_percent
                ),
            });
        }
        let fixed: u64 = self.table_bytes.values().sum();
        if fixed > self.total_bytes() {
            return Err(Error::InvalidBudget {
                reason: format!(
                    "per-table budgets add up to {fixed} bytes, more than the {} bytes for all tables",
                    self.total_bytes()
                ),
            });
        }
        Ok(())
    }

    /// The budget of every table in `tables`, which are all the tables that exist.
    #[must_use]
    pub fn split<'a>(&self, tables: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
        let total = self.total_bytes();
        let names: Vec<&str> = tables.into_iter().collect();
        let fixed: u64 = names.iter().filter_map(|n| self.table_bytes.get(*n)).sum();
        let mut free = total.saturating_sub(fixed);
        let mut budgets = BTreeMap::new();
        if names.contains(&HTTP_EVENTS) && !self.table_bytes.contains_key(HTTP_EVENTS) {
            let http = (total / 100 * u64::from(self.http_events_percent)).min(free);
            free -= http;
            budgets.insert(HTTP_EVENTS.to_owned(), http);
        }
        let shared: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !budgets.contains_key(*n) && !self.table_bytes.contains_key(*n))
            .collect();
        let each = free / (shared.len().max(1) as u64);
        for name in names {
            let budget = self
                .table_bytes
                .get(name)
                .copied()
                .or_else(|| budgets.get(name).copied())
                .unwrap_or(each);
            budgets.insert(name.to_owned(), budget);
        }
        budgets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    #[test]
    fn pixie_defaults_for_2gi() {
        let config = BudgetConfig::for_memory_limit(2 * GI);
        assert_eq!(config.total_bytes(), 2 * GI / 10 * 6);
        let budgets = config.split(["http_events", "conn_stats", "process_stats"]);
        let total = config.total_bytes();
        assert_eq!(budgets["http_events"], total / 100 * 40);
        assert_eq!(budgets["conn_stats"], (total - total / 100 * 40) / 2);
        assert_eq!(budgets["conn_stats"], budgets["process_stats"]);
        assert!(budgets.values().sum::<u64>() <= total);
    }

    #[test]
    fn overrides_are_honoured() {
        let mut config = BudgetConfig::for_memory_limit(GI);
        config.table_store_bytes = Some(100 << 20);
        config.http_events_percent = 90;
        config.table_bytes.insert("conn_stats".into(), 1 << 20);
        let budgets = config.split(["http_events", "conn_stats", "custom"]);
        assert_eq!(budgets["http_events"], (100 << 20) / 100 * 90);
        assert_eq!(budgets["conn_stats"], 1 << 20);
        assert_eq!(
            budgets["custom"],
            (100 << 20) - (1 << 20) - (100 << 20) / 100 * 90
        );
    }

    #[test]
    fn invalid_settings_are_explained() {
        let mut config = BudgetConfig::for_memory_limit(GI);
        config.http_events_percent = 120;
        assert!(config.validate().unwrap_err().to_string().contains("120%"));
        let mut config = BudgetConfig::for_memory_limit(GI);
        config.table_bytes.insert("x".into(), 2 * GI);
        assert!(config.validate().is_err());
    }
}
