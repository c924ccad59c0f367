#!/usr/bin/env bash
# Prints the vendorHash nix/package.nix needs: the hash of `go mod vendor`.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go mod vendor -o "$tmp/vendor"
nix --extra-experimental-features nix-command hash path "$tmp/vendor"
