#!/usr/bin/env bash
# The API under 200 concurrent readers while the guard guards an app under traffic:
# `wrk -t2 -c200` on GET /api/v1/apps/demo (a token, the ledger, the live view) and, in
# the same run, on GET /health/live (the same server doing no work): requests/s and p99 of
# each, and their ratio. No timed assertion: a benchmark, compared side by side.
#   bench/api.sh [seconds]     (installs wrk if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rearguard-target}"
cargo build --release --quiet --bin rearguard
bin="$CARGO_TARGET_DIR/release/rearguard"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
app_port=18401 api_port=18402
cat > "$work/rearguard.yaml" <<CFG
apps:
  demo:
    bake: 5s
    backend:
      kind: process
      components:
        web:
          command: ["$bin", "demo-app", "--version", "{version}", "--port", "{port}"]
          ready_path: /health
    traffic:
      kind: router
      listen:
        web: $app_port
    policy:
      warmup: 2s
      transient: 2s
CFG
cd "$work"
"$bin" guard --listen "127.0.0.1:$api_port" 2>guard.log & pids+=($!)
token="$("$bin" token create --name bench --role viewer 2>/dev/null)"
for _ in $(seq 1 100); do "$bin" status demo --json 2>/dev/null | grep -q '"guarded":true' && break; sleep 0.2; done
# The app under steady traffic, guarded: a release deployed and watched, then stable.
wrk -t1 -c4 -d"$((seconds * 3 + 60))s" "http://127.0.0.1:$app_port/" >"$work/traffic.log" 2>&1 & pids+=($!)
"$bin" deploy demo v1 --watch >/dev/null 2>&1
"$bin" deploy demo v2 >/dev/null 2>&1
load() { wrk -t2 -c200 -d"${seconds}s" --latency "$@" 2>/dev/null; }
summary() { awk '/Requests\/sec/ {rps=$2} / 99%/ {p99=$2} END {print rps, p99}'; }
echo "== 200 concurrent readers for ${seconds}s each, while the guard guards the app under traffic (v2 deployed, watched, then promoted)"
api="$(load -H "Authorization: Bearer $token" "http://127.0.0.1:$api_port/api/v1/apps/demo" | summary)"
live="$(load "http://127.0.0.1:$api_port/health/live" | summary)"
python3 - "$api" "$live" <<'PY'
import sys
def ms(text):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    return float(text)
(api_rps, api_p99), (live_rps, live_p99) = (s.split() for s in sys.argv[1:3])
print(f"GET /api/v1/apps/demo: {float(api_rps):9.0f} req/s, p99 {ms(api_p99):7.2f} ms")
print(f"GET /health/live:      {float(live_rps):9.0f} req/s, p99 {ms(live_p99):7.2f} ms")
print(f"API / health: {float(api_rps) / float(live_rps):.2f}x the throughput, {ms(api_p99) / ms(live_p99):.1f}x the p99")
PY
grep -q "demo" <("$bin" status demo) && "$bin" status demo | head -3
