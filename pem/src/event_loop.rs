//! The socket tracer's own thread: ring buffer -> tracker -> tables.
//!
//! It runs outside the async runtime: DataFusion runs a query's operators on the
//! runtime's workers, and a large scan that keeps every worker busy for seconds must not
//! delay the drain until the kernel drops events. The thread sleeps in `epoll` on the
//! ring buffer (edge-triggered, so the kernel's wakeup at an eighth full is the only
//! early wakeup, as before) and otherwise wakes on its timers.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use px_ebpf::socket_trace::ConnInfo;
use px_tablestore::TableStore;

use crate::clock;
use crate::error::Error;
use crate::events;
use crate::loader::SocketTracer;
use crate::pem::PemStatus;
use crate::tracker::{KernelConns, Tracker};

/// Ring buffer records handled between looks at the clock.
const EVENTS_PER_TURN: usize = 4096;
/// Turns the drain may take before the timers get theirs (flushing is what makes rows
/// visible; under a flood the drain alone would never end).
const TURNS_BEFORE_TIMERS: usize = 16;
/// How long the shutdown drain may take. The programs are detached first, so what is
/// left is at most one ring buffer's worth; this bounds even a slow machine.
pub(crate) const SHUTDOWN_DRAIN_LIMIT: Duration = Duration::from_secs(2);

const RING: Token = Token(0);
const WAKE: Token = Token(1);

/// How often the loop does what.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Intervals {
    /// Drain the ring buffer at least this often.
    pub(crate) poll: Duration,
    /// Move finished rows into the tables.
    pub(crate) flush: Duration,
    /// Sample `conn_stats`.
    pub(crate) conn_stats: Duration,
}

/// The running loop. Dropping it stops the thread without waiting (the programs are
/// detached when the thread ends); [`EventLoop::stop`] waits for the final flush.
pub(crate) struct EventLoop {
    waker: Arc<Waker>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl EventLoop {
    /// Starts the thread.
    pub(crate) fn spawn(
        tracer: SocketTracer,
        tracker: Tracker,
        intervals: Intervals,
        store: Arc<TableStore>,
        status: Arc<Mutex<PemStatus>>,
    ) -> Result<Self, Error> {
        let poll_error = |source| Error::RingBufferPoll { source };
        let poll = Poll::new().map_err(poll_error)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(poll_error)?);
        let fd = tracer.events.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), RING, Interest::READABLE)
            .map_err(poll_error)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let SocketTracer {
            ebpf,
            events,
            conns,
            muted,
            ringbuf_drops,
        } = tracer;
        let state = LoopState {
            programs: Some(ebpf),
            events,
            conns,
            muted,
            ringbuf_drops,
            tracker,
            store,
            status,
            local: PemStatus::default(),
        };
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("px-socket-tracer".to_owned())
            .spawn(move || state.run(poll, intervals, &stop_flag))
            .map_err(|source| Error::EventThread {
                thread: "socket tracer",
                source,
            })?;
        Ok(Self {
            waker,
            stop,
            thread: Some(thread),
        })
    }

    fn request_stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        // A failed wake only delays the stop until the next timer.
        let _ = self.waker.wake();
    }

    /// Stops the loop: detaches the programs, drains what the kernel queued before
    /// (for at most [`SHUTDOWN_DRAIN_LIMIT`]), flushes, and returns. Blocks.
    pub(crate) fn stop(mut self) -> Result<(), Error> {
        self.request_stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::RingBufferPoll {
                source: std::io::Error::other("the socket tracer's thread panicked"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.request_stop();
        }
    }
}

struct LoopState {
    /// Owns the programs: dropping it detaches them.
    programs: Option<aya::Ebpf>,
    events: RingBuf<MapData>,
    conns: BpfHashMap<MapData, u64, ConnInfo>,
    muted: BpfHashMap<MapData, u64, u64>,
    ringbuf_drops: PerCpuArray<MapData, u64>,
    tracker: Tracker,
    store: Arc<TableStore>,
    status: Arc<Mutex<PemStatus>>,
    local: PemStatus,
}

