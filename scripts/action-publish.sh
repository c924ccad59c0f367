#!/usr/bin/env bash
# The GitHub Action's publish step (action.yml): inputs arrive as
# environment variables. Writes the revision to $GITHUB_OUTPUT.
set -euo pipefail

: "${NIX_OTA_BUCKET:?input 'bucket' is required}"
: "${INPUT_CHANNEL:?input 'channel' is required}"
: "${INPUT_STORE_PATH:?input 'store-path' is required}"
: "${INPUT_KEY:?input 'key' is required}"

if [ -n "${INPUT_NIX_OTA:-}" ]; then
  read -r -a ota <<< "$INPUT_NIX_OTA"
else
  ota=(nix --extra-experimental-features "nix-command flakes" run "${NIX_OTA_ACTION_PATH:?}#nix-ota" --)
fi

keyfile=""
case "$INPUT_KEY" in
  -----BEGIN*)
    keyfile=$(mktemp)
    trap 'rm -f "$keyfile"' EXIT
    chmod 600 "$keyfile"
    printf '%s\n' "$INPUT_KEY" > "$keyfile"
    ;;
  *://*) keyfile=$INPUT_KEY ;;
  *)
    if [ ! -f "$INPUT_KEY" ]; then
      echo "::error::input 'key' is neither a PEM key nor an existing key file" >&2
      exit 2
    fi
    keyfile=$INPUT_KEY
    ;;
esac

args=(publish --channel "$INPUT_CHANNEL" --key "$keyfile" --expires "${INPUT_EXPIRES:-720h}" --rollout "${INPUT_ROLLOUT:-100}")
while IFS= read -r p; do
  [ -n "$p" ] && args+=(--store-path "$p")
done <<< "$INPUT_STORE_PATH"
while IFS= read -r s; do
  [ -n "$s" ] && args+=(--substituter "$s")
done <<< "${INPUT_SUBSTITUTER:-}"
[ -n "${INPUT_MESSAGE:-}" ] && args+=(--message "$INPUT_MESSAGE")
[ -n "${INPUT_WAIT:-}" ] && args+=(--wait="$INPUT_WAIT")

out=$("${ota[@]}" "${args[@]}")
printf '%s\n' "$out"
rev=$(sed -n 's/^published channel .* revision \([0-9][0-9]*\):.*/\1/p' <<< "$out")
if [ -z "$rev" ]; then
  echo "::error::could not read the published revision from nix-ota's output" >&2
  exit 1
fi
echo "revision=$rev" >> "${GITHUB_OUTPUT:-/dev/null}"
echo "::notice::published $INPUT_CHANNEL revision $rev"
