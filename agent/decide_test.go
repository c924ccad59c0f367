package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
)

const (
	spA = "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-a"
	spB = "/nix/store/1m8v1fvjz0w4mkrq3p5kqk3n2b9ffx6l-nixos-system-b"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func signed(t *testing.T, s signing.Key, mut func(*manifest.Payload)) []byte {
	t.Helper()
	p := &manifest.Payload{Schema: 1, Channel: "prod", Revision: 5, StorePath: spB, Substituters: []string{},
		PublishedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(time.Hour), Rollout: manifest.Rollout{Percent: 100, Salt: "x"}, Switch: "switch"}
	if mut != nil {
		mut(p)
	}
	b, err := signing.Sign(context.Background(), p, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func key(t *testing.T, name string) (signing.Key, manifest.PublicKey) {
	return testenv.NewSigner(t, name)
}

// TestDecide covers the whole policy table without any I/O.
func TestDecide(t *testing.T) {
	s, pub := key(t, "k")
	dev := Device{ID: "kiosk-1", Class: "default", Channel: "prod", Trust: manifest.Trust{Keys: []manifest.PublicKey{pub}}}
	rpi := dev
	rpi.Class = "rpi4"
	boot := dev
	boot.ForceBoot = true
	pinned := dev
	pinned.AllowedSubstituters = []string{"https://cache.example.org", "s3://fleet/cache?"}
	subs := func(list ...string) func(*manifest.Payload) {
		return func(p *manifest.Payload) { p.Substituters = list }
	}
	outside := func(p *manifest.Payload) {
		p.Rollout = manifest.Rollout{Percent: 1, Salt: saltExcluding("kiosk-1", 1)}
	}
	classes := func(p *manifest.Payload) { p.StorePath = ""; p.Systems = manifest.Systems{"rpi4": spA, "x86": spB} }
	bad := ChannelState{Bad: map[string]string{"5": "health check failed"}}
	badPath := ChannelState{BadPaths: map[string]string{spB: "health check failed"}}
	retry := func(p *manifest.Payload) { p.Retry = true }
	// B rolled back under revision 3; revision 5 republishes it.
	badEarlier := ChannelState{Revision: 4, Bad: map[string]string{"3": "health check failed"}, BadPaths: map[string]string{spB: "health check failed"}}
	// B rolled back under revision 5 itself, a retry revision.
	badRetried := ChannelState{Revision: 5, Bad: map[string]string{"3": "health check failed", "5": "health check failed again"}, BadPaths: map[string]string{spB: "health check failed again"}}
	cases := []struct {
		name    string
		dev     Device
		cs      ChannelState
		current string
		body    []byte
		want    Action
		wantErr error
		wantSP  string
		mode    string
	}{
		{"new revision", dev, ChannelState{Revision: 4}, spA, signed(t, s, nil), Apply, nil, spB, "switch"},
		{"already running", dev, ChannelState{Revision: 4}, spB, signed(t, s, nil), UpToDate, nil, spB, "switch"},
		{"first poll, empty profile", dev, ChannelState{}, "", signed(t, s, nil), Apply, nil, spB, "switch"},
		{"rolled back before", dev, bad, spA, signed(t, s, nil), SkipBad, ErrBadRevision, spB, "switch"},
		{"bad but already running", dev, bad, spB, signed(t, s, nil), UpToDate, nil, spB, "switch"},
		{"system rolled back before, new revision", dev, badPath, spA, signed(t, s, nil), SkipBad, ErrBadRevision, spB, "switch"},
		{"system rolled back before, republished", dev, badEarlier, spA, signed(t, s, nil), SkipBad, ErrBadRevision, spB, "switch"},
		{"system rolled back before, retry", dev, badEarlier, spA, signed(t, s, retry), Apply, nil, spB, "switch"},
		{"system rolled back before, retry, only the path known", dev, badPath, spA, signed(t, s, retry), Apply, nil, spB, "switch"},
		{"retry failed at this revision", dev, badRetried, spA, signed(t, s, retry), SkipBad, ErrBadRevision, spB, "switch"},
		{"retry of a revision that failed here", dev, bad, spA, signed(t, s, retry), SkipBad, ErrBadRevision, spB, "switch"},
		{"retry, already running", dev, badEarlier, spB, signed(t, s, retry), UpToDate, nil, spB, "switch"},
		{"retry, outside the rollout", dev, badEarlier, spA, signed(t, s, func(p *manifest.Payload) { retry(p); outside(p) }), NotCohort, nil, spB, "switch"},
		{"retry, no earlier failure", dev, ChannelState{Revision: 4}, spA, signed(t, s, retry), Apply, nil, spB, "switch"},
		{"outside the rollout", dev, ChannelState{}, spA, signed(t, s, outside), NotCohort, nil, spB, "switch"},
		{"rollout 0", dev, ChannelState{}, spA, signed(t, s, func(p *manifest.Payload) { p.Rollout.Percent = 0 }), NotCohort, nil, spB, "switch"},
		{"mixed fleet, my class", rpi, ChannelState{}, spB, signed(t, s, classes), Apply, nil, spA, "switch"},
		{"mixed fleet, class absent", dev, ChannelState{}, spB, signed(t, s, classes), Reject, ErrNoSystemForClass, "", ""},
		{"device forces boot", boot, ChannelState{}, spA, signed(t, s, nil), Apply, nil, spB, "boot"},
		{"manifest says boot", dev, ChannelState{}, spA, signed(t, s, func(p *manifest.Payload) { p.Switch = "boot" }), Apply, nil, spB, "boot"},
		{"rollback", dev, ChannelState{Revision: 6}, spA, signed(t, s, nil), Reject, manifest.ErrRollback, "", ""},
		{"expired", dev, ChannelState{}, spA, signed(t, s, func(p *manifest.Payload) { p.ExpiresAt = t0 }), Reject, manifest.ErrExpired, "", ""},
		{"other channel", dev, ChannelState{}, spA, signed(t, s, func(p *manifest.Payload) { p.Channel = "dev" }), Reject, manifest.ErrWrongChannel, "", ""},
		{"pinned, allowed", pinned, ChannelState{}, spA, signed(t, s, subs("https://cache.example.org/x", "s3://fleet/cache?region=eu-west-1")), Apply, nil, spB, "switch"},
		{"pinned, no substituters", pinned, ChannelState{}, spA, signed(t, s, subs()), Apply, nil, spB, "switch"},
		{"pinned, look-alike host", pinned, ChannelState{}, spA, signed(t, s, subs("https://cache.example.org.evil.net")), Reject, ErrSubstituterNotAllowed, "", ""},
		{"pinned, other cache", pinned, ChannelState{}, spA, signed(t, s, subs("https://cache.example.org/x", "https://other.example")), Reject, ErrSubstituterNotAllowed, "", ""},
		{"unpinned, any cache", dev, ChannelState{}, spA, signed(t, s, subs("https://other.example")), Apply, nil, spB, "switch"},
		{"garbage", dev, ChannelState{}, spA, []byte("{"), Reject, manifest.ErrMalformed, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(c.dev, c.cs, c.current, c.body, t0)
			if d.Action != c.want || !errors.Is(d.Err, c.wantErr) || (c.wantErr == nil && d.Err != nil) {
				t.Fatalf("got %v (%v), want %v (%v)", d.Action, d.Err, c.want, c.wantErr)
			}
			if d.StorePath != c.wantSP || d.Mode != c.mode {
				t.Fatalf("store path %q mode %q, want %q %q", d.StorePath, d.Mode, c.wantSP, c.mode)
			}
		})
	}
}

// saltExcluding finds a salt that puts id outside a pct% rollout.
func saltExcluding(id string, pct int) string {
	for i := 0; ; i++ {
		s := fmt.Sprint(i)
		if !InCohort(s, id, pct) {
			return s
		}
	}
}

func TestInCohort(t *testing.T) {
	// Monotone: a device in at p% is in at every higher percentage.
	in := map[int]int{}
	for d := range 2000 {
		id := fmt.Sprintf("dev-%d", d)
		was := false
		for p := 0; p <= 100; p += 5 {
			now := InCohort("salt", id, p)
			if was && !now {
				t.Fatalf("%s left the cohort going up to %d%%", id, p)
			}
			was = now
			if now {
				in[p]++
			}
		}
	}
	// Roughly the asked share (2000 devices; allow wide binomial slack).
	for _, p := range []int{5, 25, 50} {
		want := 2000 * p / 100
		if got := in[p]; got < want*7/10 || got > want*13/10 {
			t.Errorf("%d%%: %d of 2000 devices, want about %d", p, got, want)
		}
	}
	if in[0] != 0 || in[100] != 2000 {
		t.Fatalf("0%%: %d, 100%%: %d", in[0], in[100])
	}
	// A different salt picks a different cohort.
	same := 0
	for d := range 1000 {
		id := fmt.Sprintf("dev-%d", d)
		if InCohort("a", id, 50) == InCohort("b", id, 50) {
			same++
		}
	}
	if same > 600 {
		t.Fatalf("salts a and b agree on %d of 1000 devices", same)
	}
}

func TestConfigCheck(t *testing.T) {
	_, pub := key(t, "k")
	good := func() *Config {
		return &Config{Bucket: "https://fleet.example.org", Channel: "prod", PublicKeys: []string{pub.String()}, DeviceID: "kiosk-1",
			TrustedCacheKeys: []string{"cache-1:AAAA"}, Substituters: []string{"https://cache.example.org"}}
	}
	c := good()
	c.withDefaults()
	if _, err := c.Check(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"no bucket":        func(c *Config) { c.Bucket = "" },
		"ftp bucket":       func(c *Config) { c.Bucket = "ftp://x" },
		"no keys":          func(c *Config) { c.PublicKeys = nil },
		"bad key":          func(c *Config) { c.PublicKeys = []string{"k:zz"} },
		"bad channel":      func(c *Config) { c.Channel = "a/b" },
		"bad device":       func(c *Config) { c.DeviceID = "my device" },
		"threshold 2":      func(c *Config) { c.Threshold = 2 },
		"switch test":      func(c *Config) { c.Switch = "test" },
		"switchVia always": func(c *Config) { c.SwitchVia = "always" },
		"switchVia never":  func(c *Config) { c.SwitchVia = "never" },
		"relative profile": func(c *Config) { c.Profile = "profiles/system" },
		"bad cache key":    func(c *Config) { c.TrustedCacheKeys = []string{"nocolon"} },
		"http status":      func(c *Config) { c.StatusBucket = "https://x" },
		"interval 0.5s":    func(c *Config) { c.Interval = Duration{500 * time.Millisecond} },
	} {
		c := good()
		mut(c)
		c.withDefaults()
		if _, err := c.Check(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseConfigBad(t *testing.T) {
	for _, in := range []string{``, `[]`, `{"bucket": 1}`, `{"unknownField": true}`, `{"interval": "soon"}`, `{"interval": 60}`, `{} {}`} {
		if _, err := ParseConfig([]byte(in)); !errors.Is(err, ErrConfig) {
			t.Errorf("ParseConfig(%q) = %v", in, err)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"bucket":"file:///b","channel":"prod","publicKeys":["k:AAAA"],"interval":"60s"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		c.withDefaults()
		c.Check()
	})
}
