package delta

import "testing"

// sp is a store path of name with a valid-looking hash made from seed.
func sp(seed uint64, name string) string { return "/nix/store/" + storeHash(seed) + "-" + name }

func TestPickBase(t *testing.T) {
	target := sp(1, "go-1.26.7")
	for _, c := range []struct {
		name       string
		target     string
		candidates []Candidate
		want       string // "": ok false
	}{
		{"same name, other hash, wins over another version", target,
			[]Candidate{{sp(2, "go-1.26.6"), 900}, {sp(3, "go-1.26.7"), 100}, {sp(4, "go-1.25.0"), 800}}, sp(3, "go-1.26.7")},
		{"another version of the package", target,
			[]Candidate{{sp(5, "gopls-0.20.0"), 500}, {sp(2, "go-1.26.6"), 400}, {sp(6, "glibc-2.40"), 900}}, sp(2, "go-1.26.6")},
		{"largest of other versions", target,
			[]Candidate{{sp(2, "go-1.26.6"), 400}, {sp(4, "go-1.25.0"), 800}, {sp(7, "go-1.24.1"), 600}}, sp(4, "go-1.25.0")},
		{"output suffix pairs with the same output", sp(8, "openssl-3.0.2-dev"),
			[]Candidate{{sp(9, "openssl-3.0.1"), 9000}, {sp(10, "openssl-3.0.1-dev"), 300}, {sp(11, "openssl-3.0.1-man"), 500}}, sp(10, "openssl-3.0.1-dev")},
		{"no output suffix does not pair with an output", sp(12, "openssl-3.0.2"),
			[]Candidate{{sp(10, "openssl-3.0.1-dev"), 300}, {sp(9, "openssl-3.0.1"), 200}}, sp(9, "openssl-3.0.1")},
		{"only other outputs", sp(8, "openssl-3.0.2-dev"),
			[]Candidate{{sp(9, "openssl-3.0.1"), 9000}, {sp(11, "openssl-3.0.1-man"), 500}}, ""},
		{"a word in the version that is no output (dirty, beta)", sp(30, "nix-ota-1.2.0-3-gab12cd3-dirty"),
			[]Candidate{{sp(31, "nix-ota-1.2.0"), 100}}, sp(31, "nix-ota-1.2.0")},
		{"name without a version, largest wins", sp(13, "etc"),
			[]Candidate{{sp(14, "etc"), 100}, {sp(15, "etc"), 700}, {sp(16, "etc-fragment"), 9000}, {sp(17, "source"), 9000}}, sp(15, "etc")},
		{"source pairs with source", sp(18, "source"),
			[]Candidate{{sp(13, "etc"), 9000}, {sp(19, "source"), 50}, {sp(20, "sources"), 9000}}, sp(19, "source")},
		{"target is never its own base", target,
			[]Candidate{{target, 9000}}, ""},
		{"target itself is passed over for a smaller one", target,
			[]Candidate{{target, 9000}, {sp(2, "go-1.26.6"), 10}}, sp(2, "go-1.26.6")},
		{"nixos system of a host", sp(21, "nixos-system-kiosk-24.11.20250101"),
			[]Candidate{{sp(22, "nixos-system-kiosk-24.11.20241201"), 300}, {sp(23, "nixos-system-office-24.11.20250101"), 900}}, sp(22, "nixos-system-kiosk-24.11.20241201")},
		{"no candidate", target, nil, ""},
		{"no candidate of the name", target,
			[]Candidate{{sp(5, "gopls-0.20.0"), 500}, {sp(25, "go-tools-0.1"), 500}, {sp(26, "go-dev"), 500}}, ""},
		{"the package without a version pairs with a version", target,
			[]Candidate{{sp(24, "go"), 500}}, sp(24, "go")},
		{"target hash too short", "/nix/store/" + storeHash(1)[1:] + "-go-1.26.7",
			[]Candidate{{sp(2, "go-1.26.6"), 400}}, ""},
		{"target without a dash after its hash", "/nix/store/" + storeHash(1) + "_go-1.26.7",
			[]Candidate{{sp(2, "go-1.26.6"), 400}}, ""},
		{"target without a name", "/nix/store/" + storeHash(1) + "-",
			[]Candidate{{sp(2, "go-1.26.6"), 400}, {"/nix/store/" + storeHash(2) + "-", 400}}, ""},
		{"empty target", "", []Candidate{{sp(2, "go-1.26.6"), 400}}, ""},
		{"malformed candidates are passed over", target,
			[]Candidate{{"/nix/store/" + storeHash(2)[2:] + "-go-1.26.6", 900}, {"go-1.26.6", 900}, {"", 900}, {sp(3, "go-1.26.5"), 1}}, sp(3, "go-1.26.5")},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := PickBase(c.target, c.candidates)
			if ok != (c.want != "") || got.Path != c.want {
				t.Errorf("PickBase(%q) = %q, %v; want %q", c.target, got.Path, ok, c.want)
			}
		})
	}
}

// TestPickBaseStoreDir: a path outside /nix/store, or with characters a
// Nix hash never has, is no store path, like splitStorePath has it.
func TestPickBaseStoreDir(t *testing.T) {
	for _, p := range []string{
		"/tmp/" + storeHash(1) + "-go-1.26.7",
		"/nix/store/" + "EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE" + "-go-1.26.7",
	} {
		if got, ok := PickBase(p, []Candidate{{sp(2, "go-1.26.6"), 400}}); ok {
			t.Errorf("PickBase(%q) = %q, want ok false", p, got.Path)
		}
	}
}
