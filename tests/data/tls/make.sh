#!/usr/bin/env bash
# Regenerates the TLS fixtures of the ipc-bridge tests (test use only: the
# private keys are public). A certificate authority, one certificate for
# every test bridge (server and client use, for 127.0.0.1 and the test
# hosts' 192.0.2.1-3), and a second, unrelated authority; EC P-256, valid
# for 100 years. Usage: tests/data/tls/make.sh
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
    -subj "/CN=ipc-bridge test CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
    -subj "/CN=another CA" -keyout other-ca.key -out other-ca.pem 2>/dev/null
ext=$(mktemp)
trap 'rm -f "$ext" bridge.csr ca.srl' EXIT
printf 'subjectAltName=IP:127.0.0.1,IP:192.0.2.1,IP:192.0.2.2,IP:192.0.2.3,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ext"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=ipc-bridge test" \
    -keyout bridge.key -out bridge.csr 2>/dev/null
openssl x509 -req -in bridge.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$ext" -out bridge.pem 2>/dev/null
rm -f ca.key other-ca.key
openssl verify -CAfile ca.pem bridge.pem
