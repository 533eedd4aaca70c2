#!/usr/bin/env bash
# Benchmarks, each against a peer run side by side in the same run (no timed assertions):
#  (a) the demo: seconds from the bad release taking traffic to traffic back on the good one;
#  (b) the built-in router against HAProxy, proxying the same backend, loaded by wrk
#      (bench/router.sh; fault onset to failover per traffic kind: bench/failover.py);
#  (c) the judge: CPU time to judge the public scenario set (beside JUDGE_PEER if set);
#  (d) the demo's rollback with every notification channel pointing at a dead port, against
#      the same demo without notifications.
# Usage: bench/run.sh [demo-runs]   ((b) installs nginx, haproxy and wrk from Debian if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rearguard-target}"
cargo build --release --quiet --bin rearguard
bin="$CARGO_TARGET_DIR/release/rearguard"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "== (a) demo: bad release taking traffic -> traffic back on the good one ($runs runs)"
for i in $(seq 1 "$runs"); do
    "$bin" demo --port $((18100 + i)) --json 2>/dev/null | tail -1 >> "$work/demo.jsonl"
done
python3 - "$work/demo.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
d = [r["detected_after_s"] for r in rows]; r = [r["restored_after_s"] for r in rows]
print(f"detected after: median {statistics.median(d):.1f}s (min {min(d):.1f}, max {max(d):.1f})")
print(f"restored after: median {statistics.median(r):.1f}s (min {min(r):.1f}, max {max(r):.1f}); goal < 10s")
PY

echo "== (b) the router process vs HAProxy (nbthread 1), same nginx backend, wrk -t1 -c32"
"$(dirname "$0")/router.sh" 3 10

echo "== (c) judge CPU on the public scenarios (median of 5; JUDGE_PEER=BIN judges beside a peer)"
public="scenarios/public"
TIMEFORMAT="%U %S"
judge_cpu() {  # user + system seconds to judge every public scenario with binary $1
    { time (for csv in "$public"/*.csv; do "$1" backtest "$csv" --meta "${csv%.csv}.json" --json > /dev/null; done); } 2> "$work/cpu.txt"
    awk '{print $1 + $2}' "$work/cpu.txt"
}
for i in 1 2 3 4 5; do
    judge_cpu "$bin" >> "$work/cpu-judge.txt"
    [ -z "${JUDGE_PEER:-}" ] || judge_cpu "$JUDGE_PEER" >> "$work/cpu-peer.txt"
done
echo "56 scenarios judged: $(median < "$work/cpu-judge.txt")s CPU, process start-up included (goal < 1s)"
[ -z "${JUDGE_PEER:-}" ] || echo "peer $JUDGE_PEER: $(median < "$work/cpu-peer.txt")s CPU"

echo "== (d) demo with six notification channels all pointing at a dead port vs none ($runs runs each)"
cat > "$work/dead.yaml" <<YAML
notifications:
  channels:
    s: {kind: slack, url: "http://127.0.0.1:9/s"}
    t: {kind: telegram, token: "x", chat_ids: [1], base_url: "http://127.0.0.1:9"}
    p: {kind: pagerduty, routing_key: "x", base_url: "http://127.0.0.1:9"}
    m: {kind: teams, url: "http://127.0.0.1:9/m"}
    d: {kind: discord, url: "http://127.0.0.1:9/d"}
    w: {kind: webhook, url: "http://127.0.0.1:9/w"}
  escalation:
    - {after: 0m, channels: [s, t, p, m, d, w]}
YAML
for i in $(seq 1 "$runs"); do
    "$bin" demo --port $((18300 + i)) --json 2>/dev/null | tail -1 >> "$work/quiet.jsonl"
    "$bin" demo --port $((18400 + i)) --json --notifications "$work/dead.yaml" 2>/dev/null | tail -1 >> "$work/dead.jsonl"
done
python3 - "$work/quiet.jsonl" "$work/dead.jsonl" <<'PY'
import json, statistics, sys
quiet, dead = ([json.loads(l)["restored_after_s"] for l in open(p)] for p in sys.argv[1:3])
q, d = statistics.median(quiet), statistics.median(dead)
print(f"restored after: {q:.1f}s without notifications, {d:.1f}s with six dead channels (ratio {d/q:.2f}; goal 1)")
PY
