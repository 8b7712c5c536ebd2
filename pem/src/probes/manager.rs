//! The node's dynamic probes: applied, removed and listed by the probe service; their
//! events decoded into rows of their own tables.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use px_api::pem::{ProbeSpec, ProbeState};
use px_crds::TracepointSpec;
use px_ebpf::dynamic_probe::{
    CGROUP_LEVELS, MAX_CAPTURES, PROBE_ACTIVE, PROBE_CGROUPS, PROBE_COMM, PROBE_PAIRED,
    ProbeConfig, ProbeEvent, ProbeGlobals,
};
use px_tablestore::{RowBuilder, TableStore};

use super::kernel::{Attachments, ProbeKernel, Returns, Slots};
use super::plan::{CallingConvention, Decode, Hook, Plan, ValueSource, plan};
use super::state::{Phase, ProbeFailure};
use super::targets;
use crate::process::{ProcessCache, ProcessTable};

/// How long a removed probe stays listed (as Terminated) before it is forgotten.
const KEEP_TERMINATED: Duration = Duration::from_secs(300);
/// Why a probe whose TTL ran out was removed.
const TTL_RAN_OUT: &str = "the TTL ran out";
/// Calls whose return has not come back yet, per probe; beyond it the oldest go.
const MAX_PENDING_CALLS: usize = 65_536;

/// Limits and settings of the node's dynamic probes.
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    /// Probes loaded at once (at most 64, the kernel side's room).
    pub max_probes: usize,
    /// Events per second one probe records; more are counted as dropped.
    pub rate_per_sec: u32,
    /// Size of the probes' ring buffer in bytes (a power of two).
    pub ring_buffer_bytes: u32,
    /// Where tracepoint formats are read.
    pub tracefs: PathBuf,
    /// The PEM's own cgroup scope (level, id); processes outside it are never traced.
    pub scope: Option<(u32, u64)>,
    /// The short id of this agent, the high bits of each UPID.
    pub asid: u32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            max_probes: 32,
            rate_per_sec: 100_000,
            ring_buffer_bytes: 4 << 20,
            tracefs: PathBuf::from("/sys/kernel/tracing"),
            scope: None,
            asid: 0,
        }
    }
}

/// A call seen at entry whose return is due.
struct PendingCall {
    ktime_ns: u64,
    cells: Vec<Cell>,
}

#[derive(Clone, Debug)]
enum Cell {
    Int(i64),
    Bool(bool),
    Text(String),
}

/// One probe, loaded or not.
struct Probe {
    spec: ProbeSpec,
    phase: Phase,
    table: String,
    loaded: Option<Loaded>,
    events: u64,
    user_drops: u64,
    terminated_at: Option<Instant>,
}

struct Loaded {
    slot: u32,
    /// Cgroup levels and binaries the probe was attached for: while a pod change keeps
    /// them, the probe follows the pods in place.
    levels: Vec<u8>,
    binaries: Vec<String>,
    plan: Arc<Plan>,
    attachments: Attachments,
}

/// What the reader needs of one loaded probe to turn its events into rows.
struct Recorder {
    table: String,
    epoch: u32,
    plan: Arc<Plan>,
    rows: RowBuilder,
    /// Calls awaiting their return, by thread (or goroutine, for Go).
    pending: HashMap<u64, Vec<PendingCall>>,
    pending_count: usize,
    events: u64,
    user_drops: u64,
}

/// The event path's state, behind a lock of its own: events never wait behind a load
/// (ELF reads, symbol lookups, attaching), a removal or a status listing, which hold
/// [`Inner`]. Lock order: `inner`, then `live`.
struct Live {
    by_slot: HashMap<u32, Recorder>,
    upids: ProcessCache,
    boot_to_epoch_ns: i64,
}

struct Inner {
    kernel: Option<ProbeKernel>,
    /// The ring buffer, until the reader takes it.
    events: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    kernel_error: Option<ProbeFailure>,
    slots: Slots,
    probes: BTreeMap<String, Probe>,
    next_epoch: u32,
    /// DataRetention age limits, by table (ns).
    max_ages: BTreeMap<String, i64>,
}

/// The node's dynamic probes. Cheap to share: clone the `Arc`.
pub struct ProbeManager {
    inner: Mutex<Inner>,
    live: Mutex<Live>,
    store: Arc<TableStore>,
    settings: ProbeSettings,
}

