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
exec cargo test --workspace --locked "$@"
