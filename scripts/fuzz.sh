#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, seeded from
# fuzz/seeds/<target>. cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1
# enables them on the stable toolchain. A crash stops with the input saved
# under fuzz/artifacts/<target>/.
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(smtp_command smtp_reply smtp_data mime_record)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t (${secs}s)"
  cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 \
    | grep -E "Done [0-9]+ runs|ERROR|panicked|SUMMARY|Test unit written" || true
done
