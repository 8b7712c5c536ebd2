//! `px local`: the PEM on this host, and a live view of what it captures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use px_tablestore::TableStore;
use vizier_pem::{Pem, tables};

use crate::key_file::KeyFile;
use crate::live_view::{HttpRowFormatter, header};
use crate::quantity::human_bytes;

/// How `px local` runs.
#[derive(clap::Args)]
pub(crate) struct LocalArgs {
    #[command(flatten)]
    pem: vizier_pem::PemArgs,
    /// Do not print requests; trace only.
    #[arg(long)]
    quiet: bool,
    /// Stop after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Serve the query API (Pixie's VizierService) here, for `px run` and Pixie's clients.
    #[arg(long, default_value = crate::run::DEFAULT_ADDR)]
    addr: std::net::SocketAddr,
    /// Write the key every API request must carry to this file (mode 0600, readable by
    /// root and the user who ran sudo), where `px run` and `px trace` find it. A new key
    /// is made at every start, unless PX_API_KEY holds one (then no file is written).
    #[arg(long, env = "PX_API_KEY_FILE", value_name = "FILE", default_value = crate::key_file::DEFAULT_KEY_FILE)]
    api_key_file: PathBuf,
    /// Serve the API and the probe service without a key: any user of this machine (or of
    /// the network, beyond loopback) may then read every captured request and load probes.
    #[arg(long)]
    allow_unauthenticated: bool,
    /// On exit, write counters (rows, bytes, CPU time, peak memory) as JSON to this file.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// TLS for the API. On a loopback --addr the API may go without it (nothing leaves
    /// this machine); on any other address it needs a certificate or --disable-tls.
    #[command(flatten)]
    tls: px_api::tls::ServerTlsArgs,
}

impl LocalArgs {
    fn api_tls(&self) -> anyhow::Result<Option<px_api::tls::ServerTls>> {
        if self.tls.tls_cert.is_none() && self.addr.ip().is_loopback() {
            return Ok(None);
        }
        self.tls.server_config()
    }
}

/// The key the API requires (none when told `--allow-unauthenticated`), the file it was
/// written to, and what a caller without it is told.
fn api_key(
    args: &LocalArgs,
) -> anyhow::Result<(
    Option<px_api::secret::SecretString>,
    Option<KeyFile>,
    String,
)> {
    let given = px_api::secret::load("PX_API_KEY", None)?;
    if args.allow_unauthenticated {
        if given.is_some() {
            anyhow::bail!("--allow-unauthenticated and PX_API_KEY contradict each other: drop one");
        }
        return Ok((None, None, String::new()));
    }
    if let Some(key) = given {
        let hint = "the key is the one px local was given in PX_API_KEY".to_owned();
        return Ok((Some(key), None, hint));
    }
    let key = px_api::secret::generate().context("cannot make an API key")?;
    let file = KeyFile::write(&args.api_key_file, &key)?;
    let hint = format!(
        "px local wrote its key to {} (readable by {}): run px as one of them, or pass the key in that file as PX_API_KEY (Pixie's clients: as their token)",
        file.path().display(),
        file.readers()
    );
    Ok((Some(key), Some(file), hint))
}

