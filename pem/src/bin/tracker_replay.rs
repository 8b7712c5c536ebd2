//! Replays a synthetic wrk -> nginx workload through the PEM's user-space path.
//!
//!     tracker-replay REQUESTS [CONNECTIONS]
//!
//! `bench/http_overhead.sh` runs it under callgrind twice (N and 2N requests) and
//! divides the difference in instructions by the difference in rows: the cost per row
//! without start-up, repeatable on a noisy machine.

use std::process::ExitCode;

/// The allocator the PEM's processes use (`vizier_pem::allocator`), so the counts are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    vizier_pem::allocator::return_freed_memory_promptly();
    let mut args = std::env::args().skip(1);
    let requests = args.next().and_then(|a| a.parse().ok());
    let connections = args.next().map_or(Some(32), |a| a.parse().ok());
    let (Some(requests), Some(connections)) = (requests, connections) else {
        eprintln!("usage: tracker-replay REQUESTS [CONNECTIONS]");
        return ExitCode::FAILURE;
    };
    match vizier_pem::replay::replay_http(requests, connections) {
        Ok(summary) => {
            println!("records {} rows {}", summary.records, summary.rows);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tracker-replay: {error}");
            ExitCode::FAILURE
        }
    }
}
