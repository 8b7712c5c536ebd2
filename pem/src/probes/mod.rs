//! Dynamic probes: Tracepoints loaded, queried and removed at run time.
//!
//! A spec becomes a [`plan`](plan::plan) (what the generic kernel programs capture and
//! how each value becomes a column), is attached by [`kernel`], fills a table of its
//! own through the [`reader`], and is controlled through the gRPC [`service`].

mod elf;
mod format;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod kernel;
mod manager;
mod perf_link;
mod plan;
mod reader;
mod service;
mod state;
mod targets;

pub use manager::{ProbeManager, ProbeSettings};
pub use service::ProbeControl;

pub use reader::ReaderThread;