impl LoopState {
    fn run(
        mut self,
        mut poll: Poll,
        intervals: Intervals,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(), Error> {
        let mut events = Events::with_capacity(4);
        let start = Instant::now();
        let mut next_flush = start + intervals.flush;
        let mut next_sample = start + intervals.conn_stats;
        let mut next_poll = start + intervals.poll;
        // Records were left in the ring buffer at the last turn: no sleeping (the
        // edge-triggered wait would not report them again).
        let mut backlog = false;
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let now = Instant::now();
            let deadline = next_poll.min(next_flush).min(next_sample);
            if deadline > now && !backlog {
                match poll.poll(&mut events, Some(deadline - now)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => return Err(Error::RingBufferPoll { source }),
                }
            }
            backlog = true;
            for _ in 0..TURNS_BEFORE_TIMERS {
                if self.drain() < EVENTS_PER_TURN {
                    backlog = false;
                    break;
                }
            }
            self.apply_kernel_updates();
            let now = Instant::now();
            next_poll = now + intervals.poll;
            if now >= next_flush {
                self.flush();
                next_flush = now + intervals.flush;
            }
            if now >= next_sample {
                self.tracker
                    .sample_conn_stats(&Conns(&self.conns), clock::epoch_ns());
                next_sample = now + intervals.conn_stats;
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Detaches the programs, so that the kernel stops queueing, then turns what it had
    /// queued into rows, within [`SHUTDOWN_DRAIN_LIMIT`].
    fn shutdown(mut self) {
        // Dropping the object detaches every program; the maps taken from it stay open.
        drop(self.programs.take());
        let deadline = Instant::now() + SHUTDOWN_DRAIN_LIMIT;
        while self.drain() == EVENTS_PER_TURN {
            if Instant::now() >= deadline {
                tracing::warn!(
                    limit = ?SHUTDOWN_DRAIN_LIMIT,
                    "stopped before the ring buffer was empty: the last events are not in the tables"
                );
                break;
            }
        }
        self.tracker.drain_records();
        self.tracker
            .sample_conn_stats(&Conns(&self.conns), clock::epoch_ns());
        self.flush();
    }

    fn flush(&mut self) {
        self.tracker.set_boot_to_epoch_ns(clock::boot_to_epoch_ns());
        self.tracker.drain_records();
        self.tracker.flush(&self.store);
        self.tracker.release_idle(clock::monotonic_ns());
        self.publish();
    }

    /// Refreshes the counters readers see.
    fn publish(&mut self) {
        self.local.tracker = self.tracker.counters();
        self.local.kernel_drops = self
            .ringbuf_drops
            .get(&0, 0)
            .map_or(self.local.kernel_drops, |per_cpu| per_cpu.iter().sum());
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = self.local.clone();
    }

    /// Handles up to [`EVENTS_PER_TURN`] ring buffer records; returns how many there were.
    fn drain(&mut self) -> usize {
        drain(
            &mut self.events,
            &mut self.tracker,
            &self.conns,
            &mut self.local,
        )
    }

    fn apply_kernel_updates(&mut self) {
        for (key, generation) in self.tracker.take_mutes() {
            // Failure only means the kernel keeps copying this connection's bytes.
            let _ = self.muted.insert(key, generation, 0);
        }
        for key in self.tracker.take_forgets() {
            let _ = self.conns.remove(&key);
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    tracker: &mut Tracker,
    conns: &BpfHashMap<MapData, u64, ConnInfo>,
    status: &mut PemStatus,
) -> usize {
    let mut handled = 0;
    while handled < EVENTS_PER_TURN {
        let Some(item) = ring.next() else { break };
        handled += 1;
        match events::decode(&item) {
            Ok(event) => tracker.handle(event, &Conns(conns)),
            Err(_) => status.decode_errors += 1,
        }
    }
    status.events_received += handled as u64;
    handled
}

struct Conns<'a>(&'a BpfHashMap<MapData, u64, ConnInfo>);

impl KernelConns for Conns<'_> {
    fn lookup(&self, key: u64) -> Option<ConnInfo> {
        self.0.get(&key, 0).ok()
    }
}
