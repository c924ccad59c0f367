# services.nix-ota-agent: keeps a NixOS device on the system its channel's
# signed manifest names. A systemd timer runs `nix-ota-agent once`: one
# conditional GET when nothing changed; otherwise verify, fetch the closure,
# switch (in a transient unit of its own), health-check, roll back on
# failure, and write the device's status to the bucket.
#
# `self` is the nix-ota flake, for the default package.
{ self ? null }:
{ config, lib, pkgs, ... }:

let
  cfg = config.services.nix-ota-agent;
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;
  format = pkgs.formats.json { };
  # Durations the agent (Go) and systemd both read: 90s, 15m, 1h30m.
  duration = types.strMatching "([0-9]+(ms|s|m|h))+";

  # The agent's JSON configuration. Keys are agent.Config's JSON names;
  # agent/module_test.go checks them against the Go struct and against
  # examples/agent-config.json, the example these options document.
  # agent-config-begin
  agentConfig = lib.filterAttrs (_: v: v != null) {
    bucket = cfg.bucket;
    channel = cfg.channel;
    publicKeys = cfg.publicKeys;
    threshold = cfg.threshold;
    deviceId = cfg.deviceId;
    deviceClass = cfg.deviceClass;
    stateDir = "/var/lib/nix-ota";
    profile = "/nix/var/nix/profiles/system";
    substituters = cfg.substituters;
    allowedSubstituters = cfg.allowedSubstituters;
    trustedCacheKeys = cfg.trustedCacheKeys;
    healthChecks = cfg.healthChecks;
    healthTimeout = cfg.healthTimeout;
    statusBucket = cfg.statusBucket;
    statusCredentials = cfg.statusCredentialsFile;
    switch = cfg.switchMode;
    switchVia = "auto";
    interval = cfg.interval;
    jitter = cfg.randomizedDelay;
    heartbeat = cfg.heartbeat;
    prometheusFile = cfg.prometheusFile;
    allowReboot = cfg.allowReboot;
    rebootWindow = cfg.rebootWindow;
    keepGenerations = cfg.keepGenerations;
    minFreeSpace = cfg.minFreeSpace;
  };
  # agent-config-end

  configFile = format.generate "nix-ota-agent.json" agentConfig;
  defaultPackage =
    if self != null then self.packages.${pkgs.stdenv.hostPlatform.system}.nix-ota-agent
    else pkgs.callPackage ./package.nix { component = "nix-ota-agent"; };
