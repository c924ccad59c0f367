#!/usr/bin/env bash
# Installs what the tests need, idempotently: Debian's Nix (real Nix for the
# agent's side effects) and a MinIO server (real S3), built once from the Go
# module proxy and cached outside the repository.
set -euo pipefail

MINIO_VERSION=${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
cache=${NIX_OTA_CACHE:-$HOME/.cache/nix-ota}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=()
command -v nix-store >/dev/null 2>&1 || missing+=(nix-bin)
if [ "${1:-}" != "--nix-only" ] && [ -z "${NIX_OTA_CHROMIUM:-}" ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
fi
for pkg in ${NIX_OTA_EXTRA_APT:-}; do missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-deps: installing ${missing[*]} with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Single-user Nix as root needs no daemon; Debian's nix.conf already turns
# the sandbox off. Make sure the store database can be created.
if [ "$(id -u)" -eq 0 ]; then
  mkdir -p /nix/var/nix/profiles /nix/var/nix/gcroots
fi

if [ "${1:-}" = "--nix-only" ]; then
  exit 0
fi

if [ -n "${NIX_OTA_MINIO:-}" ] && [ -x "${NIX_OTA_MINIO}" ]; then
  :
elif command -v minio >/dev/null 2>&1; then
  :
elif [ -x "$cache/bin/minio" ]; then
  :
else
  echo "test-deps: building MinIO $MINIO_VERSION into $cache/bin (one time, about 5 minutes)"
  mkdir -p "$cache/bin"
  (cd "$(mktemp -d)" && GOBIN="$cache/bin" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install "github.com/minio/minio@$MINIO_VERSION")
fi
echo "test-deps: nix $(nix-store --version | awk '{print $NF}'), chromium $(chromium --version 2>/dev/null | awk '{print $2}'), minio ready"
