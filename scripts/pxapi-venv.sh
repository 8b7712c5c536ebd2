#!/usr/bin/env bash
# Creates (once) a Python virtualenv holding Pixie's own Python client, pxapi 0.9.0 from
# PyPI, and prints its python's path. The compatibility tests drive our API with it.
set -euo pipefail
dir=${1:?usage: pxapi-venv.sh DIR}
venv="$dir/venv-pxapi-0.9.0"
mkdir -p "$dir"
# Tests run in parallel: one creates the virtualenv, the others wait for it.
exec 9>"$dir/.pxapi-venv.lock"
flock 9
if [ ! -f "$venv/.pxapi-installed" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --retries 1 --timeout 30 pxapi==0.9.0 >&2
  touch "$venv/.pxapi-installed"
fi
echo "$venv/bin/python"
