//! A stand-in PEM for the operator's end-to-end tests: it serves the PEM's
//! `ProbeService` (the operator/PEM interface of `api/proto/pem.proto`) and keeps
//! probes and retention budgets in memory, loading nothing into the kernel.
//!
//! What it reports is a model, not a measurement: an applied probe is `RUNNING` at
//! once (or `FAILED` with the configured reason), and each table holds half its budget
//! since the process started. The real `vizier-pem` implements the same service; this
//! stand-in lets the operator be tested before, and without, the real loader.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use px_api::pem::probe_service_server::{ProbeService, ProbeServiceServer};
use px_api::pem::{
    GetRetentionRequest, ListProbesRequest, ListProbesResponse, ProbePhase, ProbeSpec, ProbeState,
    RemoveProbeRequest, RetentionReport, SetRetentionRequest, TableBudget, TableHeld,
};
use tonic::{Request, Response, Status};

/// Tables every PEM has, with a default budget.
const BUILT_IN_TABLES: [&str; 4] = [
    "conn_stats",
    "http_events",
    "network_stats",
    "process_stats",
];
/// Share of the memory limit all tables together get by default (Pixie's 60%).
const DEFAULT_DATA_PERCENT: u64 = 60;

/// How the stand-in is set up.
#[derive(Clone, Debug)]
pub struct StandinConfig {
    /// The node this PEM runs on (for messages).
    pub node: String,
    /// The PEM's memory limit in bytes; table budgets are derived from it.
    pub memory_limit_bytes: u64,
    /// When set, every ApplyProbe fails with this reason and message.
    pub fail: Option<ProbeFailure>,
}

/// A failure the stand-in reports for every probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    /// CamelCase reason, e.g. `SymbolNotFound`.
    pub reason: String,
    /// What went wrong.
    pub message: String,
}

impl ProbeFailure {
    /// Parses `Reason: message` (`SymbolNotFound: symbol main.handler not found`); a
    /// text without a colon is a reason alone.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let (reason, message) = text.split_once(':').unwrap_or((text, ""));
        Some(Self {
            reason: reason.trim().to_string(),
            message: message.trim().to_string(),
        })
    }

    /// The failure configured for `node`: `fail` applies to every node unless
    /// `only_nodes` (comma-separated node names) is set and does not name `node`.
    pub fn for_node(fail: Option<&str>, only_nodes: Option<&str>, node: &str) -> Option<Self> {
        let applies = match only_nodes.map(str::trim).filter(|n| !n.is_empty()) {
            Some(list) => list.split(',').any(|n| n.trim() == node),
            None => true,
        };
        if applies {
            fail.and_then(Self::parse)
        } else {
            None
        }
    }
}

#[derive(Default)]
struct State {
    probes: BTreeMap<String, ProbeState>,
    expires: BTreeMap<String, i64>,
    budgets: Vec<TableBudget>,
}

