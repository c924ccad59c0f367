package delta

import (
	"strings"
)

// Candidate is a store path a delta may be made against: one in the
// closure of a recent revision, which devices are likely to hold.
type Candidate struct {
	Path    string
	NarSize uint64
}

// PickBase chooses the candidate most like target, the way `nix store
// diff-closures` pairs paths: by package name with the version stripped
// (and the output suffix kept, so foo-1.2-dev pairs with foo-1.1-dev).
// A candidate of the very same name (a rebuild with new dependencies) wins
// over one of another version; among equals the largest NAR wins. ok is
// false when no candidate shares the name.
func PickBase(target string, candidates []Candidate) (base Candidate, ok bool) {
	name := storeName(target)
	key := pairKey(name)
	if key == "" {
		return Candidate{}, false
	}
	rank := func(c Candidate) int {
		switch n := storeName(c.Path); {
		case c.Path == target || pairKey(n) != key:
			return 0
		case n == name:
			return 2
		default:
			return 1
		}
	}
	best := 0
	for _, c := range candidates {
		r := rank(c)
		if r > best || (r == best && r > 0 && c.NarSize > base.NarSize) {
			base, best = c, r
		}
	}
	return base, best > 0
}

// storeName is the name part of /nix/store/<hash>-<name>, "" if p is
// not a store path.
func storeName(p string) string {
	_, name, ok := splitStorePath(p)
	if !ok {
		return ""
	}
	return name
}

// pairKey is a store name's package name without its version, plus its
// output suffix. The version starts at the first dash followed by a digit,
// as Nix's parseDrvName has it; a last dash-separated word after it that
// names a usual output (dev, man, lib) is the output, other words (dirty,
// beta) belong to the version.
func pairKey(name string) string {
	pname, version := name, ""
	for i := 0; i+1 < len(name); i++ {
		if name[i] == '-' && name[i+1] >= '0' && name[i+1] <= '9' {
			pname, version = name[:i], name[i+1:]
			break
		}
	}
	if j := strings.LastIndexByte(version, '-'); j >= 0 && outputs[version[j+1:]] {
		return pname + "-" + version[j+1:]
	}
	return pname
}

// outputs are the output names nixpkgs uses most; a store name ends in
// one when the output is not out.
var outputs = map[string]bool{"bin": true, "dev": true, "lib": true, "man": true, "doc": true, "info": true, "devdoc": true,
	"debug": true, "static": true, "out": true, "modules": true, "examples": true, "tools": true, "python": true, "terminfo": true}
