#!/usr/bin/env bash
# Builds px and runs `px local` on this machine. Needs root (CAP_BPF, CAP_PERFMON) to
# load the eBPF programs. Arguments go to `px local` (try --help), except a first
# `--release`, which builds and runs the optimised px instead.
#
# The default is the debug build: about 4 minutes from a fresh clone on 2 cores, and the
# same build the tests use (scripts/test.sh), so whichever runs first, the other reuses
# every dependency. The optimised build takes 20-45 minutes the first time (the query
# engine compiled with optimisations); use it to measure overhead or for long runs.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
if [ "${1:-}" = "--release" ]; then
  profile=release
  shift
fi
scripts/setup.sh
# --workspace resolves features as the tests' build does (with workspace-hack pinning
# what only the tests would add), so no dependency is compiled twice; --bin px still
# compiles only what px needs.
bin=target/$profile/px
if [ ! -x "$bin" ]; then
  case $profile in
    debug) echo "px-local: first build of px: about 4 minutes on 2 cores, progress below" >&2 ;;
    release) echo "px-local: first optimised build of px: 20-45 minutes on 2 cores, progress below" >&2 ;;
  esac
fi
if [ "$profile" = release ]; then
  cargo build --release --workspace --bin px
else
  cargo build --workspace --bin px
fi
exec "$bin" local "$@"
