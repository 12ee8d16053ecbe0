#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests that run the real
# binaries against real peers (aiosmtpd upstream, Python smtplib and grpcio
# clients) on loopback. Installs the Python peers first if they are missing.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import aiosmtpd, grpc, grpc_reflection, grpc_health" 2>/dev/null; then
  echo "installing Python test peers from tests/requirements.txt" >&2
  python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r tests/requirements.txt
fi

# --workspace builds every binary first (the agent and collector packages
# have integration tests), which the end-to-end tests in tests/ then run.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ {p += $4; f += $6; s += $8} END {printf "%d passed, %d failed, %d skipped\n", p, f, s}' "$log"
exit "$status"
