#!/usr/bin/env bash
# Maintenance at scale (issue 19): bulk-loads a data directory whose events
# have all expired (collector/examples/bulk_load.rs), starts a collector
# built with the `test-hooks` feature (the retention clock moved through
# KIROKU_TEST_CLOCK_FILE: a benchmark build, never shipped), and measures a
# marking run and a purging run: events verified, marked and purged per
# second, ingest and search latency with no run and during the purge, and
# the space reclaimed per part of the data directory.
# usage: scripts/bench-maintenance.sh [--mails N] [--files M] [--data DIR]
#        [--out FILE] [--keep]
# The data directory defaults to /work/bench-data/maintenance and is
# deleted at the end unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
cargo build --release -p kiroku-collector --features test-hooks --bins --example bulk_load >&2
cargo build --release -p kiroku-tests --bin kiroku-bench-maintenance >&2
args=("$@")
case " $* " in
  *" --data "*) ;;
  *) args+=(--data "${KIROKU_BENCH_DATA:-/work/bench-data}/maintenance") ;;
esac
mkdir -p "${KIROKU_BENCH_DATA:-/work/bench-data}"
exec target/release/kiroku-bench-maintenance --collector target/release/kiroku-collector "${args[@]}"
