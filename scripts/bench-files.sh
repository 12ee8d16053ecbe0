#!/usr/bin/env bash
# File capture benchmark: events/s without loss and agent CPU, agent RSS
# with 100,000 watched files, time to hash and record a 1 GB copy, agent
# RSS idle / right after a burst / after a minute idle.
# usage: scripts/bench-files.sh [--burst N] [--watched N] [--big-mb N]
#        [--idle-files N] [--idle-secs N] [--parts rate,tree,big,post-burst]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked >&2
exec target/release/kiroku-files-bench "$@"
