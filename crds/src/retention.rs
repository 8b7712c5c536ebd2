//! `DataRetention`: per-table memory budgets and maximum ages, overriding the defaults
//! the PEMs derive from the Vizier's `pemMemoryLimit`; its status says how much history
//! each table really holds.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tracepoint::DURATION_PATTERN;
use crate::vizier::MEMORY_QUANTITY_PATTERN;

/// Per-table retention for the Vizier of this namespace.
///
/// Export to long-term storage will be a sibling of `tables` (an `export` section) in a
/// later version; it is not accepted yet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "px.dev",
    version = "v1alpha1",
    kind = "DataRetention",
    namespaced,
    status = "DataRetentionStatus",
    shortname = "pxdr",
    category = "px",
    derive = "PartialEq",
    derive = "Default",
    doc = "A DataRetention, in the Vizier's namespace, sets per-table byte budgets and maximum ages for the PEMs' in-memory tables. The PEMs pick it up without a restart.",
    printcolumn(
        name = "Tables",
        type_ = "integer",
        json_path = ".status.tableCount",
        description = "Tables with a budget"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DataRetentionSpec {
    /// Budgets of the tables named here; other tables keep their default budget.
    #[schemars(length(max = 64))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["table"],
        "x-kubernetes-validations" = [
            {"rule": "self.all(t, self.exists_one(u, u.table == t.table))", "message": "each table may appear only once"}
        ]
    ))]
    #[serde(default)]
    pub tables: Vec<TableRetention>,
}

impl DataRetentionSpec {
    /// The sum of the `memoryPercent` shares; more than 100 cannot be honoured.
    pub fn memory_percent_total(&self) -> u32 {
        self.tables
            .iter()
            .filter_map(|t| t.memory_percent)
            .map(u32::from)
            .sum()
    }
}

/// The retention of one table.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.maxBytes) && has(self.memoryPercent))", "message": "set maxBytes or memoryPercent, not both"},
    {"rule": "has(self.maxBytes) || has(self.memoryPercent) || has(self.maxAge)", "message": "set at least one of maxBytes, memoryPercent or maxAge"}
]))]
pub struct TableRetention {
    /// The table, e.g. `http_events` or a Tracepoint's table.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z][a-z0-9_.]*$"))]
    pub table: String,
    /// Bytes each PEM may hold for this table (a quantity, e.g. `512Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "memory_quantity")]
    pub max_bytes: Option<Quantity>,
    /// Share of the PEM memory limit for this table, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub memory_percent: Option<u8>,
    /// Records older than this are dropped even when the budget has room (`24h`, `90m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub max_age: Option<String>,
}

impl TableRetention {
    /// `maxAge` as a duration, if set and well formed.
    pub fn max_age_duration(&self) -> Option<std::time::Duration> {
        self.max_age.as_deref().and_then(crate::parse_duration)
    }
}

/// An int-or-string quantity that must be a non-negative memory size.
fn memory_quantity(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A byte count or a Kubernetes quantity such as 512Mi.",
        "x-kubernetes-int-or-string": true,
        "pattern": MEMORY_QUANTITY_PATTERN
    })
}

/// What the PEMs report about each table.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataRetentionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Ready` (every PEM applied the budgets), `Reconciling`,
    /// `Stalled` (e.g. the shares add up to more than 100%).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Number of entries in `tables`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_count: Option<i32>,
    /// Per table: budget, bytes held and how old the oldest record still held is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["table"]))]
    pub tables: Vec<TableRetentionStatus>,
}

/// What the PEMs hold for one table.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableRetentionStatus {
    /// The table.
    pub table: String,
    /// The byte budget of the table on each PEM.
    pub budget_bytes: i64,
    /// Bytes held for the table, summed over the PEMs.
    pub bytes_held: i64,
    /// Age of the oldest record still held on any PEM, as a duration (`5h12m0s`): how
    /// much history the table really keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_record_age: Option<String>,
    /// PEMs that reported this table.
    #[serde(default)]
    pub nodes: i32,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn shares_add_up_and_ages_parse() {
        let spec: DataRetentionSpec = serde_json::from_value(serde_json::json!({
            "tables": [
                {"table": "http_events", "memoryPercent": 60, "maxAge": "24h"},
                {"table": "conn_stats", "memoryPercent": 50},
                {"table": "opens", "maxBytes": "64Mi"},
            ]
        }))
        .unwrap();
        assert_eq!(spec.memory_percent_total(), 110);
        assert_eq!(
            spec.tables[0].max_age_duration(),
            Some(std::time::Duration::from_secs(86400))
        );
        assert_eq!(spec.tables[1].max_age_duration(), None);
        assert_eq!(spec.tables[2].max_bytes, Some(Quantity("64Mi".into())));
    }
}
