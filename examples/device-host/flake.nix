{
  description = "A nix-ota device (kiosk, Raspberry Pi, edge node): deployed once, then updated by nix-ota";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    nix-ota.url = "github:nix-ota/nix-ota";
    nix-ota.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { nixpkgs, nix-ota, ... }: {
    nixosConfigurations.fridge-007 = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux"; # aarch64-linux for a Raspberry Pi
      modules = [
        nix-ota.nixosModules.agent
        ./configuration.nix
      ];
    };
  };
}
