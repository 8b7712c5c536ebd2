//! The task that reads probe events from the kernel and keeps the probes' tables current.

use std::sync::Arc;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::{MissedTickBehavior, interval};

use super::manager::ProbeManager;

/// How often rows move into the tables and TTLs are checked.
const TICK: Duration = Duration::from_millis(100);
/// Records handled before the task lets others run.
const EVENTS_PER_TURN: usize = 4096;

/// Runs until aborted: waits for the first probe to load the programs, then reads.
pub(crate) async fn run(manager: Arc<ProbeManager>) {
    let mut tick = interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let events = loop {
        tokio::select! {
            _ = tick.tick() => manager.tick(),
            events = manager.take_events() => break events,
        }
    };
    // SAFETY: the RingBuf owns its map fd, open and unchanged until the AsyncFd drops.
    let ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) };
    let mut ring: AsyncFd<RingBuf<MapData>> = match ring {
        Ok(ring) => ring,
        Err(e) => {
            tracing::error!(error = %e.into_parts().1, "cannot poll the probe ring buffer");
            return;
        }
    };
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let Ok(mut guard) = guard else { return };
                if drain(&manager, guard.get_inner_mut()) < EVENTS_PER_TURN {
                    guard.clear_ready();
                }
            }
            _ = tick.tick() => {
                while drain(&manager, ring.get_mut()) == EVENTS_PER_TURN {
                    tokio::task::yield_now().await;
                }
                manager.tick();
            }
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
