#!/usr/bin/env bash
# `make demo`: the whole job end to end on a file:// bucket under ./demo.
# A laptop signs and publishes; a device (a profile and a state directory
# standing in for a NixOS box) polls, verifies, fetches the closure from the
# bucket's binary cache with real Nix, switches and checks in.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo=$root/demo
ota="$root/bin/nix-ota"
agent="$root/bin/nix-ota-agent"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*" | sed "s|$root/||g" >&2; "$@"; }

./scripts/test-deps.sh --nix-only >/dev/null
# Keep demo builds off the network: substitute only from our own cache.
export NIX_CONFIG=$'substituters =\nconnect-timeout = 5'

rm -rf "$demo"
mkdir -p "$demo/device" "$demo/keys"
bucket="file://$demo/bucket"

step "0. One-time: a manifest signing key (the public half goes into every device)"
show "$ota" keygen --out "$demo/keys/sign.key" --name demo-fleet-1 > "$demo/keys/sign.pub"
cat "$demo/keys/sign.pub"
pub=$(cat "$demo/keys/sign.pub")

step "1. The bucket: a directory here; S3, MinIO or R2 in production"
show "$ota" init --bucket "$bucket"

step "2. Build two systems and put A's closure in the bucket's binary cache"
# Both systems carry an application (a copy of a real 7 MB binary); B's
# is a patched copy, so B's push can carry a delta for it (step 5).
for v in 1.0 1.1; do
  mkdir -p "$demo/src/demo-app-$v/bin"
  cp "$agent" "$demo/src/demo-app-$v/bin/demo-app"
done
printf 'demo-app 1.1: a small fix' | dd of="$demo/src/demo-app-1.1/bin/demo-app" bs=1 seek=3000000 conv=notrunc status=none
app1=$(nix-store --add "$demo/src/demo-app-1.0")
app2=$(nix-store --add "$demo/src/demo-app-1.1")
sysA=$(nix-build --no-out-link nix/tests/test-system.nix --argstr name demo-a --argstr nonce "$(date +%s%N)" --arg deps "[ \"$app1\" ]")
sysB=$(nix-build --no-out-link nix/tests/test-system.nix --argstr name demo-b --argstr nonce "$(date +%s%N)" --arg deps "[ \"$app2\" ]")
sys0=$(nix-build --no-out-link nix/tests/test-system.nix --argstr name demo-initial --argstr nonce "$(date +%s%N)")
echo "system A: $sysA (with $app1)"
echo "system B: $sysB (with $app2)"
nix-store --generate-binary-cache-key demo-cache-1 "$demo/keys/cache.sk" "$demo/keys/cache.pk"
show "$ota" push --bucket "$bucket" --store-path "$sysA" --cache-key "$demo/keys/cache.sk"
# The device must fetch them from the cache (the derivations that took
# them as inputs go too, or Nix would keep them).
forget() { nix-store --delete $(nix-store --query --referrers-closure "$@") >/dev/null 2>&1 || true; }
forget "$sysA" "$app1"

step "3. The device: booted into an initial system, agent configured with the keys"
nix-env --profile "$demo/device/profiles/system" --set "$sys0" 2>/dev/null || { mkdir -p "$demo/device/profiles"; nix-env --profile "$demo/device/profiles/system" --set "$sys0"; }
cat > "$demo/device/agent.json" <<EOF
{
  "bucket": "$bucket",
  "channel": "prod",
  "publicKeys": ["$pub"],
  "deviceId": "fridge-007",
  "stateDir": "$demo/device/state",
  "profile": "$demo/device/profiles/system",
  "substituters": ["file://$demo/bucket/cache"],
  "trustedCacheKeys": ["$(cat "$demo/keys/cache.pk")"],
  "healthChecks": ["test -x \$NIX_OTA_STORE_PATH/bin/switch-to-configuration"],
  "switchVia": "direct",
  "prometheusFile": "$demo/device/state/nix-ota.prom"
}
EOF
show "$agent" check-config "$demo/device/agent.json"
export NIX_OTA_TEST_LOG="$demo/device/switch.log"

step "4. Publish system A to channel prod with --wait; the device picks it up, and A is recorded as known good"
show "$ota" publish --bucket "$bucket" --key "$demo/keys/sign.key" --channel prod \
  --store-path "$sysA" --substituter "file://$demo/bucket/cache" --message "first release" \
  --wait=2m --wait-interval 1s &
publisher=$!
sleep 2
show "$agent" once --config "$demo/device/agent.json"
wait "$publisher"

step "5. Publish system B with --push: its application goes up with a delta against A's; the device moves to B"
show "$ota" publish --bucket "$bucket" --key "$demo/keys/sign.key" --channel prod \
  --store-path "$sysB" --substituter "file://$demo/bucket/cache" --message "second release" \
  --push --cache-key "$demo/keys/cache.sk"
forget "$sysB" "$app2"
show "$agent" once --config "$demo/device/agent.json"

step "6. Nothing new: an idle poll is one conditional read and changes nothing"
show "$agent" once --config "$demo/device/agent.json"
echo "(no output: the manifest's ETag was unchanged, so there was nothing to do)"

step "7. What the publisher sees"
show "$ota" verify --bucket "$bucket" --channel prod --public-key "$pub"
show "$ota" history --bucket "$bucket" --channel prod --public-key "$pub"

step "8. What the device reported (its newest check-in, devices/<window>/fridge-007.json)"
checkin=$(ls -t "$demo"/bucket/devices/*/fridge-007.json | head -n1)
echo "${checkin#"$demo/bucket/"}:"
cat "$checkin"
echo "switch-to-configuration calls on the device:"
sed "s|/bin/switch-to-configuration||" "$demo/device/switch.log"

step "9. Roll back: system A again, as a new revision (devices never accept an older one)"
show "$ota" rollback --bucket "$bucket" --key "$demo/keys/sign.key" --channel prod
show "$agent" once --config "$demo/device/agent.json"

step "10. The fleet at a glance: terminal and static dashboard"
show "$ota" status --bucket "$bucket" --public-key "$pub"
show "$ota" dashboard --bucket "$bucket" --public-key "$pub"

current=$(readlink -f "$demo/device/profiles/system")
if [ "$current" != "$sysA" ]; then echo "demo FAILED: device runs $current, expected $sysA" >&2; exit 1; fi
show "$ota" doctor --bucket "$bucket" --public-key "$pub" || true

step "Done"
echo "The device went A -> B -> A (rollback) and runs $sysA."
echo "Everything is under ./demo: bucket/ (what S3 would hold), keys/, device/."
echo "Dashboard: $demo/bucket/index.html"
echo "  open it with: xdg-open file://$demo/bucket/index.html"
echo "  or serve it:  (cd $demo/bucket && python3 -m http.server 8080) and browse http://127.0.0.1:8080/"
