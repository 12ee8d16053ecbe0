#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, seeded from
# fuzz/seeds/<target> and fuzz/regressions/<target>; new inputs go to
# fuzz/corpus/<target> (not committed). cargo-fuzz needs nightly flags;
# RUSTC_BOOTSTRAP=1 enables them on the stable toolchain. A failure saves
# the input under fuzz/artifacts/<target>/, the full log stays in
# fuzz/artifacts/<target>.log, and the script exits non-zero.
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(smtp_command smtp_reply smtp_data mime_record sasl_user grpc_ingest grpc_query)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" artifacts
  dirs=("corpus/$t" "seeds/$t")
  [ -d "regressions/$t" ] && dirs+=("regressions/$t")
  log="artifacts/$t.log"
  extra=()
  [ -f "dicts/$t.dict" ] && extra+=("-dict=dicts/$t.dict")
  echo "== $t (${secs}s)"
  if cargo fuzz run "$t" "${dirs[@]}" -- -max_total_time="$secs" -rss_limit_mb=2048 "${extra[@]}" >"$log" 2>&1; then
    grep -E "^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs" "$log" || tail -n 3 "$log"
  else
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" || tail -n 20 "$log"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]} (logs in fuzz/artifacts/<target>.log)" >&2
  exit 1
fi
