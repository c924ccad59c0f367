# A stand-in for a NixOS system closure that needs no nixpkgs (docs/testing.md).
# Its bin/switch-to-configuration records every call in $NIX_OTA_TEST_LOG
# ("ACTION /nix/store/…/bin/switch-to-configuration"), can be held in the
# middle of a switch while the file named by $NIX_OTA_TEST_HANG exists
# (at most 60 s), and exits with exitCode. A different nonce gives a
# different store path. deps (store path strings) become references, so a
# closure can share paths with another. Used by the Go tests, `make demo` and
# the benchmarks.
{ name ? "demo", nonce ? "", exitCode ? 0, kernel ? "", deps ? [ ] }:
derivation {
  name = "nixos-system-${name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  inherit nonce kernel;
  deps = map builtins.storePath deps;
  script = ''
    #!/bin/sh
    if [ -n "$NIX_OTA_TEST_LOG" ]; then echo "$1 $0" >> "$NIX_OTA_TEST_LOG"; fi
    if [ -n "$NIX_OTA_TEST_HANG" ]; then
      n=0
      while [ -e "$NIX_OTA_TEST_HANG" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
    fi
    exit ${toString exitCode}
  '';
  args = [ "-c" ''
    /bin/mkdir -p $out/bin
    echo "$script" > $out/bin/switch-to-configuration
    /bin/chmod +x $out/bin/switch-to-configuration
    echo "$nonce" > $out/nonce
    if [ -n "$kernel" ]; then echo "$kernel" > $out/kernel; fi
    echo "$deps" > $out/deps
  '' ];
}
