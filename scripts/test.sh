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
# clients (swaks, msmtp, curl); `tnef`, the oracle of the TNEF reader's test;
# zip and 7z, which the archive tests make their archives with (zip -P, 7z
# AES, 7z with encrypted headers); openssl, the local RFC 3161 time-stamp
# authority (`openssl ts`), the independent check of checkpoint signatures
# and the standard-tools check of a case bundle. Issue 21's BitTorrent swarm
# (tests/tests/network_p2p.rs, in network namespaces: iproute2): the
# opentracker tracker, mktorrent, aria2c as seeder, leechers and monitored
# client. Installed when missing and we may.
need=()
for c in /usr/sbin/postfix:postfix /usr/sbin/saslpasswd2:sasl2-bin /usr/bin/swaks:swaks /usr/bin/msmtp:msmtp /usr/bin/curl:curl /usr/bin/tnef:tnef /usr/bin/zip:zip /usr/bin/7z:p7zip-full /usr/bin/openssl:openssl /usr/lib/python3.11/test/test_email/data:libpython3.11-testsuite /usr/sbin/ip:iproute2 /usr/bin/opentracker:opentracker /usr/bin/mktorrent:mktorrent /usr/bin/aria2c:aria2; do
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

# Exim and OpenSMTPD as further real upstreams. Debian's exim4, opensmtpd
# and postfix packages exclude each other, so their packages are unpacked
# (not installed) under target/peers/<name>, and the users and directories
# their binaries are built for are added, as the packages would.
unpack_peer() { # name binary-path packages...
  local name=$1 bin=$2 root=target/peers/$1 debs
  shift 2
  [ -x "$root/$bin" ] && return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 0
  echo "unpacking Debian's $name under $root" >&2
  debs=$(mktemp -d)
  if (cd "$debs" && { apt-get download -qq "$@" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get download -qq "$@" >/dev/null; }; }); then
    mkdir -p "$root"
    for d in "$debs"/*.deb; do dpkg -x "$d" "$root"; done
  else
    echo "warning: could not download $name; its tests will be counted as skipped" >&2
  fi
  rm -rf "$debs"
}
system_user() {
  id "$1" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$1"
}
unpack_peer exim usr/sbin/exim4 exim4-daemon-light exim4-base
unpack_peer opensmtpd usr/sbin/smtpd opensmtpd
if [ "$(id -u)" = 0 ]; then
  [ -x target/peers/exim/usr/sbin/exim4 ] && system_user Debian-exim
  if [ -x target/peers/opensmtpd/usr/sbin/smtpd ]; then
    system_user opensmtpd
    system_user opensmtpq
    mkdir -p /var/lib/opensmtpd/empty /var/spool/smtpd
  fi
fi

# The Windows agent (issue 22): cross-built with mingw and run under Wine by
# the tests in tests/tests/windows_*.rs (tests/src/wine.rs). Installed when
# missing and we may; when the target cannot be had, those tests are
# counted as skipped with the reason.
win=x86_64-pc-windows-gnu
if ! rustup target list --installed 2>/dev/null | grep -qx "$win"; then
  rustup target add "$win" >/dev/null 2>&1 || echo "warning: cannot add the Rust target $win; the Windows tests will be counted as skipped" >&2
fi
wneed=()
# msitools: msibuild, which build-msi.sh uses after wixl; osslsigncode: its
# signing (windows_msi.rs).
for c in /usr/bin/x86_64-w64-mingw32-gcc:gcc-mingw-w64-x86-64 /usr/lib/wine/wine64:wine64 /usr/bin/wixl:wixl /usr/bin/msibuild:msitools /usr/bin/osslsigncode:osslsigncode; do
  [ -e "${c%%:*}" ] || wneed+=("${c##*:}")
done
if [ ${#wneed[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing the Windows build and test peers: ${wneed[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${wneed[@]}" >/dev/null \
    || echo "warning: could not install ${wneed[*]}; the Windows tests will be counted as skipped" >&2
fi
if rustup target list --installed 2>/dev/null | grep -qx "$win" && [ -e /usr/bin/x86_64-w64-mingw32-gcc ]; then
  cargo build --locked --target "$win" -p kiroku-agent
fi

# Tests that cannot run here (a missing peer) write a line to this file and
# are counted as skipped, not passed.
export KIROKU_SKIP_LOG
KIROKU_SKIP_LOG=$(mktemp)

# --workspace builds every binary first (the agent and collector packages
# have integration tests), which the end-to-end tests in tests/ then run.
# The agent and the collector are built with their test hooks (a wrong
# clock, a paused file watcher: agent/src/test_hooks.rs; a slowed index
# rebuild: collector/src/test_hooks.rs), which release builds never have.
log=$(mktemp)
trap 'rm -f "$log" "$KIROKU_SKIP_LOG"' EXIT
set +e
cargo test --workspace --locked --features kiroku-agent/test-hooks,kiroku-collector/test-hooks "$@" 2>&1 | tee "$log"
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
