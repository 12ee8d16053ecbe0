#!/bin/bash
# Export rate benchmark (issue 18, item 7): a bulk-loaded store, a release
# collector writing signed checkpoints, `kiroku export` timed for cases of
# several sizes, and `kiroku verify-bundle` on each.
set -euo pipefail
D=/work/bench-data/export-bench
R=/work/wt/export/target/release
MAILS=${MAILS:-50000}
FILES=${FILES:-150000}
cd $D
rm -rf data pki case-* collector.log
$R/examples/bulk_load --dir $D/data --mails $MAILS --files $FILES --users 200 --days 30 --big-raw-mb 0 2>&1 | tail -2
$R/kiroku certs init --dir pki >/dev/null
$R/kiroku certs issue --dir pki --role collector --name localhost --san 127.0.0.1 >/dev/null
$R/kiroku certs issue --dir pki --role admin --name boss >/dev/null
$R/kiroku certs issue --dir pki --role signer --name localhost >/dev/null
PORT=47443
cat > collector.toml <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$D/data"
[tls]
ca = "$D/pki/ca.pem"
cert = "$D/pki/collector-localhost.pem"
key = "$D/pki/collector-localhost.key"
[checkpoint]
interval = "2s"
signing_cert = "$D/pki/signer-localhost.pem"
signing_key = "$D/pki/signer-localhost.key"
TOML
cat > cli.toml <<TOML
endpoint = "https://127.0.0.1:$PORT"
server_name = "localhost"
[tls]
ca = "$D/pki/ca.pem"
cert = "$D/pki/admin-boss.pem"
key = "$D/pki/admin-boss.key"
TOML
$R/kiroku-collector --config collector.toml > collector.log 2>&1 &
CPID=$!
trap 'kill $CPID 2>/dev/null || true' EXIT
for i in $(seq 1 600); do ls data/checkpoints/*.ckp >/dev/null 2>&1 && break; sleep 0.5; done
sleep 3
echo "journal: $(du -sh data/journal | cut -f1), events $((MAILS+FILES)), checkpoints $(ls data/checkpoints | wc -l)"
END=$(python3 -c "import json;print(json.load(open('data/bench-manifest.json')).get('to_ms',0))" 2>/dev/null || echo 0)
run() { # name, filter args...
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o time-$name.txt $R/kiroku --config cli.toml export --case "$name" --out case-$name "$@" > /dev/null 2> export-$name.err || { cat export-$name.err; return 1; }
  local secs=$(cut -d' ' -f1 time-$name.txt) rss=$(cut -d' ' -f2 time-$name.txt)
  local ev=$(python3 -c "import json;print(len(json.load(open('case-$name/manifest.json'))['events']))")
  local bytes=$(du -sb case-$name | cut -f1)
  /usr/bin/time -f "%e" -o vtime-$name.txt $R/kiroku verify-bundle case-$name --ca pki/ca.pem > verify-$name.out || true
  echo "| $name | $* | $ev | $bytes | $secs | $(python3 -c "print(round($ev/$secs))") | $(python3 -c "print(round($bytes/$secs/1e6,1))") | $((rss/1024)) | $(cat vtime-$name.txt) | $(tail -1 verify-$name.out | cut -c1-14) |"
}
H=3600000
echo "| case | filter | events | bundle bytes | export s | events/s | MB/s | CLI peak RSS MB | verify-bundle s | check |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run one --from "$(python3 -c "import datetime;print(datetime.datetime.utcfromtimestamp(($END-2*$H)/1000).strftime('%Y-%m-%dT%H:%M:%SZ'))")" --to "$(python3 -c "import datetime;print(datetime.datetime.utcfromtimestamp(($END-2*$H+60000)/1000).strftime('%Y-%m-%dT%H:%M:%SZ'))")"
run hour --from "$(python3 -c "import datetime;print(datetime.datetime.utcfromtimestamp(($END-3*$H)/1000).strftime('%Y-%m-%dT%H:%M:%SZ'))")" --to "$(python3 -c "import datetime;print(datetime.datetime.utcfromtimestamp(($END-2*$H)/1000).strftime('%Y-%m-%dT%H:%M:%SZ'))")"
run day --from "$(python3 -c "import datetime;print(datetime.datetime.utcfromtimestamp(($END-24*$H)/1000).strftime('%Y-%m-%dT%H:%M:%SZ'))")" --to "$(python3 -c "import datetime;print(datetime.datetime.utcfromtimestamp($END/1000).strftime('%Y-%m-%dT%H:%M:%SZ'))")"
run mails-week --kind email --from "$(python3 -c "import datetime;print(datetime.datetime.utcfromtimestamp(($END-168*$H)/1000).strftime('%Y-%m-%dT%H:%M:%SZ'))")"
grep -c "case exported" collector.log || true
