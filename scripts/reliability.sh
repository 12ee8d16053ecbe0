#!/usr/bin/env bash
# The reliability table: fault injection against the real binaries
# (kill -9 of agent and collector, network faults between them) while mail
# flows through the relay. Prints Markdown rows for RELIABILITY.md.
# usage: scripts/reliability.sh [--soak-minutes N] [--kills N] [--net-rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r tests/requirements.txt
cargo build --workspace --locked >&2
exec target/debug/kiroku-reliability "$@"
