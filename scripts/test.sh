#!/usr/bin/env bash
# Installs what the tests need, then builds and runs every test. Run as root: the
# socket tracer tests load eBPF programs into this kernel (under CI=true they fail,
# never skip, without the privileges).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
