#!/usr/bin/env bash
# The built-in router beside HAProxy (nbthread 1), both in front of the same nginx
# `return 200`, loaded in turns by `wrk -t1 -c32` in one run: requests/s, p99 and CPU time
# per request of each (the proxy process's user + system time over the requests it served:
# steadier than requests/s on a machine whose cores are shared), and their ratios. No timed
# assertion: a benchmark, compared side by side.
#   bench/router.sh [rounds] [seconds]     (installs nginx, haproxy and wrk if missing)
#   PEER_BIN=path/to/other/rearguard bench/router.sh   adds another build's router beside them
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
seconds="${2:-10}"
for tool in nginx haproxy wrk; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx haproxy wrk >/dev/null; }
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rearguard-target}"
cargo build --release --quiet --bin rearguard
bin="$CARGO_TARGET_DIR/release/rearguard"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
backend=18301 router=18302 haproxy=18303
# With two cores or more, the load (wrk and nginx) runs on core 0 and the proxies on core 1:
# each proxy then has a core to itself and the comparison is of their work per request,
# not of how the scheduler shared two cores among four busy processes.
load="" proxy=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    load="taskset -c 0" proxy="taskset -c 1"
fi
cat > "$work/nginx.conf" <<CFG
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$backend;
        location / { return 200 "ok\n"; }
    }
}
CFG
$load nginx -c "$work/nginx.conf" & pids+=($!)
cat > "$work/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend bench
    bind 127.0.0.1:$haproxy
    default_backend app
backend app
    server app1 127.0.0.1:$backend
CFG
$proxy haproxy -f "$work/haproxy.cfg" -db & pids+=($!)
declare -A pid_of=([haproxy]=$!)
# The router process the guard runs, on its default single thread, routed as a guard
# routes it: over its control socket.
start_router() {  # binary port name
    $proxy "$1" router --app bench --control "$work/$3.sock" --listen "web=127.0.0.1:$2" \
        --threads "${ROUTER_THREADS:-1}" & pids+=($!)
    pid_of[$3]=$!
    python3 - "$work/$3.sock" "$backend" <<'PY'
import json, socket, sys, time
for _ in range(100):
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the router did not open its control socket")
route = {"op": "route", "routes": {"primary": {"version": "v1",
         "endpoints": {"web": f"127.0.0.1:{sys.argv[2]}"}}, "canary": None}}
s.sendall((json.dumps(route) + "\n").encode())
answer = json.loads(s.makefile().readline())
if answer.get("answer") != "done":
    sys.exit(f"the router refused the route: {answer}")
PY
}
start_router "$bin" "$router" router
names=(haproxy router)
if [ -n "${PEER_BIN:-}" ]; then
    start_router "$PEER_BIN" 18304 peer
    names+=(peer)
fi
# User + system clock ticks the process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sleep 0.5
for round in $(seq "$rounds"); do
    for target in haproxy:$haproxy router:$router ${PEER_BIN:+peer:18304}; do
        name="${target%%:*}"; port="${target##*:}"
        before=$(cpu_ticks "${pid_of[$name]}")
        $load wrk -t1 -c32 -d"${seconds}s" --latency "http://127.0.0.1:$port/" > "$work/$name-$round.txt"
        after=$(cpu_ticks "${pid_of[$name]}")
        awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" \
            '/requests in/ {print ticks / hz * 1e6 / $1}' "$work/$name-$round.txt" >> "$work/$name.cpu"
        awk '/Requests\/sec/ {print $2}' "$work/$name-$round.txt" >> "$work/$name.rps"
        awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$work/$name-$round.txt" >> "$work/$name.p99"
    done
done
python3 - "$work" "${names[@]}" <<'PY'
import statistics, sys
w, names = sys.argv[1], sys.argv[2:]
read = lambda f: [float(x) for x in open(f"{w}/{f}")]
rps = {n: statistics.median(read(f"{n}.rps")) for n in names}
p99 = {n: statistics.median(read(f"{n}.p99")) for n in names}
cpu = {n: statistics.median(read(f"{n}.cpu")) for n in names}
for n in names:
    print(f"{n:8} {rps[n]:9.0f} req/s  p99 {p99[n]:.2f} ms  {cpu[n]:5.1f} us CPU/request  (median of rounds)")
print(f"router / haproxy: throughput {rps['router'] / rps['haproxy']:.2f}x (goal >= 1.0), "
      f"p99 {p99['router'] / p99['haproxy']:.2f}x (goal <= 1.0), "
      f"CPU per request {cpu['router'] / cpu['haproxy']:.2f}x")
PY
