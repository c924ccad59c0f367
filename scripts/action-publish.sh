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

command -v jq >/dev/null || { echo "::error::jq is needed to read nix-ota's --json output (GitHub's runners have it; apt-get install jq elsewhere)" >&2; exit 2; }

args=(publish --json --channel "$INPUT_CHANNEL" --key "$keyfile" --expires "${INPUT_EXPIRES:-720h}" --rollout "${INPUT_ROLLOUT:-100}")
while IFS= read -r p; do
  [ -n "$p" ] && args+=(--store-path "$p")
done <<< "$INPUT_STORE_PATH"
while IFS= read -r s; do
  [ -n "$s" ] && args+=(--substituter "$s")
done <<< "${INPUT_SUBSTITUTER:-}"
[ -n "${INPUT_MESSAGE:-}" ] && args+=(--message "$INPUT_MESSAGE")
[ -n "${INPUT_WAIT:-}" ] && args+=(--wait="$INPUT_WAIT")
[ -n "${INPUT_MIN_DEVICES:-}" ] && args+=(--min-devices "$INPUT_MIN_DEVICES")
[ "${INPUT_ALLOW_EMPTY:-false}" = true ] && args+=(--allow-empty)
[ "${INPUT_SKIP_CLOSURE_CHECK:-false}" = true ] && args+=(--skip-closure-check)

# The revision is read from --json before --wait's verdict: a publish whose
# rollout then fails still reports which revision it wrote.
status=0
out=$("${ota[@]}" "${args[@]}") || status=$?
printf '%s\n' "$out"
rev=$(jq -er '.revision' <<< "$out" 2>/dev/null || true)
if [ -n "$rev" ]; then
  echo "revision=$rev" >> "${GITHUB_OUTPUT:-/dev/null}"
  echo "::notice::published $INPUT_CHANNEL revision $rev"
fi
if [ "$status" -ne 0 ]; then
  echo "::error::nix-ota publish exited $status${rev:+ (revision $rev was published)}" >&2
  exit "$status"
fi
if [ -z "$rev" ]; then
  echo "::error::could not read the published revision from nix-ota's --json output" >&2
  exit 1
fi