impl ProbeManager {
    /// A manager writing into `store`. Nothing is loaded into the kernel until the first
    /// probe is applied.
    #[must_use]
    pub fn new(
        store: Arc<TableStore>,
        processes: Arc<ProcessTable>,
        settings: ProbeSettings,
    ) -> Arc<Self> {
        let upids = ProcessCache::new(settings.asid, processes);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                kernel: None,
                events: None,
                kernel_error: None,
                slots: Slots::default(),
                probes: BTreeMap::new(),
                next_epoch: 1,
                max_ages: BTreeMap::new(),
            }),
            live: Mutex::new(Live {
                by_slot: HashMap::new(),
                upids,
                boot_to_epoch_ns: crate::clock::boot_to_epoch_ns(),
            }),
            store,
            settings,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node's tables.
    #[must_use]
    pub fn store(&self) -> &Arc<TableStore> {
        &self.store
    }

    /// Replaces the tables' age limits (ns); rows older are dropped at the next tick.
    pub fn set_max_ages(&self, ages: BTreeMap<String, i64>) {
        self.lock().max_ages = ages;
        self.tick();
    }

    /// The tables' age limits (ns).
    #[must_use]
    pub fn max_ages(&self) -> BTreeMap<String, i64> {
        self.lock().max_ages.clone()
    }

    /// Loads a probe, or replaces it when the generation changed; returns its state.
    pub fn apply(&self, spec: ProbeSpec) -> ProbeState {
        let mut inner = self.lock();
        if let Some(state) = follow_pods(&mut inner, &self.live(), &spec) {
            return state;
        }
        self.unload(&mut inner, &spec.id, "replaced by a new generation");
        let id = spec.id.clone();
        let mut probe = Probe {
            table: String::new(),
            spec,
            phase: Phase::Pending("loading".to_owned()),
            loaded: None,
            events: 0,
            user_drops: 0,
            terminated_at: None,
        };
        self.install(&mut inner, &mut probe);
        let state = probe.state(inner.kernel.as_ref(), &self.live());
        inner.probes.insert(id, probe);
        state
    }

    /// Tries to load `probe`, leaving it Running, Pending or Failed.
    fn install(&self, inner: &mut Inner, probe: &mut Probe) {
        match self.load(inner, probe) {
            Ok(Some((loaded, recorder))) => {
                self.live().by_slot.insert(loaded.slot, recorder);
                probe.loaded = Some(loaded);
                probe.phase = Phase::Running;
            }
            Ok(None) => {}
            Err(failure) => {
                tracing::info!(probe = %probe.spec.name, reason = %failure.reason, "{}", failure.message);
                probe.phase = Phase::Failed(failure);
            }
        }
    }

    /// Tries a pending probe again (its target process may have started).
    fn retry(&self, id: &str) {
        let mut inner = self.lock();
        let Some(mut probe) = inner.probes.remove(id) else {
            return;
        };
        self.install(&mut inner, &mut probe);
        inner.probes.insert(id.to_owned(), probe);
    }

    /// Detaches a probe and drops its table; an unknown id is reported as Terminated.
    pub fn remove(&self, id: &str) -> ProbeState {
        let mut inner = self.lock();
        self.unload(&mut inner, id, "deleted");
        match inner.probes.get(id) {
            Some(probe) => probe.state(inner.kernel.as_ref(), &self.live()),
            None => {
                let mut state = ProbeState {
                    id: id.to_owned(),
                    ..ProbeState::default()
                };
                Phase::Terminated {
                    reason: "",
                    message: "not loaded on this node".to_owned(),
                }
                .to_proto(&mut state);
                state
            }
        }
    }

    /// Every probe known, by id.
    #[must_use]
    pub fn list(&self) -> Vec<ProbeState> {
        let inner = self.lock();
        let live = self.live();
        inner
            .probes
            .values()
            .map(|p| p.state(inner.kernel.as_ref(), &live))
            .collect()
    }

    /// Pixie's `px.GetTracepointStatus()` view: (name, id, state, status JSON, tables).
    #[must_use]
    pub fn pixie_status(&self) -> Vec<[String; 5]> {
        let inner = self.lock();
        inner
            .probes
            .values()
            .map(|p| {
                let (reason, message) = match &p.phase {
                    Phase::Failed(f) => (f.reason.clone(), f.message.clone()),
                    Phase::Terminated { reason, message } => {
                        ((*reason).to_owned(), message.clone())
                    }
                    Phase::Pending(m) => (String::new(), m.clone()),
                    Phase::Running => (String::new(), String::new()),
                };
                [
                    p.spec.name.clone(),
                    p.spec.id.clone(),
                    p.phase.pixie_state().to_owned(),
                    serde_json::json!({"reason": reason, "message": message}).to_string(),
                    serde_json::json!([p.table]).to_string(),
                ]
            })
            .collect()
    }

    fn load(
        &self,
        inner: &mut Inner,
        probe: &mut Probe,
    ) -> Result<Option<(Loaded, Recorder)>, ProbeFailure> {
        let spec: TracepointSpec = serde_json::from_str(&probe.spec.spec_json).map_err(|e| {
            ProbeFailure::invalid(format!("the Tracepoint spec does not parse: {e}"))
        })?;
        probe.table.clone_from(&spec.table);
        if probe.spec.expires_at_unix_ns != 0
            && probe.spec.expires_at_unix_ns <= crate::clock::epoch_ns()
        {
            probe.phase = Phase::Terminated {
                reason: "Expired",
                message: TTL_RAN_OUT.to_owned(),
            };
            probe.terminated_at = Some(Instant::now());
            return Ok(None);
        }
        let loaded = inner.probes.values().filter(|p| p.loaded.is_some()).count();
        if loaded >= self.settings.max_probes {
            return Err(ProbeFailure::new(
                "TooManyProbes",
                format!(
                    "this node already runs {loaded} probes, the most it allows \
                     (--max-probes); delete a Tracepoint first"
                ),
            ));
        }
        if let Some(owner) = inner
            .probes
            .values()
            .find(|p| p.loaded.is_some() && p.table == spec.table)
        {
            return Err(ProbeFailure::new(
                "TableConflict",
                format!("table {} belongs to {}", spec.table, owner.spec.name),
            ));
        }
        if self.store.table(&spec.table).is_some() {
            return Err(ProbeFailure::new(
                "TableConflict",
                format!(
                    "table {} is a built-in table of the PEM; choose another name",
                    spec.table
                ),
            ));
        }
        let target = targets::resolve(&probe.spec)?;
        let Some(target) = target else {
            probe.phase =
                Phase::Pending("no process of the target pods runs on this node yet".to_owned());
            return Ok(None);
        };
        let plan = plan(&spec, &self.settings.tracefs, &target.root)?;
        self.ensure_kernel(inner)?;
        let slot = inner.slots.take().ok_or_else(|| {
            ProbeFailure::new(
                "TooManyProbes",
                "every probe slot of the kernel program is in use",
            )
        })?;
        let epoch = inner.next_epoch;
        inner.next_epoch = inner.next_epoch.wrapping_add(1).max(1);
        match self.attach(inner, slot, epoch, &plan, &target) {
            Ok(attachments) => {
                if let Err(e) = self.store.create_table(plan.schema.clone()) {
                    if let Some(kernel) = inner.kernel.as_mut() {
                        let mut attachments = attachments;
                        kernel.detach(slot, &mut attachments);
                    }
                    inner.slots.give_back(slot);
                    return Err(ProbeFailure::new("TableConflict", e.to_string()));
                }
                let plan = Arc::new(plan);
                let recorder = Recorder {
                    table: spec.table.clone(),
                    epoch,
                    plan: Arc::clone(&plan),
                    rows: RowBuilder::new(&plan.schema),
                    pending: HashMap::new(),
                    pending_count: 0,
                    events: 0,
                    user_drops: 0,
                };
                let loaded = Loaded {
                    slot,
                    levels: target.levels.clone(),
                    binaries: target_binaries(&plan, &target),
                    plan,
                    attachments,
                };
                Ok(Some((loaded, recorder)))
            }
            Err(e) => {
                inner.slots.give_back(slot);
                Err(e)
            }
        }
    }

    fn ensure_kernel(&self, inner: &mut Inner) -> Result<(), ProbeFailure> {
        if inner.kernel.is_some() {
            return Ok(());
        }
        if let Some(e) = &inner.kernel_error {
            return Err(e.clone());
        }
        let (level, id) = self.settings.scope.unwrap_or((0, 0));
        let globals = ProbeGlobals {
            self_tgid: std::process::id(),
            cgroup_level: level,
            cgroup_id: id,
        };
        match ProbeKernel::load(self.settings.ring_buffer_bytes, globals) {
            Ok((kernel, events)) => {
                inner.kernel = Some(kernel);
                inner.events = Some(events);
                Ok(())
            }
            Err(e) => {
                inner.kernel_error = Some(e.clone());
                Err(e)
            }
        }
    }

    fn attach(
        &self,
        inner: &mut Inner,
        slot: u32,
        epoch: u32,
        plan: &Plan,
        target: &targets::Target,
    ) -> Result<Attachments, ProbeFailure> {
        let kernel = inner.kernel.as_mut().ok_or_else(|| {
            ProbeFailure::new("InternalError", "the probe programs are not loaded")
        })?;
        let mut flags = PROBE_ACTIVE;
        let mut config = ProbeConfig {
            rate_per_sec: self.settings.rate_per_sec,
            generation: epoch,
            ..ProbeConfig::default()
        };
        if let Some(comm) = plan.comm {
            flags |= PROBE_COMM;
            config.comm = comm;
        }
        if !target.cgroups.is_empty() {
            flags |= PROBE_CGROUPS;
            for (dst, level) in config
                .cgroup_levels
                .iter_mut()
                .zip(target.levels.iter().take(CGROUP_LEVELS))
            {
                *dst = *level;
            }
            for cgroup in &target.cgroups {
                kernel.allow_cgroup(slot, *cgroup)?;
            }
        }
        let returns = match plan.hook {
            Hook::Uprobe { returns: false, .. } | Hook::Tracepoint { .. } => Returns::None,
            Hook::Uprobe {
                convention: CallingConvention::Go,
                ..
            } => Returns::AtReturnInstructions,
            Hook::Uprobe { .. } => Returns::Uretprobe,
        };
        let mut entry = config;
        // Only a uretprobe needs the kernel to remember admitted calls.
        entry.flags = flags
            | if returns == Returns::Uretprobe {
                PROBE_PAIRED
            } else {
                0
            };
        fill(&mut entry, &plan.entry);
        kernel.configure(slot, 0, entry)?;
        let mut ret = config;
        ret.flags = flags;
        fill(&mut ret, &plan.ret);
        kernel.configure(slot, 1, ret)?;
        let attached = match &plan.hook {
            Hook::Uprobe { binary, symbol, .. } => {
                let binaries = target.binaries(binary);
                kernel.attach_uprobe(slot, &binaries, symbol, returns)
            }
            Hook::Tracepoint { category, name } => {
                kernel.attach_tracepoint(slot, &self.settings.tracefs, category, name)
            }
        };
        if attached.is_err() {
            let mut none = Attachments::default();
            kernel.detach(slot, &mut none);
        }
        attached
    }

    fn unload(&self, inner: &mut Inner, id: &str, why: &str) {
        let Some(mut probe) = inner.probes.remove(id) else {
            return;
        };
        if let Some(mut loaded) = probe.loaded.take() {
            if let Some(kernel) = inner.kernel.as_mut() {
                kernel.detach(loaded.slot, &mut loaded.attachments);
            }
            inner.slots.give_back(loaded.slot);
            if let Some(recorder) = self.live().by_slot.remove(&loaded.slot) {
                probe.events = recorder.events;
                probe.user_drops = recorder.user_drops;
            }
            self.store.drop_table(&probe.table);
            tracing::info!(probe = %probe.spec.name, table = %probe.table, "probe removed: {why}");
        }
        if probe.terminated_at.is_none() {
            probe.phase = Phase::Terminated {
                reason: if why == TTL_RAN_OUT { "Expired" } else { "" },
                message: why.to_owned(),
            };
            probe.terminated_at = Some(Instant::now());
        }
        inner.probes.insert(id.to_owned(), probe);
    }

    /// Decodes one ring buffer record into its probe's rows. Takes only the event
    /// path's lock.
    pub(crate) fn on_event(&self, record: &[u8]) {
        let mut live = self.live();
        let live = &mut *live;
        let header_len = std::mem::size_of::<ProbeEvent>();
        if record.len() < header_len {
            return;
        }
        // SAFETY: the record holds at least one ProbeEvent, written by the kernel program;
        // read_unaligned copes with the ring buffer's 8-byte alignment.
        let event: ProbeEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        let data = &record[header_len..];
        let slot = event.config / 2;
        let Some(recorder) = live.by_slot.get_mut(&slot) else {
            return;
        };
        if event.generation != recorder.epoch {
            return; // queued by a probe that has since been replaced
        }
        let side = event.config % 2;
        let plan = Arc::clone(&recorder.plan);
        let paired = matches!(plan.hook, Hook::Uprobe { returns: true, .. });
        if side == 0 {
            let cells = entry_cells(&plan, &event, data);
            if paired {
                let key = pair_key(&plan, &event, 0);
                push_pending(
                    recorder,
                    key,
                    PendingCall {
                        ktime_ns: event.ktime_ns,
                        cells,
                    },
                );
                return;
            }
            let upid = live.upids.upid(event.tgid);
            write_row(
                recorder,
                &event,
                event.ktime_ns,
                None,
                &cells,
                &[],
                upid,
                live.boot_to_epoch_ns,
            );
            recorder.events += 1;
            return;
        }
        let key = pair_key(&plan, &event, 1);
        let Some(call) = recorder.pending.get_mut(&key).and_then(Vec::pop) else {
            recorder.user_drops += 1;
            return;
        };
        recorder.pending_count = recorder.pending_count.saturating_sub(1);
        if recorder.pending.get(&key).is_some_and(Vec::is_empty) {
            recorder.pending.remove(&key);
        }
        let ret = decode_values(&plan.ret, &event, data);
        let upid = live.upids.upid(event.tgid);
        let latency = event.ktime_ns.saturating_sub(call.ktime_ns);
        write_row(
            recorder,
            &event,
            call.ktime_ns,
            Some(latency),
            &call.cells,
            &ret,
            upid,
            live.boot_to_epoch_ns,
        );
        recorder.events += 1;
    }

    /// Moves the rows built so far into the tables, removes probes whose TTL ran out,
    /// retries pending probes and forgets long-terminated ones.
    pub(crate) fn tick(&self) {
        let now = crate::clock::epoch_ns();
        {
            let mut live = self.live();
            for recorder in live.by_slot.values_mut() {
                if recorder.rows.rows() > 0
                    && let Some(table) = self.store.table(&recorder.table)
                    && let Err(e) = table.append(recorder.rows.finish())
                {
                    tracing::warn!(table = %recorder.table, error = %e, "appending probe rows");
                }
            }
            live.boot_to_epoch_ns = crate::clock::boot_to_epoch_ns();
        }
        let (expired, pending): (Vec<String>, Vec<String>) = {
            let mut inner = self.lock();
            for (table, age) in &inner.max_ages {
                if let Some(t) = self.store.table(table) {
                    t.expire_before(now.saturating_sub(*age));
                }
            }
            inner.probes.retain(|_, p| {
                p.terminated_at
                    .is_none_or(|t| t.elapsed() < KEEP_TERMINATED)
            });
            let expired = inner
                .probes
                .values()
                .filter(|p| {
                    p.loaded.is_some()
                        && p.spec.expires_at_unix_ns != 0
                        && p.spec.expires_at_unix_ns <= now
                })
                .map(|p| p.spec.id.clone())
                .collect();
            let pending = inner
                .probes
                .values()
                .filter(|p| matches!(p.phase, Phase::Pending(_)) && p.terminated_at.is_none())
                .map(|p| p.spec.id.clone())
                .collect();
            (expired, pending)
        };
        for id in expired {
            let mut inner = self.lock();
            self.unload(&mut inner, &id, TTL_RAN_OUT);
        }
        for id in pending {
            self.retry(&id);
        }
    }

    /// The probe programs' ring buffer, once the first probe has loaded them (the
    /// reader takes it once).
    pub(crate) fn take_events(&self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.lock().events.take()
    }
}