/// The in-memory `ProbeService`.
#[derive(Clone)]
pub struct StandinPem {
    config: Arc<StandinConfig>,
    started_ns: i64,
    state: Arc<Mutex<State>>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

impl StandinPem {
    /// A stand-in with no probe and no override.
    pub fn new(config: StandinConfig) -> Self {
        Self {
            config: Arc::new(config),
            started_ns: now_ns(),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state of a probe just applied.
    fn apply(&self, spec: &ProbeSpec) -> ProbeState {
        let mut state = ProbeState {
            id: spec.id.clone(),
            name: spec.name.clone(),
            generation: spec.generation,
            ..ProbeState::default()
        };
        match serde_json::from_str::<px_crds::TracepointSpec>(&spec.spec_json) {
            Err(e) => {
                state.phase = ProbePhase::Failed.into();
                state.reason = "InvalidSpec".into();
                state.message = format!("spec_json is not a Tracepoint spec: {e}");
            }
            Ok(tp) => {
                state.table = tp.table;
                match &self.config.fail {
                    Some(f) => {
                        state.phase = ProbePhase::Failed.into();
                        state.reason.clone_from(&f.reason);
                        state.message.clone_from(&f.message);
                    }
                    None => {
                        state.phase = ProbePhase::Running.into();
                        state.attachments = 1;
                    }
                }
            }
        }
        state
    }

    /// Marks probes whose TTL ran out as terminated, as the real PEM removes them.
    fn expire(state: &mut State, now: i64) {
        for (id, at) in &state.expires {
            let due = *at > 0 && *at <= now;
            if let Some(p) = state.probes.get_mut(id).filter(|_| due)
                && p.phase != i32::from(ProbePhase::Terminated)
            {
                p.phase = ProbePhase::Terminated.into();
                p.reason = "Expired".into();
                p.message = "the probe's TTL ran out".into();
            }
        }
    }

    fn report(&self, state: &State) -> RetentionReport {
        retention_report(
            self.config.memory_limit_bytes,
            &state.budgets,
            state
                .probes
                .values()
                .filter(|p| p.phase == i32::from(ProbePhase::Running))
                .map(|p| p.table.as_str()),
            self.started_ns,
            now_ns(),
        )
    }
}

/// The modelled retention report: every built-in table, every running probe's table and
/// every table with an override; the budget from the override or the default split of
/// 60% of the memory limit; each table half full; the oldest row from the process start
/// (or the age limit, when shorter).
pub fn retention_report<'a>(
    memory_limit: u64,
    budgets: &'a [TableBudget],
    probe_tables: impl Iterator<Item = &'a str>,
    started_ns: i64,
    now_ns: i64,
) -> RetentionReport {
    let mut names: Vec<&str> = BUILT_IN_TABLES.to_vec();
    names.extend(probe_tables);
    names.extend(budgets.iter().map(|b| b.table.as_str()));
    names.sort_unstable();
    names.dedup();
    let count = u64::try_from(names.len()).unwrap_or(1).max(1);
    let default_budget = percent_of(memory_limit, DEFAULT_DATA_PERCENT) / count;
    let tables = names
        .into_iter()
        .map(|table| {
            let own = budgets.iter().find(|b| b.table == table);
            let budget = match own {
                Some(b) if b.max_bytes > 0 => b.max_bytes,
                Some(b) if b.memory_percent > 0 => {
                    percent_of(memory_limit, u64::from(b.memory_percent))
                }
                _ => default_budget,
            };
            let max_age_ns = own.map_or(0, |b| b.max_age_ns);
            let oldest = if max_age_ns > 0 {
                started_ns.max(now_ns.saturating_sub(max_age_ns))
            } else {
                started_ns
            };
            TableHeld {
                table: table.to_string(),
                budget_bytes: budget,
                bytes_held: budget / 2,
                rows_held: budget / 2 / 100,
                oldest_time_ns: oldest,
                max_age_ns,
            }
        })
        .collect();
    RetentionReport {
        tables,
        memory_limit_bytes: memory_limit,
    }
}

/// `percent`% of `bytes`, exactly (50% of 1Gi is 512Mi), without overflow.
fn percent_of(bytes: u64, percent: u64) -> u64 {
    u64::try_from(u128::from(bytes) * u128::from(percent) / 100).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl ProbeService for StandinPem {
    async fn apply_probe(&self, req: Request<ProbeSpec>) -> Result<Response<ProbeState>, Status> {
        let spec = req.into_inner();
        if spec.id.is_empty() {
            return Err(Status::invalid_argument("a probe needs an id"));
        }
        let mut state = self.lock();
        if let Some(old) = state.probes.get(&spec.id) {
            let live = old.phase != i32::from(ProbePhase::Terminated);
            if live && old.generation == spec.generation {
                return Ok(Response::new(old.clone()));
            }
        }
        let applied = self.apply(&spec);
        tracing::info!(node = %self.config.node, id = %spec.id, name = %spec.name, phase = applied.phase, "ApplyProbe");
        state
            .expires
            .insert(spec.id.clone(), spec.expires_at_unix_ns);
        state.probes.insert(spec.id.clone(), applied.clone());
        Self::expire(&mut state, now_ns());
        let current = state.probes.get(&spec.id).cloned().unwrap_or(applied);
        Ok(Response::new(current))
    }

    async fn remove_probe(
        &self,
        req: Request<RemoveProbeRequest>,
    ) -> Result<Response<ProbeState>, Status> {
        let id = req.into_inner().id;
        let mut state = self.lock();
        tracing::info!(node = %self.config.node, %id, "RemoveProbe");
        // Kept, as TERMINATED, so a test can tell a removed probe from one never applied.
        let entry = state
            .probes
            .entry(id.clone())
            .or_insert_with(|| ProbeState {
                id,
                ..ProbeState::default()
            });
        entry.phase = ProbePhase::Terminated.into();
        entry.attachments = 0;
        Ok(Response::new(entry.clone()))
    }

    async fn list_probes(
        &self,
        _req: Request<ListProbesRequest>,
    ) -> Result<Response<ListProbesResponse>, Status> {
        let mut state = self.lock();
        Self::expire(&mut state, now_ns());
        Ok(Response::new(ListProbesResponse {
            probes: state.probes.values().cloned().collect(),
        }))
    }

    async fn set_retention(
        &self,
        req: Request<SetRetentionRequest>,
    ) -> Result<Response<RetentionReport>, Status> {
        let tables = req.into_inner().tables;
        if let Some(bad) = tables.iter().find(|t| t.memory_percent > 90) {
            return Err(Status::invalid_argument(format!(
                "{}: memory_percent {} is above 90",
                bad.table, bad.memory_percent
            )));
        }
        let mut state = self.lock();
        tracing::info!(node = %self.config.node, tables = tables.len(), "SetRetention");
        state.budgets = tables;
        Ok(Response::new(self.report(&state)))
    }

    async fn get_retention(
        &self,
        _req: Request<GetRetentionRequest>,
    ) -> Result<Response<RetentionReport>, Status> {
        let state = self.lock();
        Ok(Response::new(self.report(&state)))
    }
}

/// Serves the stand-in on `addr` until `shutdown` resolves.
/// Serves on `addr`, over TLS when `tls` is given (with its client CA, mutual TLS, as
/// the real PEM does), until `shutdown`.
///
/// # Errors
/// When `addr` cannot be bound or the server fails.
pub async fn serve(
    addr: SocketAddr,
    tls: Option<px_api::tls::ServerTls>,
    config: StandinConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let incoming = px_api::process::listen(addr, "--listen").await?;
    tonic::transport::Server::builder()
        .add_service(ProbeServiceServer::new(StandinPem::new(config)))
        .serve_with_incoming_shutdown(px_api::tls::incoming(incoming, tls), shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_failure_applies_to_the_nodes_named() {
        let fail = Some("SymbolNotFound: symbol main.handler not found in /app/server");
        let f = ProbeFailure::for_node(fail, Some("node-b"), "node-b").unwrap();
        assert_eq!(f.reason, "SymbolNotFound");
        assert_eq!(f.message, "symbol main.handler not found in /app/server");
        assert_eq!(ProbeFailure::for_node(fail, Some("node-b"), "node-a"), None);
        assert!(ProbeFailure::for_node(fail, None, "node-a").is_some());
        assert_eq!(ProbeFailure::for_node(None, None, "node-a"), None);
    }

    #[test]
    fn budgets_come_from_the_overrides_or_the_default_split() {
        let budgets = [
            TableBudget {
                table: "http_events".into(),
                memory_percent: 50,
                ..TableBudget::default()
            },
            TableBudget {
                table: "opens".into(),
                max_bytes: 1000,
                max_age_ns: 5,
                ..TableBudget::default()
            },
        ];
        let r = retention_report(1000, &budgets, ["calls"].into_iter(), 10, 100);
        let by: BTreeMap<&str, &TableHeld> =
            r.tables.iter().map(|t| (t.table.as_str(), t)).collect();
        assert_eq!(by.len(), 6);
        assert_eq!(by["http_events"].budget_bytes, 500);
        assert_eq!(by["opens"].budget_bytes, 1000);
        assert_eq!(by["opens"].oldest_time_ns, 95);
        assert_eq!(by["calls"].budget_bytes, 600 / 6);
        assert_eq!(by["conn_stats"].oldest_time_ns, 10);
        assert_eq!(by["conn_stats"].bytes_held, 50);
    }
}
