#!/usr/bin/env bash
# What tracing costs a busy HTTP server, measured side by side in one run.
#
# Loads a local nginx with wrk at a fixed concurrency: once without the PEM, once with
# `px local` tracing (both wrk and nginx are traced, so every request makes two rows),
# then once more without, and prints
#   - the throughput ratio and the p99 latency ratio (traced / mean of the untraced runs),
#   - the capture ratio (http_events rows / (2 x requests sent)),
#   - the PEM's CPU seconds per 100,000 requests and its peak resident memory,
#   - the user-space instructions per row, counted by callgrind over a synthetic replay of
#     the same traffic (tracker-replay): unlike CPU seconds, it repeats run to run on a
#     shared machine, so a change's effect on the cost per row is visible,
#   - what each kernel program costs per run and per request, from the kernel's own
#     accounting (kernel.bpf_stats_enabled, in a run of its own: the accounting adds
#     two clock reads to every program run).
# Run as root on a machine with nothing else busy. Settings: DURATION (s, default 15),
# CONNECTIONS (default 32), THREADS (wrk threads, default 1), PORT (default 18080),
# MEMORY_LIMIT (px local --memory-limit, default 2Gi), THINK_MS (default 0: each
# connection sends its next request as soon as the last is answered, the highest load
# the machine sustains; N: each connection waits N ms between requests, a steady load
# that leaves the machine headroom, as production servers run). PX_BIN_DIR: run the
# `px` and `tracker-replay` found there instead of building them (to compare two builds,
# run the script once with each, one after the other).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
PORT=${PORT:-18080}
MEMORY_LIMIT=${MEMORY_LIMIT:-2Gi}
THINK_MS=${THINK_MS:-0}

scripts/setup.sh
for tool in wrk nginx valgrind bpftool; do
  command -v "$tool" >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light valgrind bpftool >/dev/null
  }
done
if [ -n "${PX_BIN_DIR:-}" ]; then
  bin=$PX_BIN_DIR
else
  cargo build --release --quiet --workspace --bin px --bin tracker-replay
  bin=${CARGO_TARGET_DIR:-target}/release
fi

# Instructions for N and 2N requests: the difference is the cost of N requests (2N
# rows) without start-up.
REPLAY_REQUESTS=${REPLAY_REQUESTS:-20000}
instructions() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin/tracker-replay" "$1" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
replay1=$(instructions "$REPLAY_REQUESTS")
replay2=$(instructions "$((2 * REPLAY_REQUESTS))")

work=$(mktemp -d)
cleanup() {
  sysctl -qw kernel.bpf_stats_enabled=0 || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  [ -n "${px_pid:-}" ] && kill "$px_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$PORT;
    location / { default_type text/plain; return 200 "hello from nginx\n"; }
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work"
sleep 0.5

printf 'function delay() return %s end\n' "$THINK_MS" >"$work/think.lua"
pacing=()
[ "$THINK_MS" != 0 ] && pacing=(-s "$work/think.lua")

load() { # $1 = label; prints "requests rps p99_us"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${pacing[@]}" \
    "http://127.0.0.1:$PORT/bench" >"$work/$1.txt"
  python3 - "$work/$1.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
requests = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", text).groups()
p99_us = float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
print(requests, rps, p99_us)
PY
}

wrk -t1 -c4 -d2s "http://127.0.0.1:$PORT/" >/dev/null # warm up
read -r base1_req base1_rps base1_p99 < <(load base1)

"$bin/px" local --quiet --memory-limit "$MEMORY_LIMIT" --stats-file "$work/stats.json" 2>"$work/px.log" &
px_pid=$!
for _ in $(seq 100); do grep -q "Press Ctrl-C" "$work/px.log" 2>/dev/null && break; sleep 0.1; done
read -r traced_req traced_rps traced_p99 < <(load traced)
sleep 1 # let the last events drain
kill -INT "$px_pid"
wait "$px_pid"
px_pid=

read -r base2_req base2_rps base2_p99 < <(load base2)

"$bin/px" local --quiet --memory-limit "$MEMORY_LIMIT" 2>"$work/px-kernel.log" &
px_pid=$!
for _ in $(seq 100); do grep -q "Press Ctrl-C" "$work/px-kernel.log" 2>/dev/null && break; sleep 0.1; done
prog_ids=$(awk '/^prog_id:/ {print $2}' /proc/"$px_pid"/fdinfo/* 2>/dev/null | sort -un | paste -sd, -)
sysctl -qw kernel.bpf_stats_enabled=1
read -r kernel_req _ _ < <(load kernel)
bpftool --json prog show >"$work/progs.json"
sysctl -qw kernel.bpf_stats_enabled=0
kill -INT "$px_pid"
wait "$px_pid"
px_pid=

python3 - "$work/stats.json" "$base1_rps" "$base2_rps" "$base1_p99" "$base2_p99" \
  "$traced_req" "$traced_rps" "$traced_p99" "$CONNECTIONS" "$DURATION" "$THINK_MS" \
  "$replay1" "$replay2" "$REPLAY_REQUESTS" "$work/progs.json" "$prog_ids" "$kernel_req" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
b1_rps, b2_rps, b1_p99, b2_p99 = map(float, sys.argv[2:6])
req, rps, p99 = int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
base_rps, base_p99 = (b1_rps + b2_rps) / 2, (b1_p99 + b2_p99) / 2
rows = stats["tables"]["http_events"]["rows_added"]
think = f", {sys.argv[11]} ms between requests per connection" if sys.argv[11] != "0" else ", no pause between requests"
print(f"nginx + wrk, {sys.argv[9]} connections{think}, {sys.argv[10]} s per run")
print(f"untraced:  {b1_rps:10.0f} and {b2_rps:10.0f} req/s   p99 {b1_p99:.0f} and {b2_p99:.0f} us")
print(f"traced:    {rps:10.0f} req/s                 p99 {p99:.0f} us")
print(f"throughput ratio (traced/untraced): {rps / base_rps:.3f}")
print(f"p99 latency ratio (traced/untraced): {p99 / base_p99:.3f}")
print(f"capture ratio (rows / 2 x {req} requests): {rows / (2 * req):.4f}")
print(f"PEM CPU per 100,000 requests: {stats['cpu_seconds'] / req * 1e5:.2f} s")
print(f"PEM peak RSS: {stats['peak_rss_bytes'] / 2**20:.1f} MiB")
replay1, replay2, replay_n = map(int, sys.argv[12:15])
print(f"user-space instructions per row (callgrind, tracker-replay): {(replay2 - replay1) / (2 * replay_n):.0f}")
progs = [p for p in json.load(open(sys.argv[15]))
         if str(p["id"]) in sys.argv[16].split(",") and p.get("run_cnt")]
kernel_req = int(sys.argv[17])
total_ns = sum(p["run_time_ns"] for p in progs)
print(f"kernel programs (bpf_stats, {kernel_req} requests): {total_ns / kernel_req:.0f} ns per request")
for p in sorted(progs, key=lambda p: -p["run_time_ns"]):
    print(f"  {p['name']:<16} {p['run_cnt'] / kernel_req:6.2f} runs/request "
          f"{p['run_time_ns'] / p['run_cnt']:7.0f} ns/run {p['run_time_ns'] / kernel_req:7.0f} ns/request")
print(f"kernel events {stats['events_received']}, lost in the kernel {stats['kernel_drops']}, "
      f"parser bytes skipped {stats['parser_bytes_skipped']}, unpaired {stats['messages_unpaired']}")
PY
