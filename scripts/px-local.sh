#!/usr/bin/env bash
# Builds px and runs `px local` on this machine. Needs root (CAP_BPF, CAP_PERFMON) to
# load the eBPF programs. Arguments go to `px local` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# --workspace resolves features as the workspace build does, so this build and the
# tests' (`cargo build --workspace`, `cargo test --workspace`) compile each dependency
# with the same features whichever runs first; --bin px still compiles only what px needs.
if [ ! -x target/release/px ]; then
  echo "px-local: first build of px (release): about 45 minutes on 2 cores, progress below" >&2
fi
cargo build --release --workspace --bin px
exec target/release/px local "$@"
