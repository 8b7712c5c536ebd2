//! `px.internal.pem.v1.ProbeService`: how the operator (or `px trace`) loads and removes
//! this node's probes and sets its table retention.

use std::sync::Arc;

use px_api::pem::probe_service_server::{ProbeService, ProbeServiceServer};
use px_api::pem::{
    GetRetentionRequest, ListProbesRequest, ListProbesResponse, ProbeSpec, ProbeState,
    RemoveProbeRequest, RetentionReport, SetRetentionRequest, TableBudget, TableHeld,
};
use px_tablestore::BudgetConfig;
use tonic::{Request, Response, Status};

use super::manager::ProbeManager;

/// The service over a node's probe manager and table store.
#[derive(Clone)]
pub struct ProbeControl {
    manager: Arc<ProbeManager>,
    /// The budgets before any override: what an empty SetRetention returns to.
    defaults: BudgetConfig,
}

impl ProbeControl {
    /// Serves `manager`; the store's budgets now are the defaults overrides start from.
    #[must_use]
    pub fn new(manager: Arc<ProbeManager>) -> Self {
        let defaults = manager.store().budgets();
        Self { manager, defaults }
    }

    /// The tonic service.
    #[must_use]
    pub fn into_server(self) -> ProbeServiceServer<Self> {
        ProbeServiceServer::new(self)
    }

    fn report(&self) -> RetentionReport {
        let ages = self.manager.max_ages();
        let store = self.manager.store();
        RetentionReport {
            memory_limit_bytes: store.budgets().memory_limit_bytes,
            tables: store
                .tables()
                .iter()
                .map(|t| {
                    let stats = t.stats();
                    let name = t.schema().name.clone();
                    TableHeld {
                        max_age_ns: ages.get(&name).copied().unwrap_or(0),
                        table: name,
                        budget_bytes: stats.budget_bytes,
                        bytes_held: stats.bytes_held,
                        rows_held: stats.rows_held,
                        oldest_time_ns: stats.oldest_time_ns.unwrap_or(0),
                    }
                })
                .collect(),
        }
    }
}

/// The budgets `tables` asks for on top of `defaults`.
pub(crate) fn budgets_for(
    defaults: &BudgetConfig,
    tables: &[TableBudget],
) -> Result<BudgetConfig, String> {
    let mut budgets = defaults.clone();
    for t in tables {
        let bytes = if t.max_bytes > 0 {
            t.max_bytes
        } else if t.memory_percent > 0 {
            if t.memory_percent > 90 {
                return Err(format!(
                    "table {}: memoryPercent {} is over 90",
                    t.table, t.memory_percent
                ));
            }
            defaults.memory_limit_bytes / 100 * u64::from(t.memory_percent)
        } else {
            continue;
        };
        budgets.table_bytes.insert(t.table.clone(), bytes);
    }
    budgets.validate().map_err(|e| e.to_string())?;
    Ok(budgets)
}

#[tonic::async_trait]
impl ProbeService for ProbeControl {
    async fn apply_probe(
        &self,
        request: Request<ProbeSpec>,
    ) -> Result<Response<ProbeState>, Status> {
        let manager = Arc::clone(&self.manager);
        let spec = request.into_inner();
        // Attaching reads the binary's symbols: keep it off the async workers.
        let state = tokio::task::spawn_blocking(move || manager.apply(spec))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(state))
    }

    async fn remove_probe(
        &self,
        request: Request<RemoveProbeRequest>,
    ) -> Result<Response<ProbeState>, Status> {
        let manager = Arc::clone(&self.manager);
        let id = request.into_inner().id;
        let state = tokio::task::spawn_blocking(move || manager.remove(&id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(state))
    }

    async fn list_probes(
        &self,
        _: Request<ListProbesRequest>,
    ) -> Result<Response<ListProbesResponse>, Status> {
        Ok(Response::new(ListProbesResponse {
            probes: self.manager.list(),
        }))
    }

    async fn set_retention(
        &self,
        request: Request<SetRetentionRequest>,
    ) -> Result<Response<RetentionReport>, Status> {
        let tables = request.into_inner().tables;
        let budgets = budgets_for(&self.defaults, &tables).map_err(Status::invalid_argument)?;
        self.manager
            .store()
            .set_budgets(budgets)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.manager.set_max_ages(
            tables
                .iter()
                .filter(|t| t.max_age_ns > 0)
                .map(|t| (t.table.clone(), t.max_age_ns))
                .collect(),
        );
        Ok(Response::new(self.report()))
    }

    async fn get_retention(
        &self,
        _: Request<GetRetentionRequest>,
    ) -> Result<Response<RetentionReport>, Status> {
        Ok(Response::new(self.report()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_take_bytes_or_a_share_of_the_limit() {
        let defaults = BudgetConfig::for_memory_limit(1000 << 20);
        let tables = [
            TableBudget {
                table: "http_events".into(),
                max_bytes: 100 << 20,
                ..TableBudget::default()
            },
            TableBudget {
                table: "opens".into(),
                memory_percent: 5,
                ..TableBudget::default()
            },
            TableBudget {
                table: "aged".into(),
                max_age_ns: 60_000_000_000,
                ..TableBudget::default()
            },
        ];
        let b = budgets_for(&defaults, &tables).expect("valid");
        assert_eq!(b.table_bytes["http_events"], 100 << 20);
        assert_eq!(b.table_bytes["opens"], (1000 << 20) / 100 * 5);
        assert!(
            !b.table_bytes.contains_key("aged"),
            "an age limit alone keeps the default budget"
        );
    }

    #[test]
    fn budgets_over_the_total_are_refused() {
        let defaults = BudgetConfig::for_memory_limit(100 << 20);
        let tables = [TableBudget {
            table: "t".into(),
            max_bytes: 1 << 30,
            ..TableBudget::default()
        }];
        let err = budgets_for(&defaults, &tables).expect_err("too big");
        assert!(err.contains("more than"), "{err}");
    }
}
