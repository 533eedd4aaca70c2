#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, property, integration
# against real processes and HTTP, and the judge scored on the scenarios).
# Installs what the tests need first. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need python3; then
    echo "installing python3 (the scenario scorer and generator need it)"
    apt-get update -qq && apt-get install -y -qq python3 >/dev/null
fi

if ! need haproxy; then
    echo "installing haproxy (the HAProxy traffic tests drive a real one)"
    apt-get update -qq && apt-get install -y -qq haproxy >/dev/null
fi

# Reuse one build across runs on the same machine (CI runs in a fresh clone).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rearguard-target}"
export CARGO_TERM_COLOR=never

cargo fmt --all -- --check
python3 scripts/check-msrv.py
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
if need cargo-nextest; then
    cargo nextest run --workspace --all-features --locked --no-fail-fast
    cargo test --workspace --all-features --locked --doc
else
    cargo test --workspace --all-features --locked --no-fail-fast
fi
