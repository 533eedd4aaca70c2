#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, property, integration
# against real processes and HTTP, and the judge scored on the scenarios).
# Installs what the tests need first. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
# Real servers the integration tests start on 127.0.0.1: command, Debian package, why.
missing=()
while read -r command package why; do
    if ! need "$command"; then
        echo "installing $package ($why)"
        missing+=("$package")
    fi
done <<'EOF_PACKAGES'
python3 python3 the scenario scorer and generator
haproxy haproxy the HAProxy traffic tests drive a real one
prometheus prometheus the Prometheus signal tests query a real one
prometheus-alertmanager prometheus-alertmanager an alert from a real Alertmanager rolls a release back
redis-server redis-server the Redis check PINGs a real one
pg_ctlcluster postgresql the PostgreSQL check connects to a real one
chromium chromium the dashboard tests drive a headless browser
EOF_PACKAGES
if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The API is fuzzed from its OpenAPI document (PyPI, pinned).
if ! need schemathesis; then
    echo "installing schemathesis (the API fuzz test)"
    python3 -m pip install --quiet --break-system-packages 'schemathesis==4.32.5' \
        || python3 -m pip install --quiet 'schemathesis==4.32.5'
fi

# Reuse one build across runs on the same machine (CI runs in a fresh clone).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rearguard-target}"
export CARGO_TERM_COLOR=never

cargo fmt --all -- --check
python3 scripts/check-msrv.py
python3 -m unittest discover --start-directory bench --pattern 'test_*.py'
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
if need cargo-nextest; then
    cargo nextest run --workspace --all-features --locked --no-fail-fast
    cargo test --workspace --all-features --locked --doc
else
    cargo test --workspace --all-features --locked --no-fail-fast
fi
