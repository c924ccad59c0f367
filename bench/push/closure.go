package main

import (
	"fmt"
	"strings"
)

// part is one store path of the mixed closure: KiB of random bytes, of
// zeros and of base64 text (compresses to about 3/4), a number of 16 KiB
// random files (a directory of many small files), and its references.
type part struct {
	name                   string
	random, zeros, textKiB int
	files                  int
	deps                   []string
}

// parts is the mixed closure, 12 paths and about 70 MiB of NAR: firmware
// and a kernel (large, half or not compressible), locales (text), small
// libraries, two applications on them, kernel modules, and the system on
// top of everything.
var parts = []part{
	{name: "firmware", random: 8 << 10, zeros: 16 << 10},
	{name: "kernel", random: 12 << 10},
	{name: "locales", textKiB: 8 << 10},
	{name: "lib-a", random: 2 << 10, textKiB: 2 << 10},
	{name: "lib-b", files: 128},
	{name: "lib-c", textKiB: 1 << 10},
	{name: "lib-d", random: 512},
	{name: "etc", textKiB: 64, deps: []string{"lib-c"}},
	{name: "app-1", random: 4 << 10, zeros: 4 << 10, deps: []string{"lib-a", "lib-b"}},
	{name: "app-2", textKiB: 3 << 10, deps: []string{"lib-c", "lib-d"}},
	{name: "kernel-modules", random: 6 << 10, deps: []string{"kernel"}},
	{name: "system", textKiB: 16, deps: []string{"firmware", "locales", "etc", "app-1", "app-2", "kernel-modules"}},
}

// script is the builder's shell script for p (/bin/sh and coreutils of
// the build machine; the bench builds without a sandbox, as the tests do).
func (p part) script() string {
	s := []string{`/bin/mkdir -p $out`, `echo "$deps" > $out/deps`}
	dd := func(src, dst string, kib int) string {
		return fmt.Sprintf("/bin/dd if=%s of=%s bs=64k count=%d 2>/dev/null", src, dst, kib/64)
	}
	if p.random > 0 {
		s = append(s, dd("/dev/urandom", "$out/random", p.random))
	}
	if p.zeros > 0 {
		s = append(s, dd("/dev/zero", "$out/zeros", p.zeros))
	}
	if p.textKiB > 0 {
		s = append(s, fmt.Sprintf("/bin/dd if=/dev/urandom bs=48k count=%d 2>/dev/null | /usr/bin/base64 > $out/text", p.textKiB/64))
	}
	if p.files > 0 {
		s = append(s, fmt.Sprintf(`i=0; while [ $i -lt %d ]; do /bin/dd if=/dev/urandom of=$out/f$i bs=16k count=1 2>/dev/null; i=$((i+1)); done`, p.files))
	}
	return strings.Join(s, " && ")
}

// scaled is p with k times its bytes and files.
func (p part) scaled(k int) part {
	p.random, p.zeros, p.textKiB, p.files = p.random*k, p.zeros*k, p.textKiB*k, p.files*k
	return p
}

// mixedClosure is the Nix expression of parts, each k times its size;
// nonce makes fresh paths.
func mixedClosure(nonce string, k int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "let mk = name: deps: script: derivation { name = \"bench-push-${name}\"; system = builtins.currentSystem;\n")
	fmt.Fprintf(&b, "  builder = \"/bin/sh\"; nonce = %q; inherit deps; args = [ \"-c\" script ]; };\n", nonce)
	for _, p := range parts {
		p = p.scaled(k)
		fmt.Fprintf(&b, "  %s = mk %q [ %s ] %q;\n", ident(p.name), p.name, idents(p.deps), p.script())
	}
	fmt.Fprintf(&b, "in %s\n", ident(parts[len(parts)-1].name))
	return b.String()
}

func ident(name string) string { return "p-" + name }

func idents(names []string) string {
	var s []string
	for _, n := range names {
		s = append(s, ident(n))
	}
	return strings.Join(s, " ")
}

// singlePath is one path of mib MiB, half random and half zeros.
func singlePath(nonce string, mib int) string {
	return fmt.Sprintf(`derivation { name = "bench-payload-%d"; system = builtins.currentSystem; builder = "/bin/sh";
  nonce = "%s"; args = [ "-c" "/bin/mkdir -p $out && /bin/dd if=/dev/urandom of=$out/random bs=1M count=%d 2>/dev/null && /bin/dd if=/dev/zero of=$out/zeros bs=1M count=%d 2>/dev/null" ]; }`,
		mib, nonce, mib/2, mib-mib/2)
}
