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

# Debian peers: a real Postfix (with Cyrus SASL) as upstream, and real
# clients (swaks, msmtp, curl). Installed when missing and we may.
need=()
for c in /usr/sbin/postfix:postfix /usr/sbin/saslpasswd2:sasl2-bin /usr/bin/swaks:swaks /usr/bin/msmtp:msmtp /usr/bin/curl:curl /usr/lib/python3.11/test/test_email/data:libpython3.11-testsuite; do
  [ -e "${c%%:*}" ] || need+=("${c##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian test peers: ${need[*]}" >&2
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" libsasl2-modules >/dev/null
  else
    echo "warning: missing ${need[*]}; tests that need them will be counted as skipped" >&2
  fi
fi

# Tests that cannot run here (a missing peer) write a line to this file and
# are counted as skipped, not passed.
export KIROKU_SKIP_LOG
KIROKU_SKIP_LOG=$(mktemp)

# --workspace builds every binary first (the agent and collector packages
# have integration tests), which the end-to-end tests in tests/ then run.
log=$(mktemp)
trap 'rm -f "$log" "$KIROKU_SKIP_LOG"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
skips=$(wc -l < "$KIROKU_SKIP_LOG")
if [ "$skips" -gt 0 ]; then
  echo "skipped (peer missing):" >&2
  sed 's/^/  /' "$KIROKU_SKIP_LOG" >&2
fi
awk -v k="$skips" '/^test result:/ {p += $4; f += $6; s += $8} END {printf "%d passed, %d failed, %d skipped\n", p - k, f, s + k}' "$log"
exit "$status"
