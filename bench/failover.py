#!/usr/bin/env python3
"""Fault onset to traffic back on the good release, for each way rearguard moves traffic,
side by side in one run (a benchmark: no timed assertion).

Each kind guards the demo app (v2 fails 30 % of requests) under the same policy: deploy v1,
let it bake, deploy v2 with steady traffic (50 requests/s), and time from the first answer by
v2 (the fault's onset) to the first answer by v1 after v2's last (traffic back on the good
release). Kinds: the built-in router and HAProxy in front of local processes, Compose
blue-green behind the router, Compose in place (the platform moves traffic itself).

    bench/failover.py [--runs N] [--kinds router,haproxy,compose-bluegreen,compose-inplace]

Needs haproxy and Docker (with docker compose or docker-compose) for those kinds; builds the
release binary and the demo image (from the binary, no registry).
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/rearguard-target"))
BIN = os.path.join(TARGET, "release", "rearguard")
IMAGE = "rearguard-failover-bench"
PUBLIC = 18510
# In place, the compose file publishes the service here and the router forwards to it.
INPLACE = 18512
HAPROXY_SOCKET = "haproxy.sock"

POLICY = """
    bake: 15s
    checks:
      - kind: http
        name: health
        path: /health
    policy:
      warmup: 3s
      transient: 2s
"""

PROCESS_BACKEND = f"""
    backend:
      kind: process
      components:
        web:
          command: [{BIN}, "demo-app", "--version", "{{version}}", "--port", "{{port}}",
                    "--bad-version", "v2", "--bad-error-rate", "0.3"]
          ready_path: /health
      keep_previous_warm: 60s
"""


def compose_backend(strategy):
    published = f"\n          published: 127.0.0.1:{INPLACE}" if strategy == "inplace" else ""
    return f"""
    backend:
      kind: compose
      file: docker-compose.yml
      strategy: {strategy}
      services:
        web:
          port: 8080
          ready_path: /health{published}
      keep_previous_warm: 60s
"""


ROUTER = f"""
    traffic:
      kind: router
      listen:
        web: {PUBLIC}
"""

HAPROXY = f"""
    traffic:
      kind: haproxy
      socket: {HAPROXY_SOCKET}
      log: 127.0.0.1:{PUBLIC + 1}
      backends:
        web:
          backend: app_web
          servers: [s1, s2]
"""

KINDS = {
    "router": PROCESS_BACKEND + ROUTER,
    "haproxy": PROCESS_BACKEND + HAPROXY,
    "compose-bluegreen": compose_backend("bluegreen") + ROUTER,
    "compose-inplace": compose_backend("inplace") + ROUTER,
}


def compose_file(published):
    ports = f'\n    ports: ["127.0.0.1:{INPLACE}:8080"]' if published else ""
    return f"""services:
  web:
    image: "{IMAGE}:${{REARGUARD_VERSION}}"
    command: ["demo-app", "--version", "${{REARGUARD_VERSION}}", "--address", "0.0.0.0",
              "--port", "8080", "--bad-version", "v2", "--bad-error-rate", "0.3"]{ports}
"""


def haproxy_config(work):
    return f"""global
    stats socket {work}/{HAPROXY_SOCKET} mode 600 level admin
    log 127.0.0.1:{PUBLIC + 1} local0
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend app
    bind 127.0.0.1:{PUBLIC}
    default_backend app_web
backend app_web
    server s1 127.0.0.1:1 disabled
    server s2 127.0.0.1:1 disabled
"""


def run(*argv, cwd=None, check=True):
    return subprocess.run(argv, cwd=cwd, check=check, capture_output=True, text=True)


class Load(threading.Thread):
    """Requests at a steady pace; keeps (seconds since start, answering version or None)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.answers, self.stopping, self.started = [], threading.Event(), time.monotonic()

    def run(self):
        while not self.stopping.is_set():
            version = None
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PUBLIC}/", timeout=2) as r:
                    version = r.read().decode().split()[-1]
            except urllib.error.HTTPError as e:
                version = e.read().decode().split()[0] if e.code == 500 else None
            except OSError:
                pass
            self.answers.append((time.monotonic() - self.started, version))
            time.sleep(0.02)


def failover_seconds(answers):
    """From the first answer by v2 to the first by v1 after v2's last."""
    onset = next((t for t, v in answers if v == "v2"), None)
    last_bad = max((t for t, v in answers if v == "v2"), default=None)
    back = next((t for t, v in answers if last_bad is not None and t > last_bad and v == "v1"), None)
    if onset is None or back is None:
        return None
    return back - onset


