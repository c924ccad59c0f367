# The rebuild-cascade case of bench/deltaupdate: a dependency (zlib) and
# programs that link it, built as Nix builds them. src is the directory
# bench/deltaupdate stages from this Debian machine's files (packages.json
# and one tree per package); a non-empty patch changes the dependency by one
# byte, which gives it a new store path and so every dependent one too.
{ src, patch ? "" }:
let
  spec = builtins.fromJSON (builtins.readFile (src + "/packages.json"));

  # Copy the staged files, fill in @out@ and @zlib@ (substituteAll), apply
  # the patch, and set every ELF file's RUNPATH to $out/lib and the
  # dependency's lib (what the linker writes in a Nix build).
  builder = ''
    set -e
    cp -r "$src" "$out"
    chmod -R u+w "$out"
    if [ -n "$patch" ]; then
      printf '%s' "$patchByte" | dd of="$out/$patchFile" bs=1 seek="$patchOffset" conv=notrunc status=none
      echo "$patchName" >> "$out/share/doc/zlib/patches"
    fi
    for f in $subst; do
      sed -i -e "s|@out@|$out|g" -e "s|@zlib@|$zlib|g" "$out/$f"
    done
    rpath="$out/lib"
    if [ -n "$zlib" ]; then rpath="$rpath:$zlib/lib"; fi
    for f in $elf; do
      patchelf --set-rpath "$rpath" "$out/$f"
    done
  '';

  package = p: extra: derivation ({
    inherit (p) name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" builder ];
    PATH = "/usr/bin:/bin";
    src = builtins.path { path = src + "/${p.dir}"; name = "${p.name}-debian-files"; };
    elf = builtins.concatStringsSep " " p.elf;
    subst = builtins.concatStringsSep " " p.subst;
    zlib = "";
    patch = "";
  } // extra);

  zlib = package spec.dep {
    inherit patch;
    patchFile = spec.dep.patch.file;
    patchOffset = toString spec.dep.patch.offset;
    patchByte = spec.dep.patch.byte;
    patchName = spec.dep.patch.name;
  };
in
{ zlib = zlib; }
// builtins.listToAttrs (map (p: { name = p.dir; value = package p { inherit zlib; }; }) spec.dependents)
