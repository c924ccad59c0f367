# NixOS VM test: a bucket node (MinIO) and a device node running
# services.nix-ota-agent with scoped credentials, on a read-only Nix store.
#
#   0. the device's /nix/store is read-only, as on a NixOS device, and the
#      agent's unit reaches it through nix-daemon (a root Nix without the
#      daemon would need a mount namespace to write it, which the unit's
#      RestrictNamespaces= forbids);
#   1. a validly signed update switches /run/current-system and the status
#      blob in MinIO says so;
#   2. a manifest signed by an untrusted key changes nothing, and the status
#      says "rejected";
#   3. an update whose health check fails is rolled back, and the status says
#      "rolled-back".
#
# `nix flake check` runs it (it needs KVM). It cannot run on the machine
# where this repository's CI runs (no nixpkgs, no KVM); there, every .nix
# file is only parsed. See the README's "what ran where".
{ pkgs, self }:

let
  system = pkgs.stdenv.hostPlatform.system;
  testPub = pkgs.lib.fileContents ./keys/vm-test.pub;
  rootUser = "nixota-admin";
  rootPass = "nixota-admin-secret";
  deviceCreds = pkgs.writeText "kiosk-1-credentials" ''
    [default]
    aws_access_key_id = kiosk-1
    aws_secret_access_key = kiosk-1-secret-key
  '';
