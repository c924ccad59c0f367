# A device. Deploy this once (nixos-install, nixos-rebuild, an SD image);
# from then on `nix-ota publish` updates it: every later system you publish
# is built from this same configuration, so it carries the agent, the keys
# and the credentials path with it.
{ config, pkgs, ... }:

{
  networking.hostName = "fridge-007";

  services.nix-ota-agent = {
    enable = true;
    # Devices poll the public side of the bucket over https; no credentials
    # are needed to read, and the manifest's signature is what they trust.
    bucket = "https://ota.example.com/fleet";
    channel = "prod";
    # The line `nix-ota keygen` printed. To rotate: publish a system that
    # trusts old and new key, then one that trusts only the new one.
    publicKeys = [ "fleet-2026:Q0nTDrrjIrCjXbqUAB5nxuq49BhWKrnCthpZgvOs/GU=" ];
    # Closures come from the bucket's cache/, checked against this key.
    substituters = [ "https://ota.example.com/fleet/cache" ];
    trustedCacheKeys = [ "fleet-cache-1:ADJWDeXJvaxuuHE8dkfjE+0An0XXIVVUeMYV8tc/rgM=" ];
    # Status goes to the bucket through S3 with this device's own key,
    # which may write devices/????????????/fridge-007.json and nothing else.
    statusBucket = "s3://fleet?endpoint=ota.example.com";
    statusCredentialsFile = "/run/secrets/nix-ota-device"; # sops-nix / agenix
    healthChecks = [
      "systemctl is-active --quiet kiosk.service"
      "${pkgs.curl}/bin/curl -fsS --max-time 5 http://127.0.0.1:8080/healthz"
    ];
    allowReboot = true;
    rebootWindow = "03:00-05:00";
    prometheusFile = "/var/lib/prometheus-node-exporter-text-files/nix-ota.prom";
  };

  # The kiosk itself: whatever the device is for.
  systemd.services.kiosk = {
    wantedBy = [ "multi-user.target" ];
    serviceConfig.ExecStart = "${pkgs.python3}/bin/python3 -m http.server 8080 --directory /etc/kiosk";
  };
  environment.etc."kiosk/healthz".text = "ok\n";

  system.stateVersion = "25.05";
}
