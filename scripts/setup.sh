#!/usr/bin/env bash
# Installs the system packages the build and the tests need on Debian 12 (idempotent).
# clang/llvm/libbpf-dev build the kernel programs; python3 runs the test HTTP peers;
# python3-venv holds Pixie's Python client (pxapi) for the API compatibility test.
# The tests also need Go and kubectl, which scripts/test.sh checks (px local needs
# neither).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(clang llvm libbpf-dev python3 python3-venv openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${missing[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1; }
