#!/usr/bin/env bash
# Relay overhead against direct submission to the same Postfix, side by
# side in one run, and agent memory while a 50 MB message passes.
# Needs root (it starts a private Postfix on loopback).
# usage: scripts/bench-relay.sh [--rounds N] [--small N] [--big N] [--huge-mb N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked >&2
exec target/release/kiroku-relay-bench "$@"
