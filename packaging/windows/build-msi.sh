#!/usr/bin/env bash
# Builds the Kiroku agent's MSI with wixl (Debian: wixl, msitools).
#
#   packaging/windows/build-msi.sh [--exe PATH] [--version X.Y.Z] [--out DIR]
#                                  [--property NAME=VALUE]...
#
# Without --exe it cross-builds the release exe first
# (cargo build --release --target x86_64-pc-windows-gnu -p kiroku-agent).
# The version defaults to the workspace's (Cargo.toml), without a
# pre-release suffix (an MSI's ProductVersion is numeric). Prints the path
# of kiroku-agent-<version>-x64.msi (default directory target/windows).
# --property bakes a default into the MSI (e.g. COLLECTOR=https://…) for
# deployment tools that cannot pass properties per install (Group Policy
# assignment); a property given to msiexec still overrides it.
#
# Signing (optional; README "Deploying on Windows PCs"): with
# KIROKU_SIGN_PKCS12=<file.p12> (and KIROKU_SIGN_PASS_FILE=<file with its
# password>, KIROKU_SIGN_TIMESTAMP=<RFC 3161 URL>) the exe is signed before
# it is packaged and the MSI after, with osslsigncode.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target=x86_64-pc-windows-gnu
exe="" version="" out="$root/target/windows"
props=()

while [ $# -gt 0 ]; do
  case "$1" in
    --exe) exe="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --property)
      prop_re="^[A-Z][A-Z0-9_]*=[^']*\$"
      [[ "$2" =~ $prop_re ]] || {
        echo "build-msi.sh: --property $2: give NAME=VALUE, NAME in capitals, VALUE without '" >&2; exit 2; }
      props+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "build-msi.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

for tool in wixl msibuild; do
  command -v "$tool" >/dev/null || {
    echo "build-msi.sh: $tool is missing: apt-get install wixl msitools" >&2; exit 2; }
done

if [ -z "$version" ]; then
  version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -1)"
fi
version="${version%%-*}"
if ! [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "build-msi.sh: version '$version' is not X.Y.Z (an MSI needs a numeric version)" >&2
  exit 2
fi

if [ -z "$exe" ]; then
  (cd "$root" && CARGO_INCREMENTAL=0 cargo build --release --target "$target" -p kiroku-agent)
  exe="$root/target/$target/release/kiroku-agent.exe"
fi
[ -f "$exe" ] || { echo "build-msi.sh: $exe does not exist" >&2; exit 2; }

mkdir -p "$out"
out="$(cd "$out" && pwd)"
msi="$out/kiroku-agent-$version-x64.msi"
stage="$(mktemp -d "$out/stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
cp "$exe" "$stage/kiroku-agent.exe"
# The release exe keeps line tables for backtraces (106 MB on 2026-12-06);
# the packaged one is stripped (18 MB): Windows loads every section, so the
# debug sections would cost memory on every PC (BENCHMARKS.md, "Windows
# agent (under Wine)"). Stripped before it is signed. KIROKU_MSI_NO_STRIP=1
# packages the exe as given (the tests compare it byte for byte).
if [ -z "${KIROKU_MSI_NO_STRIP:-}" ]; then
  x86_64-w64-mingw32-strip --strip-debug "$stage/kiroku-agent.exe"
fi

sign() { # file
  [ -n "${KIROKU_SIGN_PKCS12:-}" ] || return 0
  local args=(sign -pkcs12 "$KIROKU_SIGN_PKCS12" -n "Kiroku Agent" -h sha256)
  [ -n "${KIROKU_SIGN_PASS_FILE:-}" ] && args+=(-readpass "$KIROKU_SIGN_PASS_FILE")
  [ -n "${KIROKU_SIGN_TIMESTAMP:-}" ] && args+=(-ts "$KIROKU_SIGN_TIMESTAMP")
  osslsigncode "${args[@]}" -in "$1" -out "$1.signed" >/dev/null
  mv "$1.signed" "$1"
}
sign "$stage/kiroku-agent.exe"

# wixl finds Source files relative to the working directory.
(cd "$stage" && wixl -a x64 -D Version="$version" -o "$stage/agent.msi" "$here/kiroku-agent.wxs")

# What wixl cannot express (see the comment at the top of the .wxs):
# - the service start only when START_SERVICE = "1";
# - the config-write custom action's command line kept out of the log
#   (msidbCustomActionTypeHideTarget, 0x2000).
msibuild "$stage/agent.msi" -q "UPDATE \`Component\` SET \`Condition\` = 'START_SERVICE = \"1\"' WHERE \`Component\` = 'AgentServiceStart'"
msibuild "$stage/agent.msi" -q "UPDATE \`CustomAction\` SET \`Type\` = 11282 WHERE \`Action\` = 'WriteConfig'"
for p in "${props[@]}"; do
  msibuild "$stage/agent.msi" -q "INSERT INTO \`Property\` (\`Property\`, \`Value\`) VALUES ('${p%%=*}', '${p#*=}')"
done

sign "$stage/agent.msi"
mv "$stage/agent.msi" "$msi"
echo "$msi"
