#!/usr/bin/env bash
# Ingest, agent footprint, storage and the rsyslog reference (issue 6):
# simulated agents (1, 10, 100) shipping small file events, 10 KB and 1 MB
# mails to a real collector; a real agent's buffer drained; idle and
# 100 mails/s footprint; bytes on disk per kind; one attachment in 100
# mails; rsyslog with TLS and a disk-assisted queue side by side.
# usage: scripts/bench-ingest.sh [--tiny] [--sections ingest,drain,...]
#        [--kinds small,mail10k,mail1m] [--agents 1,10,100] [--perf-dir DIR]
# rsyslog needs: apt-get install rsyslog rsyslog-gnutls
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p kiroku-collector -p kiroku-agent -p kiroku-tests >&2
exec target/release/kiroku-bench-ingest "$@"