pub(crate) async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let config = args.pem.to_config()?;
    let tls = args.api_tls()?;
    let tls_note = if tls.is_some() { "TLS" } else { "no TLS" };
    let mut server = tonic::transport::Server::builder();
    let pem = Pem::start(config)?;
    // After the PEM started: a run that fails for want of privileges writes no key.
    let (key, key_file, hint) = api_key(&args)?;
    let check = kelvin::TokenCheck::new(key).with_hint(&hint);
    let store = pem.store();
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = px_api::process::listen(args.addr, "--addr").await?;
    let api = tokio::spawn(
        server
            .add_service(
                kelvin::Kelvin::new(std::sync::Arc::clone(&store))
                    .with_hostname(hostname())
                    .with_metadata(std::sync::Arc::new(LocalMetadata {
                        processes: pem.processes(),
                        hostname: hostname(),
                    }))
                    .with_agents(vec![local_agent()])
                    .with_local_probes({
                        let probes = pem.probes();
                        std::sync::Arc::new(move || probes.list())
                    })
                    .into_server(check.clone()),
            )
            .add_service(tonic::service::interceptor::InterceptedService::new(
                vizier_pem::probes::ProbeControl::new(pem.probes()).into_server(),
                check,
            ))
            .serve_with_incoming_shutdown(px_api::tls::incoming(incoming, tls), async {
                let _ = api_stopped.await;
            }),
    );
    eprintln!("{}", describe_storage(&store, args.pem.memory_limit));
    if cfg!(debug_assertions) {
        // The first run builds in debug mode because that takes minutes, not most of an hour.
        eprintln!(
            "note: this is a debug build, fine for looking around but several times slower \
             per request; `scripts/px-local.sh --release` builds the optimised px (20-45 \
             minutes the first time)."
        );
    }
    let key_note = match &key_file {
        Some(file) => format!(
            "API key in {}, readable by {}",
            file.path().display(),
            file.readers()
        ),
        None if args.allow_unauthenticated => "no API key".to_owned(),
        None => "API key from PX_API_KEY".to_owned(),
    };
    eprintln!(
        "Query API (Pixie's VizierService, {tls_note}, {key_note}) on {}: try `px run px/http_data`.",
        args.addr
    );
    if args.allow_unauthenticated {
        eprintln!(
            "warning: --allow-unauthenticated: any user of {} who reaches {} may read every captured request and load probes",
            if args.addr.ip().is_loopback() {
                "this machine"
            } else {
                "the network"
            },
            args.addr
        );
    }

    let started = Instant::now();
    let deadline = args.duration_secs.map(Duration::from_secs);
    let shutdown = px_api::process::shutdown_signal()?;
    tokio::pin!(shutdown);
    let mut view = LiveView::new(&store, HttpRowFormatter::new(pem.processes()), args.quiet);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                view.refresh(&store, &pem);
                if deadline.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
            }
        }
    }
    let _ = stop_api.send(());
    let _ = api.await;
    let status = pem.stop().await?;
    view.refresh_rows(&store);
    view.finish();
    let summary = Summary::collect(&store, status, started.elapsed());
    eprintln!("{}", summary.human());
    if let Some(path) = &args.stats_file {
        std::fs::write(path, summary.json())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// This machine's name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// The one agent of `px local`: this process's PEM.
fn local_agent() -> pxl::AgentInfo {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    pxl::AgentInfo {
        agent_id: (u128::from(std::process::id()) << 64) | u128::from(now.unsigned_abs()),
        asid: 0,
        hostname: hostname(),
        ip_address: "127.0.0.1".to_owned(),
        agent_state: "AGENT_STATE_HEALTHY".to_owned(),
        create_time_ns: now,
        last_heartbeat_ns: 0,
    }
}

/// What `px local` knows of processes: the PEM's process table, on this one host.
struct LocalMetadata {
    processes: std::sync::Arc<vizier_pem::ProcessTable>,
    hostname: String,
}

impl std::fmt::Debug for LocalMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalMetadata(the PEM's process table)")
    }
}

impl pxl::MetadataLookup for LocalMetadata {
    fn process(&self, upid: u128) -> Option<pxl::ProcessMeta> {
        self.processes.get(upid).map(|p| pxl::ProcessMeta {
            cmdline: p.cmdline,
            pod_uid: p.pod_uid,
            container_id: p.container_id,
            container_name: String::new(),
        })
    }

    fn asid_node(&self, _asid: u32) -> Option<String> {
        Some(self.hostname.clone())
    }
}

fn describe_storage(store: &TableStore, memory_limit: u64) -> String {
    let budgets = store.budgets();
    let tables: Vec<String> = store
        .tables()
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t.schema().name,
                human_bytes(t.stats().budget_bytes)
            )
        })
        .collect();
    format!(
        "px local: tracing TCP connections on this host (pid {} is not traced).\n\
         Data stays in this process's memory, nothing is written to disk: \
         memory limit {}, tables {} ({}); the oldest rows are dropped when a table is full.\n\
         Press Ctrl-C to stop.",
        std::process::id(),
        human_bytes(memory_limit),
        human_bytes(budgets.total_bytes()),
        tables.join(", ")
    )
}

/// New requests above, a status line below that is redrawn in place.
struct LiveView {
    quiet: bool,
    next_row: u64,
    printed: u64,
    formatter: HttpRowFormatter,
    status: ProgressBar,
}

impl LiveView {
    fn new(store: &TableStore, formatter: HttpRowFormatter, quiet: bool) -> Self {
        let status = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        status.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let next_row = store
            .table(tables::HTTP_EVENTS)
            .map_or(0, |t| t.stats().rows_added);
        let view = Self {
            quiet,
            next_row,
            printed: 0,
            formatter,
            status,
        };
        view.print(&header());
        view
    }