in
pkgs.testers.runNixOSTest {
  name = "nix-ota";

  nodes.bucket = { pkgs, ... }: {
    services.minio = {
      enable = true;
      rootCredentialsFile = pkgs.writeText "minio-root" ''
        MINIO_ROOT_USER=${rootUser}
        MINIO_ROOT_PASSWORD=${rootPass}
      '';
    };
    networking.firewall.allowedTCPPorts = [ 9000 ];
    environment.systemPackages = [ pkgs.minio-client self.packages.${system}.nix-ota ];
    environment.etc."nix-ota-test/sign.key".source = ./keys/vm-test.key;
    environment.etc."nix-ota-test/device-policy.json".source = ../../examples/policies/device-policy.json;
  };

  nodes.device = { lib, options, ... }: {
    imports = [ self.nixosModules.agent ];
    services.nix-ota-agent = {
      enable = true;
      bucket = "s3://fleet?endpoint=bucket:9000&scheme=http";
      channel = "prod";
      publicKeys = [ testPub ];
      deviceId = "kiosk-1";
      statusCredentialsFile = "/etc/nix-ota-test/credentials";
      healthChecks = [ "test ! -e /etc/nix-ota-test-broken" ];
      healthTimeout = "20s";
    };
    # The test starts the service itself; with the timer off, no timer run
    # races a manual one (the second would find the state directory locked).
    systemd.timers.nix-ota-agent.enable = false;
    # The store as a NixOS device has it: no writable overlay. (qemu-vm.nix
    # declares the option on every test node; the guard only keeps this node
    # evaluable without it, and the test script checks the store really is
    # read-only, so the guard cannot weaken the test unnoticed.)
    virtualisation = {
      memorySize = 1536;
    } // lib.optionalAttrs (options.virtualisation ? writableStore) {
      writableStore = false;
    };
    environment.etc."nix-ota-test/credentials".source = deviceCreds;
    environment.etc."nix-ota-test-version".text = "initial";
    # The systems the device is updated to: full toplevels in its closure.
    specialisation.new.configuration.environment.etc."nix-ota-test-version".text = pkgs.lib.mkForce "new";
    specialisation.broken.configuration = {
      environment.etc."nix-ota-test-version".text = pkgs.lib.mkForce "broken";
      environment.etc."nix-ota-test-broken".text = "1";
    };
  };

  testScript = { nodes, ... }:
    let toplevel = nodes.device.system.build.toplevel; in
    ''
      import json

      B = "s3://fleet?endpoint=localhost:9000&scheme=http"
      ENV = "AWS_ACCESS_KEY_ID=${rootUser} AWS_SECRET_ACCESS_KEY=${rootPass} AWS_EC2_METADATA_DISABLED=true"

      def publish(path, key="/etc/nix-ota-test/sign.key"):
          bucket.succeed(f"{ENV} nix-ota publish --bucket '{B}' --key {key} --channel prod --store-path {path}")

      def status():
          # The device's newest check-in (devices/<window>/kiosk-1.json), a
          # DSSE envelope signed with the device's identity key.
          import base64
          lines = bucket.succeed("mc ls --recursive --json local/fleet/devices/").splitlines()
          mine = sorted((o["lastModified"], o["key"]) for o in map(json.loads, filter(str.strip, lines)) if o["key"].endswith("/kiosk-1.json"))
          assert mine, "no check-in of kiosk-1"
          env_ = json.loads(bucket.succeed(f"mc cat local/fleet/devices/{mine[-1][1]}"))
          assert env_["payloadType"] == "application/vnd.nix-ota.status.v1+json", env_
          return json.loads(base64.b64decode(env_["payload"]))

      def current():
          return device.succeed("readlink -f /run/current-system").strip()

      start_all()
      bucket.wait_for_unit("minio.service")
      bucket.wait_for_open_port(9000)
      bucket.succeed("mc alias set local http://localhost:9000 ${rootUser} ${rootPass}")
      bucket.succeed("mc mb local/fleet")
      bucket.succeed(
          "sed 's/BUCKET/fleet/; s/DEVICE_ID/kiosk-1/' /etc/nix-ota-test/device-policy.json > /tmp/kiosk-1.json"
          " && mc admin policy create local nix-ota-kiosk-1 /tmp/kiosk-1.json"
          " && mc admin user add local kiosk-1 kiosk-1-secret-key"
          " && mc admin policy attach local nix-ota-kiosk-1 --user kiosk-1"
      )
      bucket.succeed(f"{ENV} nix-ota init --bucket '{B}'")

      device.wait_for_unit("multi-user.target")
      initial = current()
      new = device.succeed("readlink -f ${toplevel}/specialisation/new").strip()
      broken = device.succeed("readlink -f ${toplevel}/specialisation/broken").strip()

      with subtest("the store is read-only and the agent uses nix-daemon"):
          device.fail("touch /nix/store/nix-ota-write-probe")
          device.succeed("systemctl show -p Environment nix-ota-agent.service | grep -q NIX_REMOTE=daemon")
          device.fail("systemctl is-active nix-ota-agent.timer")
          device.succeed("nix-ota-agent check-config /etc/nix-ota/agent.json")

      with subtest("a signed update switches the system"):
          publish(new)
          device.succeed("systemctl start nix-ota-agent.service")
          assert current() == new, f"running {current()}, want {new}"
          device.succeed("grep -qx new /etc/nix-ota-test-version")
          s = status()
          assert s["state"] == "up-to-date" and s["revision"] == 1 and s["storePath"] == new, s

      with subtest("a tampered manifest changes nothing"):
          import base64
          publish(broken)
          env_ = json.loads(bucket.succeed("mc cat local/fleet/channels/prod.json"))
          payload = json.loads(base64.b64decode(env_["payload"]))
          payload["storePath"] = broken  # unchanged path, but...
          payload["message"] = "tampered"  # ...one changed byte is enough
          env_["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
          bucket.succeed(f"echo '{json.dumps(env_)}' | mc pipe local/fleet/channels/prod.json")
          device.fail("systemctl start nix-ota-agent.service")
          assert current() == new
          s = status()
          assert s["state"] == "rejected" and "does not match the payload" in s["lastError"], s

      with subtest("an untrusted signature changes nothing"):
          bucket.succeed("nix-ota keygen --out /tmp/intruder.key --name intruder")
          publish(broken, key="/tmp/intruder.key")
          device.fail("systemctl start nix-ota-agent.service")
          assert current() == new
          s = status()
          assert s["state"] == "rejected" and "none of which is trusted" in s["lastError"], s

      with subtest("a failing health check rolls back"):
          publish(broken)
          device.fail("systemctl start nix-ota-agent.service")
          assert current() == new, f"not rolled back: {current()}"
          device.succeed("grep -qx new /etc/nix-ota-test-version")
          s = status()
          assert s["state"] == "rolled-back" and "health check" in s["lastError"], s
          # not retried
          device.succeed("systemctl start nix-ota-agent.service")
          assert current() == new

      with subtest("the device's check-ins are signed and, once approved, verified"):
          device.succeed("test $(stat -c %a /var/lib/nix-ota/identity.key) = 600")
          fp = json.loads(device.succeed("nix-ota-agent identity --config /etc/nix-ota/agent.json --json"))["fingerprint"]
          assert fp in bucket.succeed(f"{ENV} nix-ota device list --bucket '{B}' --public-key '${testPub}'")
          bucket.succeed(f"{ENV} nix-ota device approve --bucket '{B}' --key /etc/nix-ota-test/sign.key kiosk-1={fp}")
          fleet = json.loads(bucket.succeed(f"{ENV} nix-ota status --json --bucket '{B}' --public-key '${testPub}'"))
          assert [d["verified"] for d in fleet["devices"]] == [True], fleet["devices"]

      with subtest("the device cannot write outside its own status"):
          bucket.succeed("mc alias set dev http://localhost:9000 kiosk-1 kiosk-1-secret-key")
          bucket.fail("echo '{}' | mc pipe dev/fleet/channels/prod.json")
          bucket.fail("echo '{}' | mc pipe dev/fleet/devices/202611260900/kiosk-2.json")
          bucket.succeed("echo '{}' | mc pipe dev/fleet/devices/202611260900/kiosk-1.json")
    '';
}
