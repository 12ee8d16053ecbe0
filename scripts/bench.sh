#!/usr/bin/env bash
# Foundation benchmark: one collector + one capture-only agent (release
# build, loopback, fresh temp data dir) started with `kiroku quickstart`.
# Reports: agent RSS when idle, capture-to-searchable latency (250 reply →
# GetEvent finds it), throughput, and collector RSS after MAILS mails.
# usage: scripts/bench.sh [MAILS (default 10000)]
set -euo pipefail
cd "$(dirname "$0")/.."
MAILS=${1:-10000}
cargo build --release --workspace --locked >&2
BIN=$PWD/target/release
TMP=$(mktemp -d /tmp/kiroku-bench.XXXXXX)
SMTP=$((20000 + RANDOM % 10000)); GRPC=$((SMTP + 1))
cleanup() { [ -n "${QS:-}" ] && kill -TERM "$QS" 2>/dev/null; sleep 1; pkill -9 -f "$TMP/" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

(cd "$TMP" && exec "$BIN/kiroku" quickstart --data-dir "$TMP/data" --smtp 127.0.0.1:$SMTP --grpc 127.0.0.1:$GRPC --agent-name bench > "$TMP/qs.log" 2>&1) &
QS=$!
for _ in $(seq 100); do grep -q "Kiroku is running" "$TMP/qs.log" 2>/dev/null && break; sleep 0.2; done
AGENT=$(pgrep -f "kiroku-agent --config $TMP/data/agent.toml")
COLL=$(pgrep -f "kiroku-collector --config $TMP/data/collector.toml")
sleep 10
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "agent idle RSS after 10 s: $(rss_kb $AGENT) kB"
PKI=$TMP/data/pki
Q="--collector https://127.0.0.1:$GRPC --ca $PKI/ca.pem --cert $PKI/investigator-investigator.pem --key $PKI/investigator-investigator.key"
echo "latency (sequential, 10 KB mails, each waited for until searchable):"
"$BIN/kiroku-loadgen" --smtp 127.0.0.1:$SMTP --mails 200 --concurrency 1 --size 10240 --agent bench $Q
echo "throughput ($MAILS x 10 KB mails, 8 connections):"
"$BIN/kiroku-loadgen" --smtp 127.0.0.1:$SMTP --mails "$MAILS" --concurrency 8 --size 10240
# Wait until the collector has everything.
for _ in $(seq 600); do
  n=$("$BIN/kiroku" $Q search --limit 1 2>&1 >/dev/null | awk '{print $3}')
  [ "${n:-0}" -ge $((MAILS + 200)) ] && break; sleep 0.5
done
echo "collector stored: $n events"
echo "collector RSS after $((MAILS + 200)) mails: $(rss_kb $COLL) kB (peak $(hwm_kb $COLL) kB)"
echo "agent RSS after: $(rss_kb $AGENT) kB (peak $(hwm_kb $AGENT) kB)"
echo "collector data dir: $(du -sh "$TMP/data/collector" | cut -f1)"