/// The state of the probe `spec` names when it is loaded with the same generation,
/// after following a change of its pods in place; `None` when it must be (re)loaded.
fn follow_pods(inner: &mut Inner, live: &Live, spec: &ProbeSpec) -> Option<ProbeState> {
    let inner = &mut *inner;
    let existing = inner.probes.get_mut(&spec.id)?;
    if existing.spec.generation != spec.generation || existing.terminated_at.is_some() {
        return None;
    }
    if existing.spec.pods != spec.pods {
        let loaded = existing.loaded.as_ref()?;
        let target = targets::resolve_cgroups(spec).ok()?;
        let same_levels = target.levels.iter().all(|l| loaded.levels.contains(l));
        // Without a process yet there is nothing new to attach to.
        let same_binaries = target.roots.is_empty()
            || target_binaries(&loaded.plan, &target)
                .iter()
                .all(|b| loaded.binaries.contains(b));
        if !same_levels || !same_binaries {
            return None;
        }
        inner
            .kernel
            .as_mut()?
            .set_cgroups(loaded.slot, &target.cgroups)
            .ok()?;
        existing.spec = spec.clone();
    }
    Some(existing.state(inner.kernel.as_ref(), live))
}

/// The binaries a uprobe attaches to for `target` (none for a kernel tracepoint).
fn target_binaries(plan: &Plan, target: &targets::Target) -> Vec<String> {
    match &plan.hook {
        Hook::Uprobe { binary, .. } => target.binaries(binary),
        Hook::Tracepoint { .. } => Vec::new(),
    }
}

