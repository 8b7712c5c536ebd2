//! `px.GetTracepointStatus()`: the probe states the PEMs report, one row per Tracepoint.

use std::collections::BTreeMap;

use px_api::pem::{ProbePhase, ProbeState};

/// Where the probe states come from in `px local`: the PEM in this process.
pub type LocalProbes = std::sync::Arc<dyn Fn() -> Vec<ProbeState> + Send + Sync>;

/// One row per Tracepoint from what each node (by name) reports: RUNNING when it runs
/// on every node that reported it, FAILED when it failed on any, PENDING while some
/// node is still loading it, TERMINATED when every node removed it. The status names
/// the nodes that did not run it and why; nodes whose PEM did not answer are listed
/// under `unreachable`.
#[must_use]
pub fn roll_up(nodes: &[(String, Result<Vec<ProbeState>, String>)]) -> Vec<pxl::TracepointInfo> {
    let mut by_id: BTreeMap<&str, Vec<(&str, &ProbeState)>> = BTreeMap::new();
    let mut unreachable = Vec::new();
    for (node, states) in nodes {
        match states {
            Ok(states) => {
                for state in states {
                    by_id.entry(&state.id).or_default().push((node, state));
                }
            }
            Err(e) => unreachable.push(serde_json::json!({"node": node, "error": e})),
        }
    }
    by_id
        .into_iter()
        .map(|(id, reports)| {
            let phases: Vec<ProbePhase> = reports
                .iter()
                .map(|(_, s)| ProbePhase::try_from(s.phase).unwrap_or(ProbePhase::Unspecified))
                .collect();
            let state = if phases.contains(&ProbePhase::Failed) {
                "FAILED_STATE"
            } else if phases.iter().all(|p| *p == ProbePhase::Running) {
                "RUNNING_STATE"
            } else if phases.iter().all(|p| *p == ProbePhase::Terminated) {
                "TERMINATED_STATE"
            } else {
                "PENDING_STATE"
            };
            let problems: Vec<serde_json::Value> = reports
                .iter()
                .filter(|(_, s)| s.phase != ProbePhase::Running as i32)
                .map(|(node, s)| {
                    serde_json::json!({"node": node, "reason": s.reason, "message": s.message})
                })
                .collect();
            let (name, table) = reports
                .first()
                .map(|(_, s)| (s.name.clone(), s.table.clone()))
                .unwrap_or_default();
            pxl::TracepointInfo {
                tracepoint_id: id_number(id),
                name,
                state: state.to_owned(),
                status: serde_json::json!({"nodes": problems, "unreachable": unreachable})
                    .to_string(),
                output_tables: serde_json::json!([table]).to_string(),
            }
        })
        .collect()
}

/// A Kubernetes UID is a UUID: its 128 bits. Other ids (`local/<name>`) get a stable hash.
fn id_number(id: &str) -> u128 {
    uuid::Uuid::parse_str(id).map_or_else(
        |_| {
            // FNV-1a, 128-bit: stable across runs, unlike the std hasher.
            let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
            for b in id.bytes() {
                hash ^= u128::from(b);
                hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
            }
            hash
        },
        |u| u.as_u128(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, phase: ProbePhase, reason: &str) -> ProbeState {
        let mut s = ProbeState {
            id: id.into(),
            name: format!("ns/{id}"),
            table: "t".into(),
            reason: reason.into(),
            ..ProbeState::default()
        };
        s.set_phase(phase);
        s
    }

    #[test]
    fn one_row_per_tracepoint_with_the_worst_state_and_who_failed() {
        let uid = "0b9f6c1e-3a55-4c1c-9b3e-2f0d3f7d1a10";
        let nodes = vec![
            (
                "a".to_owned(),
                Ok(vec![
                    state(uid, ProbePhase::Running, ""),
                    state("x", ProbePhase::Running, ""),
                ]),
            ),
            (
                "b".to_owned(),
                Ok(vec![
                    state(uid, ProbePhase::Failed, "SymbolNotFound"),
                    state("x", ProbePhase::Running, ""),
                ]),
            ),
            ("c".to_owned(), Err("PEM c is unavailable".to_owned())),
        ];
        let rows = roll_up(&nodes);
        assert_eq!(rows.len(), 2);
        let failed = rows
            .iter()
            .find(|r| r.name == format!("ns/{uid}"))
            .expect("row");
        assert_eq!(failed.state, "FAILED_STATE");
        assert!(
            failed.status.contains("SymbolNotFound") && failed.status.contains("\"b\""),
            "{}",
            failed.status
        );
        assert!(failed.status.contains("PEM c is unavailable"));
        assert_eq!(
            failed.tracepoint_id,
            uuid::Uuid::parse_str(uid).expect("uuid").as_u128()
        );
        assert_eq!(
            rows.iter().find(|r| r.name == "ns/x").expect("row").state,
            "RUNNING_STATE"
        );
        assert_eq!(id_number("local/x"), id_number("local/x"));
    }
}
