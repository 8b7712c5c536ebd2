//! `px trace`: the Tracepoint YAML a cluster takes with `kubectl apply`, loaded into the
//! PEM of `px local` (through its probe service), listed and removed.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use comfy_table::Table;
use px_api::pem::probe_service_client::ProbeServiceClient;
use px_api::pem::{ListProbesRequest, ProbePhase, ProbeSpec, ProbeState, RemoveProbeRequest};
use px_crds::Tracepoint;

use crate::api_client::ApiArgs;

#[derive(clap::Args)]
pub(crate) struct TraceArgs {
    #[command(subcommand)]
    command: TraceCommand,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(clap::Subcommand)]
enum TraceCommand {
    /// Load the Tracepoint in a YAML file (the same a cluster takes with `kubectl apply`);
    /// applying it again with a changed spec replaces the probe.
    Apply {
        /// The Tracepoint manifest.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List the probes with their state, table, events and drops.
    List,
    /// Remove a Tracepoint: its probe is detached and its table dropped.
    Delete {
        /// The Tracepoint's metadata.name.
        name: String,
    },
}

pub(crate) async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let mut client = ProbeServiceClient::new(args.api.connect().await?);
    match args.command {
        TraceCommand::Apply { file } => {
            let spec = probe_spec(&file)?;
            let mut request = tonic::Request::new(spec);
            args.api.authorize(&mut request)?;
            let state = client
                .apply_probe(request)
                .await
                .map_err(crate::api_client::refused)?
                .into_inner();
            println!("{}", describe(&state));
            if state.phase == ProbePhase::Failed as i32 {
                bail!(
                    "the probe did not load: {}: {}",
                    state.reason,
                    state.message
                );
            }
        }
        TraceCommand::List => {
            let mut request = tonic::Request::new(ListProbesRequest {});
            args.api.authorize(&mut request)?;
            let probes = client
                .list_probes(request)
                .await
                .map_err(crate::api_client::refused)?
                .into_inner()
                .probes;
            println!("{}", list_table(&probes));
        }
        TraceCommand::Delete { name } => {
            let mut request = tonic::Request::new(RemoveProbeRequest {
                id: local_id(&name),
            });
            args.api.authorize(&mut request)?;
            let state = client
                .remove_probe(request)
                .await
                .map_err(crate::api_client::refused)?
                .into_inner();
            println!("{}", describe(&state));
        }
    }
    Ok(())
}

/// The id a Tracepoint has in `px local`, where there is no UID.
fn local_id(name: &str) -> String {
    format!("local/{name}")
}

/// A Tracepoint manifest as the PEM takes it.
fn probe_spec(file: &std::path::Path) -> anyhow::Result<ProbeSpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let tracepoint: Tracepoint = serde_norway::from_str(&text).with_context(|| {
        format!(
            "{} is not a Tracepoint manifest (apiVersion: px.dev/v1alpha1, kind: Tracepoint)",
            file.display()
        )
    })?;
    let name = tracepoint
        .metadata
        .name
        .clone()
        .context("the Tracepoint has no metadata.name")?;
    if tracepoint.spec.target.pods.is_some() {
        bail!(
            "Tracepoint {name} targets pods, which need Kubernetes; in `px local` use \
             `target: {{host: {{executable: NAME}}}}`"
        );
    }
    let spec_json = serde_json::to_string(&tracepoint.spec)?;
    let expires_at_unix_ns = match tracepoint.spec.ttl_duration() {
        Some(ttl) => {
            let at = SystemTime::now().duration_since(UNIX_EPOCH)? + ttl;
            i64::try_from(at.as_nanos()).unwrap_or(i64::MAX)
        }
        None => 0,
    };
    let namespace = tracepoint
        .metadata
        .namespace
        .as_deref()
        .unwrap_or("default");
    Ok(ProbeSpec {
        id: local_id(&name),
        name: format!("{namespace}/{name}"),
        // The spec's own fingerprint: the same file applied twice changes nothing, an
        // edited one replaces the probe.
        generation: fingerprint(&spec_json),
        spec_json,
        expires_at_unix_ns,
        pods: Vec::new(),
        pod_target: false,
    })
}

fn fingerprint(text: &str) -> i64 {
    // FNV-1a: stable across runs and processes.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash >> 1).cast_signed()
}

fn phase_name(state: &ProbeState) -> &'static str {
    match ProbePhase::try_from(state.phase).unwrap_or(ProbePhase::Unspecified) {
        ProbePhase::Pending => "Pending",
        ProbePhase::Running => "Running",
        ProbePhase::Failed => "Failed",
        ProbePhase::Terminated => "Terminated",
        ProbePhase::Unspecified => "Unknown",
    }
}

fn describe(state: &ProbeState) -> String {
    let name = state.id.strip_prefix("local/").unwrap_or(&state.id);
    let mut line = format!("tracepoint/{name}: {}", phase_name(state));
    if !state.table.is_empty() {
        line.push_str(&format!(" (table {})", state.table));
    }
    if !state.reason.is_empty() || !state.message.is_empty() {
        line.push_str(&format!(": {} {}", state.reason, state.message));
    }
    line.trim_end().to_owned()
}

fn list_table(probes: &[ProbeState]) -> Table {
    let mut table = Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(["NAME", "TABLE", "STATE", "EVENTS", "DROPPED", "REASON"]);
    for p in probes {
        table.add_row([
            p.id.strip_prefix("local/").unwrap_or(&p.id).to_owned(),
            p.table.clone(),
            phase_name(p).to_owned(),
            p.events.to_string(),
            p.dropped.to_string(),
            format!("{} {}", p.reason, p.message).trim().to_owned(),
        ]);
    }
    table
}