in
{
  options.services.nix-ota-agent = {
    enable = mkEnableOption "nix-ota-agent, which polls a bucket for signed system updates and applies them (see examples/README.md)";

    package = mkOption {
      type = types.package;
      default = defaultPackage;
      defaultText = literalExpression "nix-ota.packages.\${system}.nix-ota-agent";
      description = "The nix-ota-agent package (a static binary).";
    };

    bucket = mkOption {
      type = types.str;
      example = "https://fleet.example.org";
      description = ''
        Where the agent reads `channels/<channel>.json`: `https://HOST/PREFIX` (a public
        bucket, static host or CDN; signatures, not TLS, carry the trust),
        `s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&scheme=https` (with
        {option}`statusCredentialsFile`) or `file:///path` (air-gapped).
      '';
    };

    channel = mkOption {
      type = types.strMatching "[A-Za-z0-9][A-Za-z0-9._-]{0,63}";
      example = "prod";
      description = "The channel this device follows.";
    };

    publicKeys = mkOption {
      type = types.listOf types.str;
      example = [ "fleet-2026:Q0nTDrrjIrCjXbqUAB5nxuq49BhWKrnCthpZgvOs/GU=" ];
      description = ''
        Trusted manifest signing keys, `NAME:BASE64` as printed by `nix-ota keygen`.
        To rotate keys, publish a system whose configuration trusts the old and the
        new key, then one that trusts only the new key.
      '';
    };

    threshold = mkOption {
      type = types.ints.positive;
      default = 1;
      description = "How many distinct keys of {option}`publicKeys` must have signed a manifest.";
    };

    deviceId = mkOption {
      type = types.strMatching "[A-Za-z0-9][A-Za-z0-9._-]{0,63}";
      default = config.networking.hostName;
      defaultText = literalExpression "config.networking.hostName";
      description = "This device's id: its status goes to `devices/<deviceId>/status.json`.";
    };

    deviceClass = mkOption {
      type = types.str;
      default = "default";
      example = "rpi4";
      description = "Device class, for channels that carry one system per class (mixed fleets).";
    };

    mode = mkOption {
      type = types.enum [ "timer" "daemon" ];
      default = "timer";
      description = ''
        How the agent runs. `timer`: a systemd timer starts `nix-ota-agent once`
        every `interval`; nothing stays resident between polls. `daemon`: one
        long-running `nix-ota-agent daemon` polls every `interval`; about 7 MiB
        stay resident, and an idle poll costs well under a millisecond of CPU
        instead of a process start (docs/perf.md). Like the timer's runs, the
        daemon is never restarted by a switch (it may be the one switching); a
        new agent version takes over at the next boot.
      '';
    };

    interval = mkOption {
      type = duration;
      default = "60s";
      description = "How often the agent polls (a systemd time span).";
    };

    randomizedDelay = mkOption {
      type = duration;
      default = "15s";
      description = "Random extra delay per poll, so a fleet does not poll in lockstep.";
    };

    heartbeat = mkOption {
      type = duration;
      default = "15m";
      description = "The status is written when it changes and at least this often; the dashboard calls a device offline after three heartbeats without one.";
    };

    substituters = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "https://fleet.example.org/cache" ];
      description = "Binary caches to fetch closures from, in addition to the manifest's own list and the system's.";
    };

    allowedSubstituters = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "https://fleet.example.org/cache" ];
      description = ''
        URL prefixes a signed manifest's substituters must start with; empty: any
        substituter the manifest names that passes the agent's substituter policy.
      '';
    };

    trustedCacheKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "fleet-cache-1:ADJWDeXJvaxuuHE8dkfjE+0An0XXIVVUeMYV8tc/rgM=" ];
      description = "Public keys of those binary caches; Nix refuses closures not signed by a trusted key.";
    };

    healthChecks = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "systemctl is-active kiosk.service" "curl -fsS http://127.0.0.1:8080/healthz" ];
      description = ''
        Commands (run with `sh -c`) that must succeed after a switch. If one fails,
        times out, or the bucket is unreachable after the switch, the agent switches
        back to the previous system and never retries that revision.
      '';
    };

    healthTimeout = mkOption {
      type = duration;
      default = "60s";
      description = "Time limit of each health check.";
    };

    statusBucket = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "s3://fleet?endpoint=minio.example.org:9000";
      description = "Writable bucket for the status blob; default: {option}`bucket` when it is `s3://` or `file://`.";
    };

    statusCredentialsFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/nix-ota-device";
      description = ''
        AWS-style credentials file (`[default]`, `aws_access_key_id`,
        `aws_secret_access_key`) for `s3://` buckets, with a policy that lets this
        device write only `devices/<deviceId>/` (examples/policies/device-policy.json).
        A path as a string, so the secret never enters the world-readable Nix store.
      '';
    };

    switchMode = mkOption {
      type = types.enum [ "switch" "boot" ];
      default = "switch";
      description = "`switch` activates updates at once; `boot` installs them for the next boot.";
    };

    allowReboot = mkOption {
      type = types.bool;
      default = false;
      description = "Reboot by itself when an update needs it (boot mode, or a new kernel, initrd or modules).";
    };

    rebootWindow = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "02:00-04:00";
      description = "Local-time window (HH:MM-HH:MM, may wrap midnight) for automatic reboots; null means any time.";
    };

    keepGenerations = mkOption {
      type = types.ints.positive;
      default = 10;
      description = "System generations kept after each update; older ones are deleted (never the current one; the booted one stays alive as a GC root).";
    };

    minFreeSpace = mkOption {
      type = types.nullOr (types.strMatching "[0-9.]+[KMGT]?");
      default = null;
      example = "2G";
      description = "Collect Nix store garbage after an update when less than this is free on the store's file system; null: never (use nix.gc instead).";
    };

    prometheusFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text-files/nix-ota.prom";
      description = "Write `nix_ota_*` metrics to this node_exporter textfile.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.publicKeys != [ ];
        message = "services.nix-ota-agent.publicKeys: list at least one trusted manifest key (the NAME:BASE64 line `nix-ota keygen` printed).";
      }
      {
        assertion = cfg.threshold <= lib.length cfg.publicKeys;
        message = "services.nix-ota-agent.threshold (${toString cfg.threshold}) is larger than the number of publicKeys.";
      }
      {
        assertion = cfg.statusCredentialsFile == null || !(lib.hasPrefix builtins.storeDir cfg.statusCredentialsFile);
        message = "services.nix-ota-agent.statusCredentialsFile must not be in the Nix store, which every user can read.";
      }
    ];

    environment.systemPackages = [ cfg.package ];
    environment.etc."nix-ota/agent.json".source = configFile;

    systemd.services.nix-ota-agent = {
      description = "nix-ota: apply the channel's signed system update";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # The agent switches the system; a switch must never restart or stop it
      # midway (the switch itself runs in a transient unit of its own).
      restartIfChanged = false;
      stopIfChanged = false;
      unitConfig.X-StopOnRemoval = false;
      path = [ config.nix.package config.systemd.package pkgs.coreutils pkgs.bash ];
      environment = {
        # nix-env wants a writable home; root's is hidden by ProtectHome.
        HOME = "/var/lib/nix-ota";
        # One poll is I/O and subprocesses: one scheduler thread is enough
        # and makes each timer run ~17% cheaper in CPU (bench/compare).
        GOMAXPROCS = "1";
      };
      wantedBy = lib.optionals (cfg.mode == "daemon") [ "multi-user.target" ];
      serviceConfig = {
        Type = if cfg.mode == "daemon" then "simple" else "oneshot";
        ExecStart = "${lib.getExe cfg.package} ${if cfg.mode == "daemon" then "daemon" else "once"} --config /etc/nix-ota/agent.json";
        Restart = if cfg.mode == "daemon" then "on-failure" else "no";
        RestartSec = "30s";
        StateDirectory = "nix-ota";
        StateDirectoryMode = "0700";
        # Hardening a root agent that installs systems can keep: it needs the
        # Nix daemon, the system profile and systemd's D-Bus API (for
        # systemd-run and reboot), nothing else.
        PrivateTmp = true;
        ProtectHome = true;
        ProtectSystem = "full";
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        RestrictSUIDSGID = true;
        RestrictRealtime = true;
        RestrictNamespaces = true;
        LockPersonality = true;
        NoNewPrivileges = true;
        SystemCallArchitectures = "native";
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        UMask = "0077";
      };
    };

    systemd.timers.nix-ota-agent = mkIf (cfg.mode == "timer") {
      description = "nix-ota: poll the channel";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "30s";
        OnUnitActiveSec = cfg.interval;
        RandomizedDelaySec = cfg.randomizedDelay;
        AccuracySec = "1s";
      };
    };
  };
}
