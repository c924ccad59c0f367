package agent

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
	"github.com/nix-ota/nix-ota/status"
)

const spC = "/nix/store/2a3xzz0rw8q6pcjsjlkrx6pdx7bq5w7h-nixos-system-c"

// TestKeyRotation walks the runbook: a device trusting {A} takes an update
// signed by A whose configuration trusts {A,B}; then B alone, and A alone,
// are accepted; once a configuration trusting only {B} is running, A alone
// is refused. Threshold 2 needs two distinct keys.
func TestKeyRotation(t *testing.T) {
	ctx := context.Background()
	a, pubA := testenv.NewSigner(t, "key-a")
	b, pubB := testenv.NewSigner(t, "key-b")
	url := "file://" + filepath.Join(t.TempDir(), "bucket")
	st, _ := bucket.Open(url, bucket.Options{Create: true})
	sys := &fakeSystem{profile: spA}
	stateDir := t.TempDir()
	// device runs the agent with the trust of the system it currently runs.
	device := func(keys []manifest.PublicKey, threshold int) *Agent {
		cfg := Config{Bucket: url, Channel: "prod", DeviceID: "kiosk-1", StateDir: stateDir, Profile: "/nix/var/nix/profiles/system", Threshold: threshold}
		for _, k := range keys {
			cfg.PublicKeys = append(cfg.PublicKeys, k.String())
		}
		trust, err := cfg.Prepare()
		if err != nil {
			t.Fatal(err)
		}
		ag := &Agent{Config: cfg, Trust: trust, Store: st, Status: st, System: sys}
		if err := ag.Load(); err != nil {
			t.Fatal(err)
		}
		return ag
	}
	publish := func(sp string, signers ...signing.Key) {
		p := testenv.Payload("prod", 0, sp)
		// The publisher trusts both keys throughout (a rotation passes the
		// other key with --public-key).
		trust := manifest.Trust{Keys: []manifest.PublicKey{pubA, pubB}, Threshold: 1}
		_, err := testenv.PublishSigned(ctx, st, &trust, p, signers...)
		if err != nil {
			t.Fatal(err)
		}
	}
	expect := func(ag *Agent, action Result, want error) {
		t.Helper()
		out := ag.Poll(ctx)
		if out.Result != action || (want != nil && !errors.Is(out.Err, want)) {
			t.Fatalf("poll: %+v, want %s %v", out, action, want)
		}
	}

	// 1. Trusting {A}: the update that introduces B is signed by A.
	publish(spB, a)
	expect(device([]manifest.PublicKey{pubA}, 1), ResultApplied, nil)
	// 2. Now running a system that trusts {A, B}: B alone works...
	publish(spC, b)
	expect(device([]manifest.PublicKey{pubA, pubB}, 1), ResultApplied, nil)
	// ...and A alone, until A is removed.
	publish(spA, a)
	expect(device([]manifest.PublicKey{pubA, pubB}, 1), ResultApplied, nil)
	// 3. A system that trusts only {B}: A alone is refused, B works.
	publish(spB, b)
	expect(device([]manifest.PublicKey{pubA, pubB}, 1), ResultApplied, nil)
	publish(spC, a)
	expect(device([]manifest.PublicKey{pubB}, 1), ResultRejected, manifest.ErrSignature)
	if sys.profile != spB {
		t.Fatalf("a rejected manifest moved the profile to %s", sys.profile)
	}
	// 4. Threshold 2 with {A, B}: one key is not enough, both are.
	publish(spC, b)
	expect(device([]manifest.PublicKey{pubA, pubB}, 2), ResultRejected, manifest.ErrSignature)
	publish(spC, a, b)
	expect(device([]manifest.PublicKey{pubA, pubB}, 2), ResultApplied, nil)
	if sys.profile != spC {
		t.Fatalf("profile %s, want C", sys.profile)
	}
}

// TestExpiryWarning: the status warns a week before the accepted manifest
// expires, and an expired one is reported while the system stays.
func TestExpiryWarning(t *testing.T) {
	ctx := context.Background()
	s, pub := testenv.NewSigner(t, "k")
	url := "file://" + filepath.Join(t.TempDir(), "bucket")
	st, _ := bucket.Open(url, bucket.Options{Create: true})
	p := testenv.Payload("prod", 0, spB)
	p.ExpiresAt = p.PublishedAt.Add(72 * time.Hour)
	if _, err := channelPublish(ctx, st, p, s); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Bucket: url, Channel: "prod", PublicKeys: []string{pub.String()}, DeviceID: "d", StateDir: t.TempDir(), Profile: "/p"}
	trust, _ := cfg.Prepare()
	sys := &fakeSystem{profile: spA}
	now := time.Now()
	ag := &Agent{Config: cfg, Trust: trust, Store: st, Status: st, System: sys, Now: func() time.Time { return now }}
	ag.Load()
	ag.Poll(ctx)
	if n := ag.state.Status.Note; !strings.Contains(n, "expires at") || !strings.Contains(n, "nix-ota resign") {
		t.Fatalf("no expiry warning: %+v", ag.state.Status)
	}
	now = now.Add(73 * time.Hour) // past expiry, nothing new in the bucket
	out := ag.Poll(ctx)
	if !errors.Is(out.Err, manifest.ErrExpired) || ag.state.Status.State != status.UpToDate || sys.profile != spB || !strings.Contains(ag.state.Status.LastError, "expired") {
		t.Fatalf("after expiry: %+v %+v", out, ag.state.Status)
	}
}
