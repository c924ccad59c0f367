package agent

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sync"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/delta"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

// These tests put a hostile bucket (a real file:// one) in front of the
// device's fetch planning, with a System that holds a given set of paths;
// the delta path with real Nix and the real agent is TestDeltaUpdate.

// holdingSystem holds the paths in held (NAR bytes by path).
type holdingSystem struct {
	fakeSystem
	held  map[string][]byte
	keys  []string
	mu    sync.Mutex
	dumps int
}

func (h *holdingSystem) Invalid(_ context.Context, paths []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, p := range paths {
		out[p] = h.held[p] == nil
	}
	return out, nil
}

func (h *holdingSystem) NarHash(_ context.Context, p string) (string, error) {
	d := sha256.Sum256(h.held[p])
	return "sha256:" + nixbase32.EncodeToString(d[:]), nil
}

func (h *holdingSystem) Dump(_ context.Context, p string, w io.Writer) error {
	h.mu.Lock()
	h.dumps++
	h.mu.Unlock()
	_, err := w.Write(h.held[p])
	return err
}

func (h *holdingSystem) TrustedKeys(context.Context) ([]string, error) { return h.keys, nil }

// hostile is a file bucket with a cache a test writes narinfos into.
type hostile struct {
	t     *testing.T
	s     bucket.Store
	key   signature.SecretKey
	pub   string
	agent *Agent
	sys   *holdingSystem
}

