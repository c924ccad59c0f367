{
  description = "nix-ota: over-the-air updates for NixOS fleets, with no server (a bucket holds signed manifests, a binary cache and device status)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      version = "0.1.0-${self.shortRev or self.dirtyShortRev or "dev"}";
    in
    {
      packages = forAllSystems (pkgs: rec {
        nix-ota = pkgs.callPackage ./nix/package.nix { inherit version; component = "nix-ota"; };
        nix-ota-agent = pkgs.callPackage ./nix/package.nix { inherit version; component = "nix-ota-agent"; };
        default = nix-ota;
      });

      apps = forAllSystems (pkgs:
        let p = self.packages.${pkgs.stdenv.hostPlatform.system}; in rec {
          nix-ota = { type = "app"; program = lib.getExe p.nix-ota; };
          nix-ota-agent = { type = "app"; program = lib.getExe p.nix-ota-agent; };
          default = nix-ota;
        });

      # Everything `make test` needs: Go, MinIO, Nix, Chromium.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ go gnumake git minio nix chromium ];
          shellHook = ''
            export NIX_OTA_MINIO=${pkgs.minio}/bin/minio
          '';
        };
      });

      nixosModules = rec {
        agent = import ./nix/module.nix { inherit self; };
        default = agent;
      };

      # `nix flake check`: the VM test (needs KVM), the pure Go unit tests,
      # and gofmt. The full suite (MinIO, Nix, Chromium) is `make test`.
      checks = forAllSystems (pkgs:
        let p = self.packages.${pkgs.stdenv.hostPlatform.system}; in {
          vm = import ./nix/tests/vm.nix { inherit pkgs self; };
          go-unit = p.nix-ota.overrideAttrs (old: {
            pname = "nix-ota-unit-tests";
            subPackages = [ "manifest" "manifest/signing" "status" ];
            doCheck = true;
            installPhase = "touch $out";
          });
          gofmt = pkgs.runCommand "nix-ota-gofmt" { nativeBuildInputs = [ pkgs.go ]; } ''
            cd ${lib.fileset.toSource { root = ./.; fileset = lib.fileset.fileFilter (f: f.hasExt "go") ./.; }}
            unformatted=$(gofmt -l .)
            if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted"; exit 1; fi
            touch $out
          '';
        });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
