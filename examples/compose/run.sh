#!/usr/bin/env bash
# The demo's bad release rolled back, through Docker Compose on this machine's Docker
# Engine (no registry: the images are built from the rearguard binary itself).
#   examples/compose/run.sh [REARGUARD_BINARY]     (default: rearguard on PATH, or
#                                                   target/release/rearguard)
# Deploys v1 (good), then v2 (fails 30 % of requests) under traffic, shows v2 rolled back to
# v1, then removes every container, network and image it made.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$(command -v rearguard || echo "$root/target/release/rearguard")}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
export DEMO_IMAGE=${DEMO_IMAGE:-rearguard-demo}
export DEMO_PORT=${DEMO_PORT:-18090}
work=$(mktemp -d)
guard=""
traffic=""
cleanup() {
    [ -z "$traffic" ] || kill "$traffic" 2>/dev/null || true
    [ -z "$guard" ] || { kill "$guard" 2>/dev/null; wait "$guard" 2>/dev/null || true; }
    for id in $(docker ps -aq --filter "label=rearguard.app=demo"); do docker rm -f "$id" >/dev/null; done
    for network in $(docker network ls -q --filter "label=com.docker.compose.network=default" --filter "name=demo-"); do
        docker network rm "$network" >/dev/null 2>&1 || true
    done
    docker rmi -f "$DEMO_IMAGE:v1" "$DEMO_IMAGE:v2" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building $DEMO_IMAGE:v1 and :v2 from $bin"
"$root/packaging/rootfs.sh" "$bin" "$work/image"
docker build -q -f "$root/packaging/Containerfile" -t "$DEMO_IMAGE:v1" "$work/image" \
    >/dev/null 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
docker tag "$DEMO_IMAGE:v1" "$DEMO_IMAGE:v2"

cp "$here/docker-compose.yml" "$here/rearguard.yaml" "$work/"
cd "$work"
echo "== guarding (router on 127.0.0.1:$DEMO_PORT)"
"$bin" guard --config rearguard.yaml 2> guard.log &
guard=$!
for _ in $(seq 100); do
    "$bin" status demo --json --config rearguard.yaml 2>/dev/null | grep -q '"guarded":true' && break
    sleep 0.2
done
# Steady traffic through the router, so the judge has something to judge.
python3 - "$DEMO_PORT" <<'PY' &
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/"
while True:
    try: urllib.request.urlopen(url, timeout=2).read()
    except Exception: pass
    time.sleep(0.02)
PY
traffic=$!

echo "== deploying v1 (good)"
"$bin" deploy demo v1 --watch --config rearguard.yaml
echo "== deploying v2 (fails 30 % of requests)"
set +e
"$bin" deploy demo v2 --watch --config rearguard.yaml
code=$?
set -e
"$bin" versions demo --config rearguard.yaml
"$bin" incidents --config rearguard.yaml
docker ps --filter "label=rearguard.app=demo" --format 'table {{.Names}}\t{{.Image}}\t{{.Status}}'
if [ "$code" -ne 3 ]; then
    echo "v2 was not rolled back (exit $code); the guard's log:" >&2
    cat guard.log >&2
    exit 1
fi
echo "== v2 was rolled back to v1"
