#!/usr/bin/env bash
# Query at scale (issue 6, part 3): bulk-loads a collector data directory
# with synthetic mail and file events (the collector's own store code,
# collector/examples/bulk_load.rs; resumable), then starts a real collector
# on it and measures Search by address + time range, full-text Search, the
# 30-day ExfilReport and GetRaw of a 10 MB message over mTLS gRPC.
# usage: scripts/bench-query.sh [--tiny | --mails N --files M] [--data DIR]
#        [--no-load] [--queries N] [--out FILE]
# The data directory defaults to /work/bench-data/query-<mails>-<files>
# (kept for re-runs; delete it when done).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p kiroku-collector --bins --example bulk_load >&2
cargo build --release --locked -p kiroku-tests --bin kiroku-bench-query >&2
mails=1000000 files=10000000 data=""
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) mails=10000 files=100000 ;;
    --mails) mails=$2; shift ;;
    --files) files=$2; shift ;;
    --data) data=$2; shift ;;
  esac
  shift
done
if [ -z "$data" ]; then
  data="${KIROKU_BENCH_DATA:-/work/bench-data}/query-$mails-$files"
  args+=(--data "$data")
fi
mkdir -p "$(dirname "$data")"
exec target/release/kiroku-bench-query "${args[@]}"
