#!/usr/bin/env bash
# Builds px and runs `px local` on this machine. Needs root (CAP_BPF, CAP_PERFMON) to
# load the eBPF programs. Arguments go to `px local` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet -p px
exec target/release/px local "$@"