impl Probe {
    fn state(&self, kernel: Option<&ProbeKernel>, live: &Live) -> ProbeState {
        let mut state = ProbeState {
            id: self.spec.id.clone(),
            name: self.spec.name.clone(),
            generation: self.spec.generation,
            table: self.table.clone(),
            events: self.events,
            ..ProbeState::default()
        };
        if let Some(loaded) = &self.loaded {
            let recorder = live.by_slot.get(&loaded.slot);
            state.events = recorder.map_or(0, |r| r.events);
            state.attachments = loaded.attachments.count();
            state.dropped =
                recorder.map_or(0, |r| r.user_drops) + kernel.map_or(0, |k| k.dropped(loaded.slot));
        } else {
            state.dropped = self.user_drops;
        }
        self.phase.to_proto(&mut state);
        state
    }
}

fn fill(config: &mut ProbeConfig, captures: &[px_ebpf::dynamic_probe::Capture]) {
    for (dst, src) in config
        .captures
        .iter_mut()
        .zip(captures.iter().take(MAX_CAPTURES))
    {
        *dst = *src;
    }
    config.n_captures = u32::try_from(captures.len().min(MAX_CAPTURES)).unwrap_or(0);
}

/// What pairs a return with its call: the goroutine for Go, else the thread.
fn pair_key(plan: &Plan, event: &ProbeEvent, side: u32) -> u64 {
    match plan.goroutine {
        Some((entry, ret)) => event.values[if side == 0 { entry } else { ret }],
        None => u64::from(event.tid),
    }
}

