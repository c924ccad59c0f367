# nix-ota's Go binaries. `component` picks one: the CLI (nix-ota) for
# laptops and CI, or the agent (nix-ota-agent), a small static binary for
# devices, so a device's closure never carries the CLI's cloud SDKs.
{ lib, buildGoModule, version ? "dev", component ? "nix-ota" }:

assert lib.elem component [ "nix-ota" "nix-ota-agent" ];

buildGoModule {
  pname = component;
  inherit version;

  # Only what the Go build reads, so editing docs or Nix files does not
  # rebuild the binaries: Go sources, the module files, and every file a
  # //go:embed directive names (agent/module_test.go checks this list
  # against the directives).
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../go.mod
      ../go.sum
      (lib.fileset.fileFilter (f: f.hasExt "go") ../.)
      # go-embed-begin
      ../dashboard-static/index.html.tmpl
      # go-embed-end
    ];
  };

  # `go mod vendor` output hash; scripts/vendor-hash.sh recomputes it.
  vendorHash = "sha256-dLPIojzMzR8/d3WW7Aw/kA3DbspCe3nrJ4G6JD9ahCc=";

  subPackages = [ "cmd/${component}" ];
  env.CGO_ENABLED = 0;
  # The agent leaves HTTP/2 out of net/http: one small GET per poll gains
  # nothing from it, and every timer-driven start is cheaper without it
  # (docs/perf.md; internal/testenv.AgentTags says the same).
  tags = lib.optionals (component == "nix-ota-agent") [ "nethttpomithttp2" ];
  ldflags = [
    "-s"
    "-w"
    "-X github.com/nix-ota/nix-ota/cli.Version=${version}"
    "-X github.com/nix-ota/nix-ota/agent.Version=${version}"
  ];

  # The test suite needs a MinIO server and a writable Nix store; it runs
  # with `make test` (and in the flake's checks through the VM tests).
  doCheck = false;

  meta = {
    description =
      if component == "nix-ota" then "Sign and publish over-the-air updates for NixOS fleets to a bucket"
      else "Device agent: poll a bucket for signed NixOS updates, switch, health-check, roll back";
    homepage = "https://github.com/nix-ota/nix-ota";
    license = lib.licenses.asl20;
    mainProgram = component;
    platforms = lib.platforms.linux;
  };
}
