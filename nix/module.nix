# services.nix-ota-agent: keeps a NixOS device on the system its channel's
# signed manifest names. A systemd timer runs `nix-ota-agent once` (or one
# resident `nix-ota-agent daemon` polls): one conditional GET when nothing
# changed; otherwise verify, fetch the closure, switch (in a transient unit
# of its own), health-check, roll back on failure, and write the device's
# status to the bucket.
#
# Every value the agent would refuse is refused here, at evaluation: by an
# option's type (the rules are in ./validate.nix, plain Nix that
# agent/module_test.go checks against the agent) or, across options, by an
# assertion. The generated file is then checked again at build time by the
# agent itself (`nix-ota-agent check-config`), so module and agent cannot
# drift. docs/module.md is generated from this file (scripts/module-docs.sh).
#
# `self` is the nix-ota flake, for the default package.
{ self ? null }:
{ config, lib, pkgs, ... }:

let
  cfg = config.services.nix-ota-agent;
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;
  v = import ./validate.nix;

  # A string type with a rule: the description is what an error names.
  rule = name: description: check: lib.mkOptionType {
    inherit name description;
    descriptionClass = "noun";
    check = x: types.str.check x && check x;
    inherit (types.str) merge;
  };
  nameType = rule "nix-ota-name"
    "name: 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit" v.isName;
  duration = rule "nix-ota-duration"
    "duration: digits with ms, s, m or h, like 90s, 15m or 1h30m (Go and systemd read it alike)" v.isDuration;
  absolutePath = rule "nix-ota-absolute-path" "absolute path (a string starting with /)" v.isAbsolutePath;
  substituter = rule "nix-ota-substituter"
    ("binary cache URL: https://, http://, file:/// or s3://, without credentials, fragment or percent-encoding; "
      + "query only priority and want-mass-query (s3 also region, endpoint, scheme, profile), each once")
    v.isSubstituter;

  ms = v.durationMs;
  showMs = n: if lib.mod n 1000 == 0 then "${toString (n / 1000)}s" else "${toString n}ms";
  # A quarter of the interval, the agent's own default jitter.
  defaultDelay = showMs (ms cfg.interval / 4);
  delay = if cfg.randomizedDelay == null then defaultDelay else cfg.randomizedDelay;
  statusBucket = if cfg.statusBucket != null then cfg.statusBucket
    else if v.isWritableBucket cfg.bucket then cfg.bucket else null;

  # The agent's JSON configuration. Keys are agent.Config's JSON names;
  # agent/module_test.go checks them against the Go struct and against
  # examples/agent-config.json, the example these options document.
  # agent-config-begin
  agentConfig = lib.filterAttrs (_: x: x != null) {
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
    jitter = delay;
    heartbeat = cfg.heartbeat;
    prometheusFile = cfg.prometheusFile;
    allowReboot = cfg.allowReboot;
    rebootWindow = cfg.rebootWindow;
    keepGenerations = cfg.keepGenerations;
    minFreeSpace = cfg.minFreeSpace;
    identityKey = cfg.identityKeyFile;
    noDeltas = !cfg.deltas;
  };
  # agent-config-end

  # The agent checks the generated file at build time, as nixpkgs checks
  # nginx's or sshd's: a configuration the agent would refuse does not
  # build. (When cross-compiling for a platform the build machine cannot
  # run, the evaluation-time checks above are what remains.)
  configFile = pkgs.writeTextFile {
    name = "nix-ota-agent.json";
    text = builtins.toJSON agentConfig;
    checkPhase = lib.optionalString (pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform) ''
      ${lib.getExe cfg.package} check-config "$target"
    '';
  };

  defaultPackage =
    if self != null then self.packages.${pkgs.stdenv.hostPlatform.system}.nix-ota-agent
    else pkgs.callPackage ./package.nix { component = "nix-ota-agent"; };