def one_run(kind, work):
    with open(os.path.join(work, "rearguard.yaml"), "w") as f:
        f.write(f"data_dir: .rearguard\napps:\n  bench:{POLICY}{KINDS[kind]}")
    with open(os.path.join(work, "docker-compose.yml"), "w") as f:
        f.write(compose_file(kind == "compose-inplace"))
    helpers = []
    if kind == "haproxy":
        with open(os.path.join(work, "haproxy.cfg"), "w") as f:
            f.write(haproxy_config(work))
        helpers.append(subprocess.Popen(["haproxy", "-f", "haproxy.cfg", "-db"], cwd=work,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # The guard refuses to start before HAProxy's runtime API answers.
        for _ in range(100):
            if os.path.exists(os.path.join(work, HAPROXY_SOCKET)):
                break
            time.sleep(0.1)
    config = ["--config", "rearguard.yaml"]
    guard = subprocess.Popen([BIN, "guard", *config], cwd=work, stderr=open(f"{work}/guard.log", "w"))
    load = Load()
    try:
        for _ in range(100):
            if '"guarded":true' in run(BIN, "status", "bench", "--json", *config, cwd=work, check=False).stdout:
                break
            if guard.poll() is not None:
                raise RuntimeError(f"the guard stopped: {open(f'{work}/guard.log').read()}")
            time.sleep(0.2)
        else:
            raise RuntimeError("the guard did not start guarding within 20 s")
        load.start()
        good = run(BIN, "deploy", "bench", "v1", "--watch", *config, cwd=work, check=False)
        if good.returncode != 0:
            raise RuntimeError(f"v1 did not become stable: {good.stderr}")
        bad = run(BIN, "deploy", "bench", "v2", "--watch", *config, cwd=work, check=False)
        if bad.returncode != 3:
            raise RuntimeError(f"v2 was not rolled back (exit {bad.returncode}): {bad.stderr}")
        time.sleep(2)
    finally:
        load.stopping.set()
        guard.send_signal(signal.SIGTERM)
        try:
            guard.wait(timeout=60)
        except subprocess.TimeoutExpired:
            guard.kill()
        for helper in helpers:
            helper.terminate()
            helper.wait(timeout=10)
        if kind.startswith("compose"):
            remove_containers()
    load.join(timeout=5)
    # Unanswered once the first release answered (before, nothing was deployed yet).
    first = next((i for i, (_, v) in enumerate(load.answers) if v is not None), len(load.answers))
    failed = sum(1 for _, v in load.answers[first:] if v is None)
    if os.environ.get("FAILOVER_DEBUG"):
        shutil.copy(os.path.join(work, "guard.log"), f"/tmp/failover-{kind}.log")
        changes = [a for i, a in enumerate(load.answers) if i == 0 or a[1] != load.answers[i - 1][1]]
        print(f"{kind}: answering version changes {[(round(t, 2), v) for t, v in changes]}",
              file=sys.stderr)
    return failover_seconds(load.answers), failed


def remove_containers():
    ids = run("docker", "ps", "-aq", "--filter", "label=rearguard.app=bench").stdout.split()
    if ids:
        run("docker", "rm", "-f", *ids, check=False)
    networks = run("docker", "network", "ls", "-q", "--filter", "name=bench").stdout.split()
    for network in networks:
        run("docker", "network", "rm", network, check=False)


def build_image(work):
    run(os.path.join(ROOT, "packaging", "rootfs.sh"), BIN, os.path.join(work, "image"))
    run("docker", "build", "-q", "-f", os.path.join(ROOT, "packaging", "Containerfile"),
        "-t", f"{IMAGE}:v1", os.path.join(work, "image"))
    run("docker", "tag", f"{IMAGE}:v1", f"{IMAGE}:v2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kinds {unknown}; choose from {list(KINDS)}")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "rearguard"],
                   cwd=ROOT, check=True, env={**os.environ, "CARGO_TARGET_DIR": TARGET})
    if "haproxy" in kinds and not shutil.which("haproxy"):
        sys.exit("haproxy is not installed (apt-get install haproxy)")
    results = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as scratch:
        uses_docker = any(k.startswith("compose") for k in kinds)
        try:
            if uses_docker:
                build_image(scratch)
            # Rounds interleave the kinds, so a slow spell of the machine hits them all.
            for round_ in range(args.runs):
                for kind in kinds:
                    with tempfile.TemporaryDirectory() as work:
                        seconds, failed = one_run(kind, work)
                    results[kind].append(seconds)
                    shown = "not measured" if seconds is None else f"{seconds:.1f}s"
                    print(f"round {round_ + 1} {kind:18} {shown} ({failed} requests unanswered)",
                          flush=True)
        finally:
            if uses_docker:
                remove_containers()
                run("docker", "rmi", "-f", f"{IMAGE}:v1", f"{IMAGE}:v2", check=False)
    print("\nfault onset -> traffic back on the good release (median of rounds; goal <= 10s "
          "for the blue-green kinds)")
    for kind, values in results.items():
        measured = [v for v in values if v is not None]
        if measured:
            print(f"  {kind:18} {statistics.median(measured):5.1f}s  "
                  f"(min {min(measured):.1f}, max {max(measured):.1f})")
        else:
            print(f"  {kind:18} not measured")


if __name__ == "__main__":
    main()
