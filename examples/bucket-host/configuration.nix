# The bucket host: the only "server" in a nix-ota deployment, and all it runs
# is MinIO (an S3 bucket) behind a TLS proxy. It holds
#
#   channels/   signed manifests            anonymous read (devices poll over https)
#   cache/      the Nix binary cache        anonymous read (devices substitute over https)
#   index.html  the static dashboard        anonymous read (or put it behind auth)
#   devices/    device check-ins             each device writes only its own
#
# Nothing here holds a signing key: manifests are signed on the publisher's
# laptop or CI, closures by the cache key there too.
#
# Using AWS S3 or Cloudflare R2 instead: skip this host entirely. Create the
# bucket, make channels/*, cache/* and index.html publicly readable (S3: a
# bucket policy like the anonymous-read statement below; R2: a public
# bucket or custom domain), create one IAM user or R2 token per device with
# examples/policies/device-policy.json, and point everything at
#   s3://fleet?region=eu-central-1                                  (S3)
#   s3://fleet?endpoint=ACCOUNT.r2.cloudflarestorage.com&region=auto (R2)
{ config, pkgs, nix-ota, ... }:

{
  networking.hostName = "ota";
  networking.firewall.allowedTCPPorts = [ 80 443 ];

  # The MinIO root credentials never leave this host; provision the file
  # with sops-nix or agenix (a plain file here for clarity):
  #   MINIO_ROOT_USER=admin
  #   MINIO_ROOT_PASSWORD=...
  services.minio = {
    enable = true;
    listenAddress = "127.0.0.1:9000";
    consoleAddress = "127.0.0.1:9001";
    rootCredentialsFile = "/run/secrets/minio-root";
  };

  # TLS in front. Devices verify manifest signatures, not TLS, but TLS still
  # keeps credentials and status private on the wire.
  services.nginx = {
    enable = true;
    recommendedProxySettings = true;
    recommendedTlsSettings = true;
    clientMaxBodySize = "0"; # large NARs
    virtualHosts."ota.example.com" = {
      enableACME = true;
      forceSSL = true;
      # Path-style S3 (s3://fleet?endpoint=ota.example.com) and plain
      # https://ota.example.com/fleet/... both land on MinIO.
      locations."/" = {
        proxyPass = "http://127.0.0.1:9000";
        extraConfig = ''
          proxy_buffering off;
          proxy_request_buffering off;
        '';
      };
    };
  };
  security.acme = {
    acceptTerms = true;
    defaults.email = "ops@example.com";
  };

  environment.systemPackages = [ pkgs.minio-client nix-ota.packages.${pkgs.stdenv.hostPlatform.system}.nix-ota ];

  # One-time bucket setup: the bucket, anonymous read where agents and
  # browsers need it, the publisher's user. Device users are added per
  # device with scripts like the one in the README (mc admin user add ...).
  systemd.services.nix-ota-bucket-init = {
    description = "Create the nix-ota bucket and its policies";
    after = [ "minio.service" ];
    requires = [ "minio.service" ];
    wantedBy = [ "multi-user.target" ];
    path = [ pkgs.minio-client pkgs.gnused ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      EnvironmentFile = "/run/secrets/minio-root";
      Environment = "HOME=/var/lib/nix-ota-bucket-init";
      StateDirectory = "nix-ota-bucket-init";
    };
    script = ''
      for i in $(seq 30); do mc alias set local http://127.0.0.1:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" && break; sleep 1; done
      mc mb --ignore-existing local/fleet
      mc anonymous set download local/fleet/channels
      mc anonymous set download local/fleet/cache
      mc anonymous set download local/fleet/index.html
      sed 's/BUCKET/fleet/g' ${nix-ota}/examples/policies/publisher-policy.json > publisher.json
      mc admin policy create local nix-ota-publisher publisher.json
    '';
  };

  # Regenerate the dashboard every 5 minutes, so its "as of" time stays
  # fresh between publishes (the page is static). The credentials need read
  # on channels/ and devices/, write on index.html and dashboard.json, and
  # delete on devices/ (check-ins newer ones replaced);
  # the publisher policy covers that, no signing key is needed.
  systemd.services.nix-ota-dashboard = {
    description = "Regenerate the nix-ota fleet dashboard";
    after = [ "minio.service" "nix-ota-bucket-init.service" ];
    requires = [ "minio.service" ];
    serviceConfig = {
      Type = "oneshot";
      DynamicUser = true;
      # The fleet snapshot: each run lists only the check-ins written since
      # the last one and reads only the status blobs that changed.
      CacheDirectory = "nix-ota";
      EnvironmentFile = "/run/secrets/nix-ota-dashboard"; # AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
      Environment = [
        "NIX_OTA_BUCKET=s3://fleet?endpoint=127.0.0.1:9000&scheme=http&region=us-east-1"
        "NIX_OTA_CACHE_DIR=/var/cache/nix-ota"
        # With the fleet's public key, rollout progress is verified; without, labelled unverified.
        # "NIX_OTA_PUBLIC_KEY=fleet-2026:BASE64..."
      ];
      ExecStart = "${nix-ota.packages.${pkgs.stdenv.hostPlatform.system}.nix-ota}/bin/nix-ota dashboard";
      TimeoutStartSec = "5min";
      NoNewPrivileges = true;
      ProtectSystem = "strict";
      ProtectHome = true;
      PrivateTmp = true;
    };
  };
  systemd.timers.nix-ota-dashboard = {
    wantedBy = [ "timers.target" ];
    timerConfig = { OnBootSec = "2min"; OnUnitActiveSec = "5min"; AccuracySec = "30s"; };
  };

  system.stateVersion = "25.05";
}