in
{
  # One module, however it is reached: importing nixosModules.agent and
  # nixosModules.default (the same file) declares the options once.
  key = toString ./module.nix;
  _file = ./module.nix;

  options.services.nix-ota-agent = {
    enable = mkEnableOption "nix-ota-agent, which polls a bucket for signed system updates and applies them (see examples/README.md)";

    package = mkOption {
      type = types.package;
      default = defaultPackage;
      defaultText = literalExpression "nix-ota.packages.\${system}.nix-ota-agent";
      description = "The nix-ota-agent package (a static binary).";
    };

    bucket = mkOption {
      type = rule "nix-ota-bucket"
        ("bucket URL: https://HOST[/PREFIX] (no query), s3://BUCKET[/PREFIX][?endpoint=HOST:PORT&region=R&scheme=http|https&profile=P] "
          + "or file:///ABSOLUTE/PATH; no credentials, fragment or percent-encoding")
        v.isBucket;
      example = "https://fleet.example.org";
      description = ''
        Where the agent reads `channels/<channel>.json`: `https://HOST/PREFIX` (a public
        bucket, static host or CDN; signatures, not TLS, carry the trust),
        `s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&scheme=https` (with
        {option}`statusCredentialsFile`) or `file:///path` (air-gapped).
      '';
    };

    channel = mkOption {
      type = nameType;
      example = "prod";
      description = "The channel this device follows.";
    };

    publicKeys = mkOption {
      type = types.listOf (rule "nix-ota-public-key"
        "manifest public key NAME:BASE64 (a 32-byte ed25519 key, as `nix-ota keygen` prints it) or NAME:ecdsa-p256:BASE64 (a P-256 public key)"
        v.isPublicKey);
      example = [ "fleet-2026:Q0nTDrrjIrCjXbqUAB5nxuq49BhWKrnCthpZgvOs/GU=" ];
      description = ''
        Trusted manifest signing keys, `NAME:BASE64` as printed by `nix-ota keygen`;
        at least one, with distinct names.
        To rotate keys, publish a system whose configuration trusts the old and the
        new key, then one that trusts only the new key.
      '';
    };

    threshold = mkOption {
      type = types.ints.positive;
      default = 1;
      description = "How many distinct keys of {option}`publicKeys` must have signed a manifest (at most their number).";
    };

    deviceId = mkOption {
      type = types.nullOr nameType;
      default = config.networking.hostName;
      defaultText = literalExpression "config.networking.hostName";
      description = ''
        This device's id: its check-ins go to `devices/<window>/<deviceId>.json`.
        Set it to null to take the host name at run time instead: for one image
        flashed onto many devices that each get their name at first boot (DHCP, or
        a unit that sets it from a serial number); they then check in as pending
        until approved (`nix-ota device approve`).
      '';
    };

    deviceClass = mkOption {
      type = nameType;
      default = "default";
      example = "rpi4";
      description = "Device class, for channels that carry one system per class (mixed fleets).";
    };

    mode = mkOption {
      type = types.enum [ "timer" "daemon" ];
      default = "timer";
      description = ''
        How the agent runs. `timer`: a systemd timer starts `nix-ota-agent once`
        every `interval`; nothing stays resident between polls, and each run reads
        /etc/nix-ota/agent.json afresh. `daemon`: one long-running
        `nix-ota-agent daemon` polls every `interval`; about 7 MiB stay resident,
        and an idle poll costs well under a millisecond of CPU instead of a process
        start (docs/perf.md). The daemon rereads /etc/nix-ota/agent.json before
        every poll and takes a changed, valid configuration at once (an invalid
        one is logged and the running one kept). Like the timer's runs, the
        daemon is never restarted by a switch (it may be the one switching); a
        new agent version takes over at the next boot.
      '';
    };

    interval = mkOption {
      type = duration;
      default = "60s";
      description = "How often the agent polls; at least 1s.";
    };

    randomizedDelay = mkOption {
      type = types.nullOr duration;
      default = null;
      example = "15s";
      description = ''
        Random extra delay per poll, so a fleet does not poll in lockstep; null: a
        quarter of {option}`interval`. More than the interval is allowed but warned
        about (polls then come irregularly, up to interval + delay apart).
      '';
    };

    heartbeat = mkOption {
      type = types.nullOr duration;
      default = null;
      example = "15m";
      description = ''
        The status is written when it changes and at least this often; the dashboard
        calls a device offline after three heartbeats without one. At least
        {option}`interval`; null: 8h (status changes are written at once; the
        heartbeat only proves an idle device alive, and each one is a PUT: see
        docs/cost.md), or the interval when that is longer.
      '';
    };

    substituters = mkOption {
      type = types.listOf substituter;
      default = [ ];
      example = [ "https://fleet.example.org/cache" ];
      description = ''
        Binary caches to fetch closures from, in addition to the manifest's own list and
        the system's. Nix's daemon does the fetching: for a private cache, see
        docs/private-caches.md (credentials go where nix-daemon reads them).
      '';
    };

    allowedSubstituters = mkOption {
      type = types.listOf substituter;
      default = [ ];
      example = [ "https://fleet.example.org/cache" ];
      description = ''
        URL prefixes a signed manifest's substituters must start with; empty: any
        substituter the manifest names that passes the agent's substituter policy.
      '';
    };

    trustedCacheKeys = mkOption {
      type = types.listOf (rule "nix-ota-cache-key"
        "binary cache public key NAME:BASE64 (a 32-byte ed25519 key, as `nix-store --generate-binary-cache-key` writes it)"
        v.isCacheKey);
      default = [ ];
      example = [ "fleet-cache-1:ADJWDeXJvaxuuHE8dkfjE+0An0XXIVVUeMYV8tc/rgM=" ];
      description = "Public keys of those binary caches; Nix refuses closures not signed by a trusted key.";
    };

    healthChecks = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = literalExpression ''
        [
          "systemctl is-active --quiet kiosk.service"
          "''${pkgs.curl}/bin/curl -fsS --max-time 5 http://127.0.0.1:8080/healthz"
        ]
      '';
      description = ''
        Commands (run with `sh -c`) that must succeed after a switch. If one fails,
        times out, or the bucket is unreachable after the switch, the agent switches
        back to the previous system and does not try that system again unless the
        publisher signs a `nix-ota publish --retry`. Each command gets
        `NIX_OTA_STORE_PATH`, `NIX_OTA_REVISION` and `NIX_OTA_CHANNEL` in its
        environment. The unit's PATH holds only Nix, systemd, coreutils and bash:
        name other programs by their store path, as the example does with curl.
      '';
    };

    healthTimeout = mkOption {
      type = duration;
      default = "60s";
      description = "Time limit of each health check; more than 0s.";
    };

    statusBucket = mkOption {
      type = types.nullOr (rule "nix-ota-writable-bucket"
        "writable bucket URL: s3://BUCKET[/PREFIX][?endpoint=HOST:PORT&region=R&scheme=http|https&profile=P] or file:///ABSOLUTE/PATH"
        v.isWritableBucket);
      default = null;
      example = "s3://fleet?endpoint=minio.example.org:9000";
      description = ''
        Writable bucket for the status blob; null: {option}`bucket` when it is `s3://` or
        `file://` (an `https://` bucket is read-only, so then the status stays local).
      '';
    };

    statusCredentialsFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/run/secrets/nix-ota-device";
      description = ''
        AWS-style credentials file (`[default]`, `aws_access_key_id`,
        `aws_secret_access_key`) for `s3://` buckets, with a policy that lets this
        device write only `devices/????????????/<deviceId>.json` (examples/policies/device-policy.json).
        A path as a string, outside the Nix store, which every user can read.
      '';
    };

    deltas = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Fetch a changed store path as a binary delta against a path this device
        already holds, when the fleet cache has one (`nix-ota push` writes them): the
        agent rebuilds the NAR, checks it against the signed narinfo and hands it to
        Nix, falling back to the full NAR on any failure. false: always fetch whole
        NARs, sparing the rebuild's CPU and disk writes on unmetered links.
      '';
    };

    identityKeyFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/run/secrets/nix-ota-identity";
      description = ''
        The device's ed25519 identity key, which signs every check-in: a PKCS#8 PEM
        file (what `openssl genpkey -algorithm ed25519` writes), mode 0600 or 0400,
        owned by root. null: `/var/lib/nix-ota/identity.key`. Either way the agent
        generates the key on its first start if the file does not exist; set this
        when the image or a secrets tool provides the key, so that it can be
        registered before the device first checks in (`nix-ota-agent identity`
        prints it). A path as a string, outside the Nix store, which every user
        can read; where the service cannot write (/etc, /usr and /boot are
        read-only to it) the file must already be there. A key file that is there
        but unusable (corrupt, another key type, readable by group or others)
        stops the agent with the reason.
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
      type = types.nullOr (rule "nix-ota-reboot-window"
        "local time window HH:MM-HH:MM (hours 0-23, may wrap midnight, not empty)" v.isRebootWindow);
      default = null;
      example = "02:00-04:00";
      description = "Local-time window for automatic reboots (with {option}`allowReboot`); null means any time.";
    };

    keepGenerations = mkOption {
      type = types.ints.positive;
      default = 10;
      description = "System generations kept after each update; older ones are deleted (never the current one; the booted one stays alive as a GC root).";
    };

    minFreeSpace = mkOption {
      type = types.nullOr (rule "nix-ota-size"
        "size: a number with an optional K, M, G or T (upper case), like 500M or 1.5G" v.isSize);
      default = null;
      example = "2G";
      description = "Collect Nix store garbage after an update when less than this is free on the store's file system; null: never (use nix.gc instead).";
    };

    prometheusFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text-files/nix-ota.prom";
      description = "Write `nix_ota_*` metrics to this node_exporter textfile.";
    };
  };

  config = mkIf cfg.enable {
    assertions =
      let
        keyNames = map v.keyName cfg.publicKeys;
        opt = "services.nix-ota-agent";
      in
      [
        {
          assertion = cfg.publicKeys != [ ];
          message = "${opt}.publicKeys: list at least one trusted manifest key (the NAME:BASE64 line `nix-ota keygen` printed).";
        }
        {
          assertion = v.unique keyNames;
          message = "${opt}.publicKeys: key names must be distinct (got ${lib.concatStringsSep ", " keyNames}); give each key its own name.";
        }
        {
          assertion = cfg.threshold <= lib.length cfg.publicKeys;
          message = "${opt}.threshold = ${toString cfg.threshold}: at most the number of publicKeys (${toString (lib.length cfg.publicKeys)}).";
        }
        {
          assertion = v.isInterval cfg.interval;
          message = "${opt}.interval = \"${cfg.interval}\": must be at least 1s.";
        }
        {
          assertion = v.isTimeout cfg.healthTimeout;
          message = "${opt}.healthTimeout = \"${cfg.healthTimeout}\": must be more than 0s.";
        }
        {
          assertion = cfg.heartbeat == null || ms cfg.heartbeat >= ms cfg.interval;
          message = "${opt}.heartbeat = \"${toString cfg.heartbeat}\": must be at least the interval (\"${cfg.interval}\"); leave it null to follow the interval.";
        }
        {
          assertion = cfg.statusCredentialsFile == null || !(lib.hasPrefix builtins.storeDir cfg.statusCredentialsFile);
          message = "${opt}.statusCredentialsFile = \"${toString cfg.statusCredentialsFile}\": must not be in the Nix store, which every user can read.";
        }
        {
          assertion = cfg.identityKeyFile == null || !(lib.hasPrefix builtins.storeDir cfg.identityKeyFile);
          message = "${opt}.identityKeyFile = \"${toString cfg.identityKeyFile}\": must not be in the Nix store, which every user can read; leave it null (the state directory) or point it at a root-only file.";
        }
        {
          assertion = config.nix.enable or true;
          message = "${opt}: needs nix.enable = true; the agent fetches and installs systems through nix-daemon.";
        }
      ];

    warnings =
      lib.optional (ms delay > ms cfg.interval)
        "services.nix-ota-agent.randomizedDelay = \"${delay}\" is more than the interval (\"${cfg.interval}\"): polls come up to interval + delay apart, irregularly."
      ++ lib.optional (cfg.rebootWindow != null && !cfg.allowReboot)
        "services.nix-ota-agent.rebootWindow is set but allowReboot = false: the agent never reboots by itself, so the window has no effect."
      ++ lib.optional (statusBucket != null && lib.hasPrefix "s3://" statusBucket && cfg.statusCredentialsFile == null)
        "services.nix-ota-agent: the status goes to ${statusBucket} without statusCredentialsFile, so it is written anonymously; that works only if the bucket lets anyone write devices/????????????/${if cfg.deviceId == null then "<host name>" else cfg.deviceId}.json.";

    environment.systemPackages = [ cfg.package ];
    environment.etc."nix-ota/agent.json".source = configFile;

    # Store access. The agent runs nix-store and nix-env as root. Without
    # NIX_REMOTE, root's Nix opens /nix/store itself; on NixOS that is a
    # read-only bind mount, and Nix then unshares a mount namespace to
    # remount it writable, which RestrictNamespaces= below forbids (and which
    # a hardened unit should not be doing anyway). So the agent goes through
    # nix-daemon, as every other NixOS service does: the daemon (outside
    # this sandbox) substitutes, registers and collects paths, reads the
    # system's substituters, netrc-file and /root/.aws credentials for
    # private caches, and accepts the agent's extra substituters and keys
    # because root is a trusted user. The agent itself only writes the
    # profile symlinks under /nix/var/nix/profiles and its state directory.
    #
    # Configuration changes: the unit is never restarted by a switch
    # (restartIfChanged = false; the agent may be the process running that
    # switch), so no restartTriggers. The timer's runs read the file afresh
    # each time, and the daemon rereads it before every poll.
    systemd.services.nix-ota-agent = {
      description = "nix-ota: apply the channel's signed system update";
      wants = [ "network-online.target" "nix-daemon.socket" ];
      after = [ "network-online.target" "nix-daemon.socket" ];
      # The agent switches the system; a switch must never restart or stop it
      # midway (the switch itself runs in a transient unit of its own).
      restartIfChanged = false;
      stopIfChanged = false;
      unitConfig.X-StopOnRemoval = false;
      path = [ config.nix.package config.systemd.package pkgs.coreutils pkgs.bash ];
      environment = {
        # Every Nix command goes through nix-daemon (see above).
        NIX_REMOTE = "daemon";
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
        # Hardening a root agent that installs systems can keep. What it
        # touches: nix-daemon's socket, /nix/var/nix/profiles, its state
        # directory, the network, and systemd over D-Bus (systemd-run for
        # the switch, which runs outside this sandbox, and reboot).
        # /tmp of its own: Nix's and the health checks' temporary files only.
        PrivateTmp = true;
        # /home, /root and /run/user hidden: nothing there is the agent's (the daemon reads root's AWS credentials, not the agent).
        ProtectHome = true;
        # /usr, /boot and /etc read-only: the bootloader is installed by switch-to-configuration in its transient unit; /nix and /var stay writable.
        ProtectSystem = "full";
        # /proc/sys and /sys read-only: activation changes sysctls in the switch's own unit, not here.
        ProtectKernelTunables = true;
        # No module loading: the switch's unit (not the agent) starts whatever loads modules.
        ProtectKernelModules = true;
        # cgroup tree read-only: units are started through systemd's D-Bus API, never by writing cgroups.
        ProtectControlGroups = true;
        # Clock left alone: the agent only reads time (manifest expiry, reboot window).
        ProtectClock = true;
        # No new setuid/setgid files: store paths are written by nix-daemon, outside this sandbox.
        RestrictSUIDSGID = true;
        # No realtime scheduling: nothing here is latency-bound.
        RestrictRealtime = true;
        # No namespaces: with NIX_REMOTE=daemon, Nix never unshares to remount the store.
        RestrictNamespaces = true;
        # Fixed execution domain: the agent and Nix are native binaries.
        LockPersonality = true;
        # No privilege gain through setuid binaries: the agent is root already and asks systemd (D-Bus) for the rest.
        NoNewPrivileges = true;
        # Native system calls only: no 32-bit compatibility calls are needed.
        SystemCallArchitectures = "native";
        # UNIX (nix-daemon, D-Bus) and IP (buckets, caches) sockets only.
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        # Files it creates are private unless it says otherwise (status and metrics are written 0644 on purpose).
        UMask = "0077";
      };
    };

    systemd.timers.nix-ota-agent = mkIf (cfg.mode == "timer") {
      description = "nix-ota: poll the channel";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "30s";
        OnUnitActiveSec = cfg.interval;
        RandomizedDelaySec = delay;
        AccuracySec = "1s";
      };
    };
  };
}
