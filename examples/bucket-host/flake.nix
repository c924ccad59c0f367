{
  description = "nix-ota bucket host: MinIO behind TLS, holding channels, a binary cache, device status and the dashboard";

  inputs = {
    # The nixpkgs nix-ota's own flake.lock pins (nixos-unstable of
    # 2026-07-26), so the example builds with what nix-ota was checked
    # against; a branch (github:NixOS/nixpkgs/nixos-unstable) plus your own
    # flake.lock works as well.
    nixpkgs.url = "github:NixOS/nixpkgs/624af665418d3c65d544145b4d34ad696439570e";
    nix-ota.url = "github:nix-ota/nix-ota";
    nix-ota.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { nixpkgs, nix-ota, ... }: {
    nixosConfigurations.ota = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      specialArgs = { inherit nix-ota; };
      modules = [ ./configuration.nix ];
    };
  };
}
