{
  description = "nix-ota bucket host: MinIO behind TLS, holding channels, a binary cache, device status and the dashboard";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
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
