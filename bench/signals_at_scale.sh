#!/usr/bin/env bash
# The Prometheus signal source at scale: 10,000 apps asked every 10 s against a stand-in
# Prometheus serving all their series (crates/rearguard/examples/signals_at_scale.rs),
# beside 1,000 apps in the same run for the per-app ratio. Goal at 10,000: under 1 core
# and under 1 GiB resident. Measures the signal path only, not the guard's ledger writes.
# Usage: bench/signals_at_scale.sh [TICKS]
set -euo pipefail
cd "$(dirname "$0")/.."
ticks="${1:-6}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rearguard-target}"
cargo build --release --quiet --example signals_at_scale
bin="$CARGO_TARGET_DIR/release/examples/signals_at_scale"
for apps in 1000 10000; do
    echo "== $apps apps, $ticks steady ticks of 10 s after the history"
    "$bin" "$apps" "$ticks" | tail -1
done
