package main

import (
	"testing"

	"github.com/nix-ota/nix-ota/delta"
)

func TestUpstreamVersion(t *testing.T) {
	for in, want := range map[string]string{
		"1:1.2.13.dfsg-1":    "1.2.13",
		"1.5.4+dfsg2-5":      "1.5.4",
		"3.40.1-2+deb12u2":   "3.40.1",
		"1:2.39.5-0+deb12u3": "2.39.5",
		"5.36.0-7+deb12u4":   "5.36.0",
		"7.88.1-10+deb12u14": "7.88.1",
		"2.0~rc1-1":          "2.0",
		"0.14.3-1+b1":        "0.14.3",
		"3.11.2-6+deb12u6":   "3.11.2",
		"20230311":           "20230311",
	} {
		if got := upstreamVersion(in); got != want {
			t.Errorf("upstreamVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestProjectStoreNamesPair: the binaries of two commits pair as base and
// target whatever their versions look like.
func TestProjectStoreNamesPair(t *testing.T) {
	for _, v := range [][2]string{{"4904b7c", "5d32d1e"}, {"ab12cd3", "4904b7c"}, {"ab12cd3", "fe34ba1"}, {"v1.2.0", "v1.2.0-3-gab12cd3"}, {"1.2.0", "1.2.1-3-gab12cd3"}} {
		old := "/nix/store/00000000000000000000000000000000-" + storeNameFor(v[0])
		cur := "/nix/store/11111111111111111111111111111111-" + storeNameFor(v[1])
		base, ok := delta.PickBase(cur, []delta.Candidate{{Path: old, NarSize: 1}})
		if !ok || base.Path != old {
			t.Errorf("%s -> %s: PickBase does not pair %s with %s", v[0], v[1], cur, old)
		}
	}
}
