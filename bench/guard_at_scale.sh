#!/usr/bin/env bash
# The whole guard at scale: `rearguard guard` (release build) guarding APPS apps, each with a
# release under watch, signals from a stand-in Prometheus serving every app's series
# (crates/rearguard/examples/guard_at_scale.rs), ticks of TICK. Reports the guard process's
# steady CPU (cores) once every release is watched, and its resident memory. Issue 14's goal
# at 10,000 apps and 10 s ticks: under 1 core and under 1 GiB resident.
# Usage: bench/guard_at_scale.sh [APPS] [SECONDS] [TICK]
set -euo pipefail
cd "$(dirname "$0")/.."
apps="${1:-10000}"
seconds="${2:-60}"
tick="${3:-10s}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rearguard-target}"
cargo build --release --quiet --bin rearguard --example guard_at_scale
"$CARGO_TARGET_DIR/release/examples/guard_at_scale" "$apps" "$seconds" "$tick"
