#!/usr/bin/env bash
# Writes docs/module.md, the option reference, from nix/module.nix itself
# (rendered by nix/docs.nix). With --check, only reports whether it is current.
#
# Needs nix-instantiate and nixpkgs' lib/: $NIXPKGS_LIB (a nixpkgs lib/
# directory; `nix develop` sets it), else <nixpkgs/lib> from NIX_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=${NIXPKGS_LIB:-}
if [ -z "$lib" ]; then
  lib=$(nix-instantiate --eval --expr 'toString <nixpkgs/lib>' 2>/dev/null | tr -d '"') || true
fi
if [ -z "$lib" ] || [ ! -f "$lib/default.nix" ]; then
  echo "module-docs: nixpkgs' lib/ not found: set NIXPKGS_LIB=/path/to/nixpkgs/lib, put nixpkgs on NIX_PATH, or run in \`nix develop\`" >&2
  exit 2
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
nix-instantiate --eval --strict --json \
  --expr '{ lib }: import ./nix/docs.nix { lib = import lib; }' --arg lib "$lib" |
  python3 -c 'import json, sys; sys.stdout.write(json.load(sys.stdin))' >"$tmp"
if [ "${1:-}" = "--check" ]; then
  if ! diff -u docs/module.md "$tmp"; then
    echo "module-docs: docs/module.md is stale; run scripts/module-docs.sh" >&2
    exit 1
  fi
  echo "module-docs: docs/module.md is current"
else
  mv "$tmp" docs/module.md
  trap - EXIT
  echo "module-docs: wrote docs/module.md ($(grep -c '^## ' docs/module.md) options)"
fi
