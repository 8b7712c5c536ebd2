#!/usr/bin/env bash
# Creates (once) a Python virtualenv holding helm-python-sdk 0.2.2 from PyPI, which carries
# Helm's own Go library (Helm v4.2.3) as a shared object, and lupa 2.8 (Lua, to run the
# Argo CD health checks), and dockerfile 3.4.0 (BuildKit's own Containerfile parser, to
# check images/Containerfile), and prints its python's path. The chart's tests lint and
# render charts/px with it: no helm binary is needed.
set -euo pipefail
dir=${1:?usage: helm-venv.sh DIR}
version=0.2.2
venv="$dir/venv-helm-python-sdk-$version-lupa-2.8-dockerfile-3.4.0"
mkdir -p "$dir"
# Test binaries run in parallel: one creates the virtualenv, the others wait for it.
exec 9>"$dir/.helm-venv.lock"
flock 9
if [ ! -f "$venv/.helm-installed" ]; then
  # Older pinned sets (about 270 MB each) go: disk is limited.
  for old in "$dir"/venv-helm-python-sdk-*; do [ "$old" = "$venv" ] || rm -rf "$old"; done
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --retries 1 --timeout 30 "helm-python-sdk==$version" lupa==2.8 dockerfile==3.4.0 >&2
  "$venv/bin/python" -c 'import helm_python, lupa, dockerfile; helm_python.helm_sdk_version()' >&2
  touch "$venv/.helm-installed"
fi
echo "$venv/bin/python"