func newHostile(t *testing.T) *hostile {
	s, err := bucket.Open("file://"+t.TempDir(), bucket.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	k, pk, _ := signature.GenerateKeypair("cache-1", nil)
	h := &hostile{t: t, s: s, key: k, pub: pk.String(), sys: &holdingSystem{held: map[string][]byte{}}}
	h.agent = &Agent{Config: Config{StateDir: t.TempDir(), TrustedCacheKeys: []string{h.pub}}, Store: s, System: h.sys, Logf: t.Logf}
	return h
}

func (h *hostile) put(key string, b []byte) {
	if _, err := bucket.PutBytes(context.Background(), h.s, key, b, bucket.PutOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

// index writes an index for ni against base (held by the device).
func (h *hostile) index(ni *narinfo.NarInfo, base string, fullSize int64, d []byte) {
	sum := sha256.Sum256(d)
	bh, _ := h.sys.NarHash(context.Background(), base)
	ix := delta.Index{StorePath: ni.StorePath, NarHash: ni.NarHash.String(), NarSize: ni.NarSize, Base: base, BaseNarHash: bh,
		BaseNarSize: uint64(len(h.sys.held[base])), Delta: delta.ObjectKey(nixbase32.EncodeToString(sum[:])), DeltaSize: int64(len(d)), FullSize: fullSize}
	b, _ := json.Marshal(ix)
	k, _ := delta.IndexKey(ni.StorePath)
	h.put("cache/"+k, b)
	h.put("cache/"+ix.Delta, d)
}

func paths(plan []*missing) []string {
	var out []string
	for _, m := range plan {
		out = append(out, path.Base(m.path))
	}
	slices.Sort(out)
	return out
}

// TestDeltaPlanFollowsOnlySigned: a narinfo no trusted key signed (here
// one claiming a 1 TiB NAR and naming more paths) is not followed, gets
// no delta, and costs the device nothing but its read.
func TestDeltaPlanFollowsOnlySigned(t *testing.T) {
	h := newHostile(t)
	sys, lib, forged, behind := testenv.StorePath("nixos-system-b"), testenv.StorePath("lib-2"), testenv.StorePath("app-1.1"), testenv.StorePath("more-1")
	testenv.PutNarinfo(t, h.s, &h.key, sys, 4096, lib, forged)
	testenv.PutNarinfo(t, h.s, &h.key, lib, 4096)
	testenv.PutNarinfo(t, h.s, nil, forged, 1<<40, behind)
	testenv.PutNarinfo(t, h.s, &h.key, behind, 4096)
	plan, err := h.agent.plan(context.Background(), sys, h.agent.trustedKeys(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := paths(plan), []string{path.Base(lib), path.Base(sys)}; !slices.Equal(got, want) {
		t.Fatalf("plan %q, want %q", got, want)
	}
	h.agent.Config.TrustedCacheKeys = nil // and Nix trusts no key either
	if f := h.agent.fetchDeltas(context.Background(), 2, sys, nil, nil); f != (status.Fetch{Revision: 2}) {
		t.Fatalf("with no trusted key: fetch %+v, want nothing planned", f)
	}
}

// denyMissing answers a missing key the way S3 does without list rights.
type denyMissing struct{ bucket.Store }

func (d denyMissing) Get(ctx context.Context, key string, o bucket.GetOptions) (*bucket.Object, error) {
	obj, err := d.Store.Get(ctx, key, o)
	if errors.Is(err, bucket.ErrNotFound) {
		return nil, fmt.Errorf("get %s: %w", key, bucket.ErrAccessDenied)
	}
	return obj, err
}

// TestDeltaAccessDeniedIsAbsent: with a GetObject-only credential S3
// answers 403 for an index (or a narinfo) that does not exist: that is no
// delta, not a failure, and the plan goes on.
func TestDeltaAccessDeniedIsAbsent(t *testing.T) {
	h := newHostile(t)
	h.agent.Store = denyMissing{h.s}
	sys, big, elsewhere := testenv.StorePath("nixos-system-b"), testenv.StorePath("big-1.1"), testenv.StorePath("from-cache-nixos-org")
	testenv.PutNarinfo(t, h.s, &h.key, sys, 4096, big, elsewhere)
	testenv.PutNarinfo(t, h.s, &h.key, big, 1<<20)
	f := h.agent.fetchDeltas(context.Background(), 2, sys, nil, nil)
	if f.Paths != 2 || f.Fallbacks != 0 || f.Fallback != "" {
		t.Fatalf("fetch %+v: want 2 paths, no fallback", f)
	}
}

// TestDeltaFiguresBounded: an index claiming an absurd compressed size
// cannot push the device's fetch figures past what its signed check-in
// may carry; at most three deltas fail before the rest are not tried.
func TestDeltaFiguresBounded(t *testing.T) {
	h := newHostile(t)
	base := testenv.StorePath("app-1.0")
	h.sys.held[base] = make([]byte, 1<<20)
	sys := testenv.StorePath("nixos-system-b")
	var apps []string
	for i := range 5 {
		apps = append(apps, testenv.StorePath("app-1."+string(rune('1'+i))))
	}
	testenv.PutNarinfo(t, h.s, &h.key, sys, 4096, apps...)
	for _, p := range apps {
		ni := testenv.PutNarinfo(t, h.s, &h.key, p, 1<<20)
		h.index(ni, base, 1<<62, []byte(delta.Magic+"not zstd"))
	}
	f := h.agent.fetchDeltas(context.Background(), 2, sys, nil, nil)
	if f.FullBytes > 5*delta.MaxCompressed(1<<20)+delta.MaxCompressed(4096) || f.Fallbacks != 5 || f.DeltaPaths != 0 {
		t.Fatalf("fetch %+v", f)
	}
	if h.sys.dumps != 3 {
		t.Fatalf("%d bases dumped, want 3 (then no more tries)", h.sys.dumps)
	}
	b, _ := json.Marshal(status.Status{DeviceID: "d", Channel: "prod", State: status.UpToDate, Fetch: f})
	if _, err := status.Parse("d", b); err != nil {
		t.Fatalf("the device's own status would be refused: %v", err)
	}
}

// TestNoDeltas: a device configured with noDeltas (module: deltas =
// false) reads nothing for deltas and leaves every path to Nix whole.
func TestNoDeltas(t *testing.T) {
	h := newHostile(t)
	base := testenv.StorePath("app-1.0")
	h.sys.held[base] = make([]byte, 1<<20)
	sys, app := testenv.StorePath("nixos-system-b"), testenv.StorePath("app-1.1")
	testenv.PutNarinfo(t, h.s, &h.key, sys, 4096, app)
	ni := testenv.PutNarinfo(t, h.s, &h.key, app, 1<<20)
	h.index(ni, base, 500000, []byte(delta.Magic+"not zstd"))
	if f := h.agent.fetchDeltas(context.Background(), 2, sys, nil, nil); f.Paths != 2 || f.Fallbacks != 1 {
		t.Fatalf("control: with deltas on, fetch %+v; want 2 paths and the broken delta tried", f)
	}
	h.agent.Config.NoDeltas = true
	if f := h.agent.fetchDeltas(context.Background(), 2, sys, nil, nil); f != (status.Fetch{Revision: 2}) || h.sys.dumps != 1 {
		t.Fatalf("noDeltas: fetch %+v after %d base dumps; want nothing planned, no dump", f, h.sys.dumps)
	}
}