fn push_pending(recorder: &mut Recorder, key: u64, call: PendingCall) {
    if recorder.pending_count >= MAX_PENDING_CALLS {
        // Threads that never return (or exited): forget the whole backlog of one.
        if let Some(stale) = recorder.pending.keys().next().copied()
            && let Some(calls) = recorder.pending.remove(&stale)
        {
            recorder.pending_count -= calls.len();
            recorder.user_drops += calls.len() as u64;
        }
    }
    recorder.pending.entry(key).or_default().push(call);
    recorder.pending_count += 1;
}

/// The entry's values, in capture order, decoded to cells.
fn entry_cells(plan: &Plan, event: &ProbeEvent, data: &[u8]) -> Vec<Cell> {
    decode_values(&plan.entry, event, data)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let decode = plan.columns.iter().find_map(|c| match c {
                ValueSource::Entry(n, d) if *n == i => Some(*d),
                _ => None,
            });
            decode_cell(v, decode.unwrap_or(Decode::Signed(8)))
        })
        .collect()
}

/// Raw captured values: a number, or the captured bytes.
enum Raw<'a> {
    Word(u64),
    Bytes(&'a [u8]),
}

fn decode_values<'a>(
    captures: &[px_ebpf::dynamic_probe::Capture],
    event: &ProbeEvent,
    data: &'a [u8],
) -> Vec<Raw<'a>> {
    use px_ebpf::dynamic_probe::CAP_SCALAR;
    captures
        .iter()
        .zip(event.values.iter())
        .map(|(capture, value)| {
            if capture.kind == CAP_SCALAR {
                return Raw::Word(*value);
            }
            let at = (value >> 32) as usize;
            let len = (value & 0xffff_ffff) as usize;
            Raw::Bytes(data.get(at..at.saturating_add(len)).unwrap_or_default())
        })
        .collect()
}

