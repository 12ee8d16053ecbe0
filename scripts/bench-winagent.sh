#!/usr/bin/env bash
# The Windows agent under Wine side by side with the Linux agent (issue 22):
# idle RSS/CPU, binary sizes, relay overhead vs direct to the same Postfix.
# Needs root (a private Postfix), wine64 and mingw (scripts/test.sh installs
# them). The agents and the load generator are release builds; the CLI (PKI)
# and the collector (the idle agents' peer) are not measured and come from
# the debug build.
# usage: scripts/bench-winagent.sh [--rounds N] [--small N] [--big N] [--idle-secs N]
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_INCREMENTAL=0 cargo build --release --locked --target x86_64-pc-windows-gnu -p kiroku-agent >&2
cargo build --release --locked -p kiroku-agent -p kiroku-tests --bin kiroku-agent --bin kiroku-winagent-bench >&2
cargo build --locked -p kiroku-collector --bin kiroku --bin kiroku-collector >&2
KIROKU_BIN_DIR="$PWD/target/debug" exec target/release/kiroku-winagent-bench "$@"
