#!/bin/sh
# Generates the S/MIME samples of the collector's analysis tests
# (collector/src/analysis/crypto/tests.rs) with OpenSSL: a test CA, a
# signer certificate for alice@corp.example, a signed mail (detached,
# multipart/signed), an opaque signed mail (application/pkcs7-mime,
# signed-data) and an encrypted one (enveloped-data). Run once; the outputs
# are committed so tests need no OpenSSL. Keys are throwaway test keys.
set -eu
cd "$(dirname "$0")"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$t/ca.key" -out "$t/ca.pem" \
  -days 36500 -subj "/CN=Kiroku Test CA" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$t/alice.key" -out "$t/alice.csr" \
  -subj "/CN=Alice Example/emailAddress=alice@corp.example" 2>/dev/null
printf 'subjectAltName=email:alice@corp.example\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n' > "$t/ext"
openssl x509 -req -in "$t/alice.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
  -days 36500 -extfile "$t/ext" -out "$t/alice.pem" 2>/dev/null
printf 'Content-Type: text/plain\r\n\r\nThe quarterly plan is attached.\r\n' > "$t/body"
hdr='From: alice@corp.example\nTo: bob@partner.example\nSubject: signed\n'
{ printf "$hdr"; openssl smime -sign -in "$t/body" -signer "$t/alice.pem" -inkey "$t/alice.key" \
    -certfile "$t/ca.pem"; } > signed.eml
{ printf "$hdr"; openssl smime -sign -nodetach -in "$t/body" -signer "$t/alice.pem" -inkey "$t/alice.key"; } > opaque-signed.eml
{ printf "$hdr"; openssl smime -encrypt -aes256 -in "$t/body" "$t/alice.pem"; } > encrypted.eml
