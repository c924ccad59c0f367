# `checks.<system>.module-eval`: whole NixOS systems with the agent module,
# evaluated through nixpkgs.lib.nixosSystem as nixos-rebuild would (every
# assertion and option of the system), and the agent's configuration
# files built, which runs `nix-ota-agent check-config` on each. No VM, no
# KVM: what a CI job with Nix but no virtualisation can still catch.
{ nixpkgs, self, pkgs }:

let
  inherit (pkgs.stdenv.hostPlatform) system;
  lib = nixpkgs.lib;
  key = "fleet-2026:Q0nTDrrjIrCjXbqUAB5nxuq49BhWKrnCthpZgvOs/GU=";
  key2 = "fleet-2027:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
  # What any NixOS system needs besides the agent.
  base = {
    boot.loader.grub.enable = false;
    fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
    system.stateVersion = "26.05";
  };
  evalSystem = settings: (nixpkgs.lib.nixosSystem {
    inherit system;
    modules = [
      self.nixosModules.agent
      self.nixosModules.default # the same module again: declared once
      base
      ({ pkgs, ... }: { services.nix-ota-agent = settings pkgs; })
    ];
  }).config;

  systems = {
    # Every option set.
    full = evalSystem (pkgs: {
      enable = true;
      bucket = "https://ota.example.com/fleet";
      channel = "prod";
      publicKeys = [ key key2 ];
      threshold = 2;
      deviceId = "fridge-007";
      deviceClass = "rpi4";
      interval = "5m";
      randomizedDelay = "30s";
      heartbeat = "15m";
      substituters = [ "https://ota.example.com/fleet/cache" ];
      allowedSubstituters = [ "https://ota.example.com/fleet/" ];
      trustedCacheKeys = [ "fleet-cache-1:ADJWDeXJvaxuuHE8dkfjE+0An0XXIVVUeMYV8tc/rgM=" ];
      healthChecks = [
        "systemctl is-active --quiet kiosk.service"
        "${pkgs.curl}/bin/curl -fsS --max-time 5 http://127.0.0.1:8080/healthz"
      ];
      healthTimeout = "60s";
      statusBucket = "s3://fleet?endpoint=ota.example.com";
      statusCredentialsFile = "/run/secrets/nix-ota-device";
      identityKeyFile = "/run/secrets/nix-ota-identity";
      switchMode = "switch";
      allowReboot = true;
      rebootWindow = "03:00-05:00";
      keepGenerations = 5;
      minFreeSpace = "2G";
      prometheusFile = "/var/lib/prometheus-node-exporter-text-files/nix-ota.prom";
      deltas = false;
    });
    # The fewest options, resident daemon, and an interval longer than the
    # default heartbeat (which then follows the interval).
    daemon = evalSystem (pkgs: {
      enable = true;
      bucket = "file:///var/lib/ota-bucket";
      channel = "edge";
      publicKeys = [ key ];
      mode = "daemon";
      interval = "1h";
    });
    # One image for many devices: the id is the host name at run time.
    runtimeId = evalSystem (pkgs: {
      enable = true;
      bucket = "https://ota.example.com/fleet";
      channel = "prod";
      publicKeys = [ key ];
      deviceId = null;
    });
  };

  unit = c: builtins.unsafeDiscardStringContext c.systemd.units."nix-ota-agent.service".text;
in
pkgs.runCommand "nix-ota-module-eval"
  ({
    # Building these runs check-config on each generated file.
    fullConfig = systems.full.environment.etc."nix-ota/agent.json".source;
    daemonConfig = systems.daemon.environment.etc."nix-ota/agent.json".source;
    runtimeIdConfig = systems.runtimeId.environment.etc."nix-ota/agent.json".source;
    # Evaluated, not built: forcing each toplevel's .drv checks every
    # assertion of the whole system and prints its warnings.
    fullSystem = builtins.unsafeDiscardStringContext systems.full.system.build.toplevel.drvPath;
    daemonSystem = builtins.unsafeDiscardStringContext systems.daemon.system.build.toplevel.drvPath;
    fullUnit = unit systems.full;
    daemonUnit = unit systems.daemon;
  })
  ''
    for u in "$fullUnit" "$daemonUnit"; do
      grep -qx 'Environment="NIX_REMOTE=daemon"' <<<"$u" || { echo "nix-ota-agent.service does not use nix-daemon:"; echo "$u"; exit 1; }
      grep -qx 'RestrictNamespaces=true' <<<"$u" || { echo "nix-ota-agent.service lost RestrictNamespaces"; exit 1; }
    done
    if grep -q '"deviceId"' "$runtimeIdConfig"; then echo "deviceId = null still wrote a deviceId"; exit 1; fi
    grep -q '"noDeltas": *true' "$fullConfig" || { echo "deltas = false did not write noDeltas: true"; exit 1; }
    grep -q '"noDeltas": *false' "$daemonConfig" || { echo "deltas left at its default did not write noDeltas: false"; exit 1; }
    mkdir -p $out
    cp "$fullConfig" $out/full.json
    cp "$daemonConfig" $out/daemon.json
    printf '%s\n' "$fullUnit" > $out/full.service
    printf '%s\n' "$daemonUnit" > $out/daemon.service
    echo "$fullSystem $daemonSystem" > $out/systems
  ''
