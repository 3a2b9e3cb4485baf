#!/usr/bin/env bash
# Test-only PKI for the `session` fuzz target (a CA and a server certificate for localhost,
# EC P-256, valid 9000 days from when it was made; the target reads the clock as 2030-01-01). Not secret: these keys protect nothing. Re-run to replace.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -sha256 -subj "/CN=tether fuzz CA" \
    -days 9000 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    -outform DER -out ca.der
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/server.key"
openssl pkcs8 -topk8 -nocrypt -in "$tmp/server.key" -outform DER -out server.key.der
openssl req -new -key "$tmp/server.key" -subj "/CN=localhost" -out "$tmp/server.csr"
openssl x509 -req -in "$tmp/server.csr" -CA ca.der -CAform DER -CAkey "$tmp/ca.key" \
    -days 9000 -sha256 \
    -extfile <(printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n') \
    -outform DER -out server.der