    fn print(&self, line: &str) {
        if self.quiet {
            return;
        }
        if self.status.is_hidden() {
            println!("{line}");
        } else {
            self.status.println(line);
        }
    }

    fn refresh(&mut self, store: &TableStore, pem: &Pem) {
        self.refresh_rows(store);
        let status = pem.status();
        self.status.set_message(format!(
            "{} requests · {} connections open · tables {} · Ctrl-C to stop",
            self.printed,
            status.tracker.connections_tracked,
            human_bytes(store.bytes_held()),
        ));
        self.status.tick();
    }

    fn refresh_rows(&mut self, store: &TableStore) {
        if self.quiet {
            return;
        }
        let Some(table) = store.table(tables::HTTP_EVENTS) else {
            return;
        };
        let read = table.read_since(self.next_row);
        self.next_row = read.next_row;
        for batch in &read.batches {
            for line in self.formatter.lines(batch) {
                self.print(&line);
                self.printed += 1;
            }
        }
    }

    fn finish(&self) {
        self.status.finish_and_clear();
    }
}

/// What `px local` reports when it stops.
struct Summary {
    elapsed: Duration,
    status: vizier_pem::PemStatus,
    tables: Vec<(String, px_tablestore::TableStats)>,
    cpu_seconds: f64,
    peak_rss_bytes: u64,
}

impl Summary {
    fn collect(store: &TableStore, status: vizier_pem::PemStatus, elapsed: Duration) -> Self {
        let tables = store
            .tables()
            .iter()
            .map(|t| (t.schema().name.clone(), t.stats()))
            .collect();
        let usage = resource_usage();
        Self {
            elapsed,
            status,
            tables,
            cpu_seconds: usage.0,
            peak_rss_bytes: usage.1,
        }
    }

    fn human(&self) -> String {
        let mut text = format!(
            "px local ran {:.1}s, used {:.2}s of CPU, peak memory {}.",
            self.elapsed.as_secs_f64(),
            self.cpu_seconds,
            human_bytes(self.peak_rss_bytes)
        );
        let s = &self.status;
        text.push_str(&format!(
            "\n  {} kernel events, {} lost in the kernel (ring buffer full), {} connections \
             opened, {} not a parsed protocol, {} parser bytes skipped, {} unpaired messages",
            s.events_received,
            s.kernel_drops,
            s.tracker.connections_opened,
            s.tracker.connections_muted,
            s.tracker.parser_bytes_skipped,
            s.tracker.messages_unpaired
        ));
        for (name, stats) in &self.tables {
            text.push_str(&format!(
                "\n  {name}: {} rows captured, {} held ({}), {} dropped to stay within {}",
                stats.rows_added,
                stats.rows_held,
                human_bytes(stats.bytes_held),
                stats.rows_expired,
                human_bytes(stats.budget_bytes)
            ));
        }
        text
    }

    fn json(&self) -> String {
        let tables: Vec<String> = self
            .tables
            .iter()
            .map(|(name, s)| {
                format!(
                    "\"{name}\":{{\"rows_added\":{},\"rows_held\":{},\"rows_expired\":{},\"bytes_held\":{},\"budget_bytes\":{}}}",
                    s.rows_added, s.rows_held, s.rows_expired, s.bytes_held, s.budget_bytes
                )
            })
            .collect();
        let s = &self.status;
        format!(
            "{{\"elapsed_seconds\":{:.3},\"cpu_seconds\":{:.3},\"peak_rss_bytes\":{},\
             \"events_received\":{},\"kernel_drops\":{},\"connections_opened\":{},\
             \"connections_muted\":{},\"parser_bytes_skipped\":{},\"messages_unpaired\":{},\
             \"tables\":{{{}}}}}\n",
            self.elapsed.as_secs_f64(),
            self.cpu_seconds,
            self.peak_rss_bytes,
            s.events_received,
            s.kernel_drops,
            s.tracker.connections_opened,
            s.tracker.connections_muted,
            s.tracker.parser_bytes_skipped,
            s.tracker.messages_unpaired,
            tables.join(",")
        )
    }
}

/// (user + system CPU seconds, peak resident bytes) of this process.
fn resource_usage() -> (f64, u64) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage struct through a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return (0.0, 0);
    }
    // SAFETY: getrusage succeeded and filled the struct.
    let usage = unsafe { usage.assume_init() };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let peak = u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024;
    (secs(usage.ru_utime) + secs(usage.ru_stime), peak)
}
