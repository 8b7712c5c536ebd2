#!/usr/bin/env bash
# Installs what the tests need, then builds and runs every test. Run as root: the
# socket tracer tests load eBPF programs into this kernel (under CI=true they fail,
# never skip, without the privileges).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Go 1.24 or newer (the machines have 1.26 in /usr/local/go) builds the Go program the
# dynamic probe tests trace, and the end-to-end tests' Kubernetes control plane, built
# here once per machine (e2e/control-plane/build.sh caches it; about 7 minutes the first
# time, then nothing).
if [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; fi
go_minor=$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -z "$go_minor" ] || [ "$go_minor" -lt 24 ]; then
  echo "test: Go 1.24 or newer is needed (found: $(go version 2>/dev/null || echo none)); install it in /usr/local/go" >&2
  exit 1
fi
command -v kubectl >/dev/null || { echo "test: kubectl not found; the end-to-end tests drive the cluster with it" >&2; exit 1; }
e2e/control-plane/build.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
