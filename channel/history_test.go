package channel_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
	"github.com/nix-ota/nix-ota/status"
)

func fileStore(t *testing.T) bucket.Store {
	t.Helper()
	s, err := bucket.Open("file://"+filepath.Join(t.TempDir(), "b"), bucket.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, st bucket.Store, key string, body []byte) {
	t.Helper()
	if _, err := bucket.PutBytes(context.Background(), st, key, body, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// publishSystem publishes the next revision of prod with system sp.
func publishSystem(t *testing.T, st bucket.Store, s signing.Key, sp string) uint64 {
	t.Helper()
	res, err := testenv.PublishSigned(context.Background(), st, nil, testenv.Payload("prod", 0, sp), s)
	if err != nil {
		t.Fatal(err)
	}
	return res.Revision
}

func trustOf(pub manifest.PublicKey) manifest.Trust {
	return manifest.Trust{Keys: []manifest.PublicKey{pub}}
}

// TestLoad: only entries that verify under their own number are used;
// everything else under channels/prod/ is listed with its reason.
func TestLoad(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	s, pub := testenv.NewSigner(t, "k")
	intruder, _ := testenv.NewSigner(t, "intruder")
	for range 3 {
		publishSystem(t, st, s, sp)
	}
	put(t, st, "channels/prod/notes.txt", []byte("hello"))
	put(t, st, "channels/prod/007.json", signed(t, s, "prod", 7))
	put(t, st, "channels/prod/9007199254740992.json", nil)
	put(t, st, "channels/prod/5.json", signed(t, intruder, "prod", 5))
	put(t, st, "channels/prod/6.json", signed(t, s, "prod", 2)) // a genuine entry under another number
	put(t, st, "channels/prod/8.json", []byte("{"))
	put(t, st, "channels/prod/9.json", signed(t, s, "staging", 9))

	h, err := channel.Load(ctx, st, "prod", trustOf(pub))
	if err != nil {
		t.Fatal(err)
	}
	var revs []uint64
	for _, e := range h.Entries {
		revs = append(revs, e.Revision())
	}
	if len(revs) != 3 || revs[0] != 1 || revs[2] != 3 || h.Head == nil || h.Head.Revision() != 3 {
		t.Fatalf("entries %v head %v", revs, h.Head)
	}
	want := map[string]string{
		"channels/prod/notes.txt":             "not a history entry name",
		"channels/prod/007.json":              "not a history entry name",
		"channels/prod/9007199254740992.json": "above the maximum",
		"channels/prod/5.json":                "none of which is trusted",
		"channels/prod/6.json":                "signed as revision 2, stored as 6",
		"channels/prod/8.json":                "malformed",
		"channels/prod/9.json":                "another channel",
	}
	if len(h.Skipped) != len(want) {
		t.Fatalf("skipped %+v", h.Skipped)
	}
	for _, sk := range h.Skipped {
		if !strings.Contains(sk.Reason, want[sk.Key]) {
			t.Errorf("%s: reason %q, want %q", sk.Key, sk.Reason, want[sk.Key])
		}
	}
	if n, err := h.Next(); err != nil || n != 4 {
		t.Fatalf("next %d %v", n, err)
	}
	if _, err := h.Find(5); !errors.Is(err, channel.ErrUnverified) {
		t.Fatalf("find a forged entry: %v", err)
	}
	if _, err := h.Find(42); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatalf("find a missing entry: %v", err)
	}
}

// TestForgedPointerRefused: a pointer that does not verify is never built
// on: Current and Publish refuse with the manifest's reason and write
// nothing.
func TestForgedPointerRefused(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	s, pub := testenv.NewSigner(t, "k")
	intruder, _ := testenv.NewSigner(t, "intruder")
	publishSystem(t, st, s, sp)
	put(t, st, bucket.ChannelKey("prod"), signed(t, intruder, "prod", 2))
	h, err := channel.Load(ctx, st, "prod", trustOf(pub))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Current(); !errors.Is(err, channel.ErrUnverified) || !errors.Is(err, manifest.ErrSignature) {
		t.Fatalf("current: %v", err)
	}
	p := testenv.Payload("prod", 0, sp)
	_, err = channel.Publish(ctx, st, h, channel.NewDraft(*p, 0), func(q *manifest.Payload) ([]byte, error) {
		t.Fatal("Publish signed on top of a forged pointer")
		return nil, nil
	})
	if !errors.Is(err, manifest.ErrSignature) {
		t.Fatalf("publish: %v", err)
	}
	if revs, _ := channel.Revisions(ctx, st, "prod"); len(revs) != 1 {
		t.Fatalf("history %v", revs)
	}
}

// TestNextRevision: the revision bound holds for a verified entry too; a
// channel at 2^53-1 refuses to publish and keeps its pointer.
func TestNextRevision(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	s, pub := testenv.NewSigner(t, "k")
	if _, err := signing.Sign(ctx, testenv.Payload("prod", manifest.MaxRevision+1, sp), s); !errors.Is(err, manifest.ErrMalformed) {
		t.Fatalf("signed revision 2^53: %v", err)
	}
	top := signed(t, s, "prod", manifest.MaxRevision)
	put(t, st, bucket.RevisionKey("prod", manifest.MaxRevision), top)
	put(t, st, bucket.ChannelKey("prod"), top)
	h, err := channel.Load(ctx, st, "prod", trustOf(pub))
	if err != nil {
		t.Fatal(err)
	}
	if h.Latest() != manifest.MaxRevision {
		t.Fatalf("latest %d", h.Latest())
	}
	if _, err := h.Next(); err == nil {
		t.Fatal("next revision above 2^53-1")
	}
	_, err = testenv.PublishSigned(ctx, st, nil, testenv.Payload("prod", 0, sp), s)
	if err == nil || !strings.Contains(err.Error(), "highest a channel can have") {
		t.Fatalf("publish past the bound: %v", err)
	}
	if o, _ := st.Get(ctx, bucket.ChannelKey("prod"), bucket.GetOptions{}); string(o.Data) != string(top) {
		t.Fatal("the pointer moved")
	}
}

// attest signs and stores an attestation for entry rev of h.
func attest(t *testing.T, st bucket.Store, h *channel.History, s signing.Key, rev uint64, good bool) {
	t.Helper()
	e, err := h.Find(rev)
	if err != nil {
		t.Fatal(err)
	}
	body, err := signing.SignAttestation(context.Background(), e.Attestation(good, "test", time.Now()), s)
	if err != nil {
		t.Fatal(err)
	}
	if err := channel.WriteAttestation(context.Background(), st, h, rev, body); err != nil {
		t.Fatal(err)
	}
}

// TestRevertTarget: a revert goes to the system that ran right before the
// current run, only when that entry verifies and is recorded good; any gap,
// forgery or bad record is a refusal, never a search further back.
func TestRevertTarget(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	s, pub := testenv.NewSigner(t, "k")
	intruder, _ := testenv.NewSigner(t, "intruder")
	for _, sys := range []string{sysA, sysB, sysC, sysC, sysB} { // revisions 1-5; 3-4 are one run of C
		publishSystem(t, st, s, sys)
	}
	load := func() (*channel.History, channel.Entry) {
		h, err := channel.Load(ctx, st, "prod", trustOf(pub))
		if err != nil {
			t.Fatal(err)
		}
		cur, err := h.Current()
		if err != nil {
			t.Fatal(err)
		}
		return h, cur
	}
	h, cur := load()
	if h.RunStart(cur) != 5 || h.RunStart(mustFind(t, h, 4)) != 3 {
		t.Fatalf("run starts %d and %d, want 5 and 3", h.RunStart(cur), h.RunStart(mustFind(t, h, 4)))
	}
	if _, err := h.RevertTarget(cur, 0); !errors.Is(err, channel.ErrNoKnownGood) {
		t.Fatalf("revert with no record: %v", err)
	}
	attest(t, st, h, s, 1, true) // A completed a rollout
	attest(t, st, h, s, 4, true) // so did C
	// A forged "good" record for B, signed by a key the publisher does not trust.
	forged, _ := signing.SignAttestation(ctx, mustFind(t, h, 2).Attestation(true, "forged", time.Now()), intruder)
	put(t, st, bucket.AttestationKey("prod", 2), forged)
	h, cur = load()
	for _, tc := range []struct {
		name    string
		to      uint64
		wantRev uint64
		wantErr bool
	}{
		{"the system before this run, known good", 0, 4, false},
		{"explicit, good", 1, 1, false},
		{"explicit, no record", 3, 3, false},
		{"explicit, current", 5, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := h.RevertTarget(cur, tc.to)
			if (err != nil) != tc.wantErr || (err == nil && e.Revision() != tc.wantRev) {
				t.Fatalf("got %v %v, want %d (error %v)", e.Revision(), err, tc.wantRev, tc.wantErr)
			}
		})
	}
	if len(h.Skipped) != 1 || h.Skipped[0].Key != "attestations/prod/2.json" {
		t.Fatalf("skipped %+v", h.Skipped)
	}
	// C recorded bad later: no revert, and no search past it to A.
	attest(t, st, h, s, 4, false)
	h, cur = load()
	if _, err := h.RevertTarget(cur, 0); !errors.Is(err, channel.ErrNoKnownGood) || !strings.Contains(err.Error(), "recorded bad") {
		t.Fatalf("revert to a bad system: %v", err)
	}
	if _, err := h.RevertTarget(cur, 4); err == nil {
		t.Fatal("--to a system recorded bad")
	}
	// C good again, but its entry deleted: a gap is a refusal.
	attest(t, st, h, s, 4, true)
	if err := st.Delete(ctx, bucket.RevisionKey("prod", 4)); err != nil {
		t.Fatal(err)
	}
	h, cur = load()
	if _, err := h.RevertTarget(cur, 0); !errors.Is(err, channel.ErrNoKnownGood) || !strings.Contains(err.Error(), "missing or does not verify") {
		t.Fatalf("revert across a deleted entry: %v", err)
	}
}

// TestReplayedPointer: a genuine pointer that is older than verified
// history, or differs from the entry of its own number, is not built on.
func TestReplayedPointer(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	s, pub := testenv.NewSigner(t, "k")
	publishSystem(t, st, s, sysA)
	publishSystem(t, st, s, sysB)
	put(t, st, bucket.ChannelKey("prod"), getBody(t, st, bucket.RevisionKey("prod", 1)))
	h, err := channel.Load(ctx, st, "prod", trustOf(pub))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Current(); !errors.Is(err, manifest.ErrRollback) {
		t.Fatalf("replayed pointer: %v", err)
	}
	// New content from the operator still goes out, numbered after history.
	if res, err := testenv.PublishSigned(ctx, st, nil, testenv.Payload("prod", 0, sysC), s); err != nil || res.Revision != 3 {
		t.Fatalf("publish over a replayed pointer: %+v %v", res, err)
	}
	// Same number, other content (revision 3 signed again elsewhere).
	put(t, st, bucket.ChannelKey("prod"), signed(t, s, "prod", 3))
	h, _ = channel.Load(ctx, st, "prod", trustOf(pub))
	if _, err := h.Current(); !errors.Is(err, manifest.ErrEquivocation) {
		t.Fatalf("pointer disagreeing with its history entry: %v", err)
	}
}

// TestCheckReports: most devices of the channel past the verified history
// means truncation; one device claiming so does not block anything.
func TestCheckReports(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	s, pub := testenv.NewSigner(t, "k")
	publishSystem(t, st, s, sysA)
	publishSystem(t, st, s, sysB)
	h, err := channel.Load(ctx, st, "prod", trustOf(pub))
	if err != nil {
		t.Fatal(err)
	}
	rep := func(id, ch string, rev uint64) channel.Report {
		return channel.Report{Status: status.Status{DeviceID: id, Channel: ch, Revision: rev}}
	}
	cases := []struct {
		name    string
		reports []channel.Report
		refuse  bool
	}{
		{"all at the latest", []channel.Report{rep("a", "prod", 2), rep("b", "prod", 2)}, false},
		{"one liar", []channel.Report{rep("a", "prod", 2), rep("b", "prod", 2), rep("c", "prod", 99)}, false},
		{"most ahead", []channel.Report{rep("a", "prod", 5), rep("b", "prod", 5), rep("c", "prod", 2)}, true},
		{"ahead on another channel", []channel.Report{rep("a", "staging", 5), rep("b", "staging", 5)}, false},
		{"no reports", nil, false},
	}
	for _, c := range cases {
		if err := h.CheckReports(c.reports); (err != nil) != c.refuse || (err != nil && !errors.Is(err, manifest.ErrRollback)) {
			t.Errorf("%s: %v, refuse=%v", c.name, err, c.refuse)
		}
	}
}

// TestJunkClaimsSkipped: objects holding the next revision numbers cost
// Publish no attempts; it claims the first free number after them.
func TestJunkClaimsSkipped(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	s, _ := testenv.NewSigner(t, "k")
	publishSystem(t, st, s, sysA)
	for rev := uint64(2); rev <= 2+channel.MaxAttempts; rev++ {
		put(t, st, bucket.RevisionKey("prod", rev), []byte("x"))
	}
	res, err := testenv.PublishSigned(ctx, st, nil, testenv.Payload("prod", 0, sysB), s)
	if err != nil || res.Revision != 3+channel.MaxAttempts || res.Attempts != 1 {
		t.Fatalf("publish past junk: %+v %v", res, err)
	}
}

func getBody(t *testing.T, st bucket.Store, key string) []byte {
	t.Helper()
	o, err := st.Get(context.Background(), key, bucket.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return o.Data
}

func mustFind(t *testing.T, h *channel.History, rev uint64) channel.Entry {
	t.Helper()
	e, err := h.Find(rev)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestDraftDropsRetry: a revision derived from a retry revision (resign,
// rollout step, rollback) does not grant devices another try.
func TestDraftDropsRetry(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	s, pub := testenv.NewSigner(t, "k")
	p := testenv.Payload("prod", 0, sysA)
	p.Retry = true
	if _, err := testenv.PublishSigned(ctx, st, nil, p, s); err != nil {
		t.Fatal(err)
	}
	h, err := channel.Load(ctx, st, "prod", trustOf(pub))
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := h.Current()
	if !cur.Payload().Retry || cur.Draft(time.Hour).Payload().Retry {
		t.Fatalf("retry on the entry %v, on its draft %v", cur.Payload().Retry, cur.Draft(time.Hour).Payload().Retry)
	}
}
