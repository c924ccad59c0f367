{
  description = "nix-ota: over-the-air updates for NixOS fleets, with no server (a bucket holds signed manifests, a binary cache and device status)";

  # flake.lock pins it; `nix flake update` moves the pin.
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

      # Everything `make test` needs: Go, MinIO, Nix, Chromium; and
      # nixpkgs' lib for scripts/module-docs.sh.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ go gnumake git minio nix chromium python3 ];
          shellHook = ''
            export NIX_OTA_MINIO=${pkgs.minio}/bin/minio
            export NIXPKGS_LIB=${nixpkgs}/lib
          '';
        };
      });

      # One module; both names are the same value (and the module has a
      # key, so importing both declares its options once).
      nixosModules = rec {
        agent = import ./nix/module.nix { inherit self; };
        default = agent;
      };

      # `nix flake check`: the VM test (needs KVM); the module evaluated in
      # whole NixOS systems with its generated config checked by the agent
      # (no KVM); the option reference current; the pure Go unit tests;
      # gofmt. The full suite (MinIO, Nix, Chromium) is `make test`.
      checks = forAllSystems (pkgs:
        let p = self.packages.${pkgs.stdenv.hostPlatform.system}; in {
          vm = import ./nix/tests/vm.nix { inherit pkgs self; };
          module-eval = import ./nix/tests/eval.nix { inherit nixpkgs self pkgs; };
          module-docs = pkgs.runCommand "nix-ota-module-docs"
            {
              generated = pkgs.writeText "module.md" (import ./nix/docs.nix { inherit lib; });
              committed = ./docs/module.md;
            } ''
            if ! diff -u "$committed" "$generated"; then
              echo "docs/module.md is stale: run scripts/module-docs.sh"
              exit 1
            fi
            touch $out
          '';
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