fn decode_cell(raw: Raw<'_>, decode: Decode) -> Cell {
    match (raw, decode) {
        (Raw::Word(v), Decode::Signed(size)) => Cell::Int(sign_extend(v, size)),
        (Raw::Word(v), Decode::Unsigned(size)) => {
            let bits = u32::from(size.clamp(1, 8)) * 8;
            let masked = if bits == 64 {
                v
            } else {
                v & ((1u64 << bits) - 1)
            };
            Cell::Int(masked.cast_signed())
        }
        (Raw::Word(v), Decode::Bool) => Cell::Bool(v & 0xff != 0),
        (Raw::Word(v), Decode::Text | Decode::Bytes) => Cell::Text(format!("{v:#x}")),
        (Raw::Bytes(b), Decode::Bytes) => Cell::Text(escape_bytes(b)),
        (Raw::Bytes(b), _) => {
            let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
            Cell::Text(String::from_utf8_lossy(&b[..end]).into_owned())
        }
    }
}

fn sign_extend(v: u64, size: u8) -> i64 {
    let bits = u32::from(size.clamp(1, 8)) * 8;
    if bits == 64 {
        return v.cast_signed();
    }
    let shift = 64 - bits;
    (v << shift).cast_signed() >> shift
}

/// Printable ASCII as is, the rest as `\xNN`, as Pixie shows byte buffers.
fn escape_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for b in bytes {
        if b.is_ascii_graphic() || *b == b' ' {
            out.push(char::from(*b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn write_row(
    recorder: &mut Recorder,
    event: &ProbeEvent,
    start_ktime: u64,
    latency: Option<u64>,
    entry: &[Cell],
    ret: &[Raw<'_>],
    upid: u128,
    boot_to_epoch_ns: i64,
) {
    let rows = &mut recorder.rows;
    rows.append_time(
        boot_to_epoch_ns.saturating_add(i64::try_from(start_ktime).unwrap_or(i64::MAX)),
    );
    rows.append_u128(upid);
    for source in &recorder.plan.columns {
        let cell = match source {
            ValueSource::Entry(n, _) => entry.get(*n).cloned().unwrap_or(Cell::Int(0)),
            ValueSource::Return(n, decode) => match ret.get(*n) {
                Some(Raw::Word(v)) => decode_cell(Raw::Word(*v), *decode),
                Some(Raw::Bytes(b)) => decode_cell(Raw::Bytes(b), *decode),
                None => Cell::Int(0),
            },
            ValueSource::Latency => {
                Cell::Int(latency.map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX)))
            }
            ValueSource::Pid => Cell::Int(i64::from(event.tgid)),
            ValueSource::Tid => Cell::Int(i64::from(event.tid)),
            ValueSource::Comm => {
                let end = event.comm.iter().position(|c| *c == 0).unwrap_or(16);
                Cell::Text(String::from_utf8_lossy(&event.comm[..end]).into_owned())
            }
        };
        match cell {
            Cell::Int(v) => rows.append_i64(v),
            Cell::Bool(v) => rows.append_bool(v),
            Cell::Text(v) => rows.append_str(&v),
        }
    }
    rows.finish_row();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_sign_extended_by_their_size() {
        assert_eq!(sign_extend(0xffff_ffff, 4), -1);
        assert_eq!(sign_extend(0x7fff_ffff, 4), i32::MAX as i64);
        assert_eq!(sign_extend(u64::MAX, 8), -1);
        assert!(matches!(
            decode_cell(Raw::Word(0xdead_0000_0001), Decode::Unsigned(4)),
            Cell::Int(1)
        ));
    }

    #[test]
    fn bytes_are_escaped_and_strings_stop_at_nul() {
        assert_eq!(escape_bytes(b"ab\x00\xff c"), "ab\\x00\\xff c");
        assert!(
            matches!(decode_cell(Raw::Bytes(b"hi\0junk"), Decode::Text), Cell::Text(s) if s == "hi")
        );
    }
}
