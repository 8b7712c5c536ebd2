//! The thread that reads probe events from the kernel and keeps the probes' tables current.
//!
//! A thread of its own, like the socket tracer's, so that queries busy on the async
//! workers never delay it.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::manager::ProbeManager;

/// How often rows move into the tables and TTLs are checked.
const TICK: Duration = Duration::from_millis(100);
/// Records handled before the thread looks at the clock.
const EVENTS_PER_TURN: usize = 4096;

const RING: Token = Token(0);
const WAKE: Token = Token(1);

/// The running reader; dropping it stops the thread (within one tick).
pub struct ReaderThread {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl ReaderThread {
    /// Starts reading for `manager`: ticks until the first probe loads the programs,
    /// then reads their ring buffer too.
    ///
    /// # Errors
    /// When the thread or its epoll instance cannot be created.
    pub fn spawn(manager: &Arc<ProbeManager>) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let stop = Arc::new(AtomicBool::new(false));
        let manager = Arc::clone(manager);
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("px-probe-reader".to_owned())
            .spawn(move || run(&manager, poll, &flag))?;
        Ok(Self {
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one tick and one turn of reading).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ReaderThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

fn run(manager: &ProbeManager, mut poll: Poll, stop: &AtomicBool) {
    let mut events = Events::with_capacity(4);
    let mut ring: Option<RingBuf<MapData>> = None;
    let mut next_tick = std::time::Instant::now() + TICK;
    while !stop.load(Ordering::Acquire) {
        let now = std::time::Instant::now();
        if next_tick > now
            && let Err(e) = poll.poll(&mut events, Some(next_tick - now))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            tracing::error!(error = %e, "cannot poll the probe ring buffer; probes stop recording");
            return;
        }
        if ring.is_none()
            && let Some(events) = manager.take_events()
        {
            let fd = events.as_raw_fd();
            if let Err(e) = poll
                .registry()
                .register(&mut SourceFd(&fd), RING, Interest::READABLE)
            {
                tracing::error!(error = %e, "cannot poll the probe ring buffer; probes stop recording");
                return;
            }
            ring = Some(events);
        }
        if let Some(ring) = ring.as_mut() {
            while drain(manager, ring) == EVENTS_PER_TURN && !stop.load(Ordering::Acquire) {}
        }
        if std::time::Instant::now() >= next_tick {
            manager.tick();
            next_tick = std::time::Instant::now() + TICK;
        }
    }
}

fn drain(manager: &ProbeManager, ring: &mut RingBuf<MapData>) -> usize {
    let mut handled = 0;
    while handled < EVENTS_PER_TURN {
        let Some(item) = ring.next() else { break };
        manager.on_event(&item);
        handled += 1;
    }
    handled
}
