#!/usr/bin/env bash
# Makes throwaway certificates for the TLS tests in DIR (with the openssl CLI):
#   ca.pem, ca.key          a CA
#   server.pem, server.key  signed by it, for 127.0.0.1 and localhost
#   client.pem, client.key  signed by it, for a client that must present one (mutual TLS)
set -euo pipefail
dir=${1:?usage: test-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" 2>/dev/null >/dev/null || { "$@"; exit 1; }; }
quiet openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 \
  -subj "/CN=px test CA"
leaf() { # name, extensions
  quiet openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
  printf '%b' "$2" >"$1.ext"
  quiet openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$1.pem" -days 1 -extfile "$1.ext"
}
leaf server 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n'
leaf client 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n'
