package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/delta"
	"github.com/nix-ota/nix-ota/nix"
	"github.com/nix-ota/nix-ota/status"
)

// deltaCacheDir is where, under the state directory, rebuilt NARs wait
// for Nix: one NAR and one base NAR at a time.
const deltaCacheDir = "delta-cache"

// maxFailures is how many deltas may fail in one fetch before the rest
// are not tried: each failure has cost a download and a base dump.
const maxFailures = 3

// fetchDeltas makes valid, from deltas, every path of storePath's closure
// that has one against a path the device holds, and returns what the
// update downloads (Bytes is final once Nix has fetched the rest).
func (a *Agent) fetchDeltas(ctx context.Context, rev uint64, storePath string, subs, keys []string) status.Fetch {
	if a.Config.NoDeltas {
		return status.Fetch{Revision: rev}
	}
	trusted := a.trustedKeys(ctx)
	if len(trusted) == 0 {
		a.logf("delta: no trusted cache key known; Nix fetches full NARs")
		return status.Fetch{Revision: rev}
	}
	plan, err := a.plan(ctx, storePath, trusted)
	if err != nil {
		a.logf("delta: cannot plan the fetch (%v); Nix fetches full NARs", err)
		return status.Fetch{Revision: rev}
	}
	f := tally(rev, plan)
	a.checkBases(ctx, plan)
	root := filepath.Join(a.Config.StateDir, deltaCacheDir)
	os.RemoveAll(root) // what an interrupted fetch left
	defer os.RemoveAll(root)
	r := &deltaRun{a: a, dir: filepath.Join(root, strconv.FormatInt(a.now().UnixNano(), 36)), subs: subs, keys: keys}
	var replaced int64 // compressed NAR bytes the deltas stood in for
	for _, m := range plan {
		if m.ix != nil && f.Fallbacks >= maxFailures {
			m.ix, m.why = nil, fmt.Sprintf("%d deltas failed in this fetch; the rest are not tried", maxFailures)
		}
		if m.ix != nil {
			n, err := r.apply(ctx, m)
			if err == nil {
				f.DeltaPaths++
				f.DeltaBytes += n
				f.Bytes += n - m.full
				replaced += m.full
				continue
			}
			m.ix, m.why = nil, err.Error()
		}
		if m.why != "" {
			f.Fallbacks++
			if f.Fallback == "" {
				f.Fallback = status.Clean(m.why, maxText)
			}
			a.logf("delta: %s: %s; fetching the full NAR", m.path, m.why)
		}
	}
	if f.DeltaPaths > 0 {
		a.logf("delta: %d of %d paths from deltas: %d bytes instead of %d", f.DeltaPaths, f.Paths, f.DeltaBytes, replaced)
	}
	return f
}

// checkBases drops the deltas whose base the device does not hold as the
// publisher did.
func (a *Agent) checkBases(ctx context.Context, plan []*missing) {
	var bases []string
	for _, m := range plan {
		if m.ix != nil {
			bases = append(bases, m.ix.Base)
		}
	}
	if len(bases) == 0 {
		return
	}
	invalid, err := a.System.Invalid(ctx, bases)
	hashes := map[string]string{}
	for _, m := range plan {
		if m.ix == nil {
			continue
		}
		b := m.ix.Base
		if _, ok := hashes[b]; !ok && err == nil && !invalid[b] {
			hashes[b], _ = a.System.NarHash(ctx, b)
		}
		switch {
		case err != nil:
			m.why = fmt.Sprintf("cannot check the base %s: %v", b, err)
		case invalid[b]:
			m.why = fmt.Sprintf("its delta is against %s, which this device does not hold", b)
		case hashes[b] != m.ix.BaseNarHash:
			m.why = fmt.Sprintf("its delta is against %s as the publisher has it, and this device's copy differs", b)
		default:
			continue
		}
		m.ix = nil
	}
}

// deltaRun rebuilds NARs into a file:// binary cache of the agent's own,
// one path at a time, and has Nix realise each from there: Nix checks
// the copied narinfo's signature and the NAR's hash again.
type deltaRun struct {
	a          *Agent
	dir        string // unique per fetch: Nix caches what a cache URL had
	subs, keys []string
}

// spare is free space a rebuild leaves on the state directory's file
// system at the least.
const spare = 64 << 20

// apply makes m valid from its delta and returns the delta's size.
func (r *deltaRun) apply(ctx context.Context, m *missing) (int64, error) {
	need := m.ni.NarSize + m.ix.BaseNarSize + spare
	if free, err := nix.FreeSpace(r.a.Config.StateDir); err == nil && free < need {
		return 0, fmt.Errorf("%s has %d bytes free, the rebuild needs %d", r.a.Config.StateDir, free, need)
	}
	d, err := r.download(ctx, m.ix)
	if err != nil {
		return 0, err
	}
	return int64(len(d)), r.install(ctx, m, d)
}

// install rebuilds m's NAR from d and has Nix take it.
func (r *deltaRun) install(ctx context.Context, m *missing, d []byte) error {
	if err := os.MkdirAll(filepath.Join(r.dir, "nar"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.dir, "nix-cache-info"), []byte("StoreDir: /nix/store\nPriority: 10\n"), 0o600); err != nil {
		return err
	}
	narFile, err := r.rebuild(ctx, m, d)
	if narFile != "" {
		defer os.Remove(narFile)
	}
	if err != nil {
		return err
	}
	ni := *m.ni
	ni.URL, ni.Compression, ni.FileHash, ni.FileSize = "nar/"+filepath.Base(narFile), "none", nil, 0
	key, _ := cache.NarinfoKey(m.path)
	niFile := filepath.Join(r.dir, path.Base(key))
	if err := os.WriteFile(niFile, []byte(ni.String()), 0o600); err != nil {
		return err
	}
	defer os.Remove(niFile)
	subs := append([]string{"file://" + r.dir}, r.subs...)
	if err := r.a.System.Realise(ctx, m.path, subs, r.keys); err != nil {
		return fmt.Errorf("nix-store --realise from the rebuilt NAR: %w", err)
	}
	return nil
}

// download fetches a delta and checks it is the object its name says.
func (r *deltaRun) download(ctx context.Context, ix *delta.Index) ([]byte, error) {
	o, err := r.a.Store.Get(ctx, cache.Prefix+ix.Delta, bucket.GetOptions{MaxSize: ix.DeltaSize})
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", ix.Delta, err)
	}
	sum := sha256.Sum256(o.Data)
	if want, _ := delta.ObjectHash(ix.Delta); nixbase32.EncodeToString(sum[:]) != want {
		return nil, fmt.Errorf("%s does not hash to its name", ix.Delta)
	}
	return o.Data, nil
}

// rebuild writes the NAR of m from the delta d and the device's copy of
// its base, and checks size and hash against the narinfo. It returns the
// NAR's file, to remove, even on failure.
func (r *deltaRun) rebuild(ctx context.Context, m *missing, d []byte) (string, error) {
	baseFile := filepath.Join(r.dir, "base.nar")
	defer os.Remove(baseFile)
	size, err := dumpFile(ctx, r.a.System, m.ix.Base, baseFile)
	if err != nil {
		return "", fmt.Errorf("dump the base %s: %w", m.ix.Base, err)
	}
	base, err := os.Open(baseFile)
	if err != nil {
		return "", err
	}
	defer base.Close()
	want := m.ni.NarHash.Digest()
	narFile := filepath.Join(r.dir, "nar", nixbase32.EncodeToString(want)+".nar")
	out, err := os.OpenFile(narFile, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(out, h), 256<<10)
	n, err := delta.Apply(ctxWriter{ctx, w}, base, size, bytes.NewReader(d), int64(m.ni.NarSize))
	if err == nil {
		err = w.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return narFile, fmt.Errorf("rebuild from %s: %w", m.ix.Delta, err)
	case uint64(n) != m.ni.NarSize || !bytes.Equal(h.Sum(nil), want):
		return narFile, fmt.Errorf("the NAR rebuilt from %s does not match the narinfo's NarHash", m.ix.Delta)
	}
	return narFile, nil
}

// ctxWriter stops a rebuild once ctx is done: Apply itself takes no
// context, and a hostile delta can be slow.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(b)
}

// dumpFile writes a store path's NAR to file and returns its size.
func dumpFile(ctx context.Context, sys nix.System, storePath, file string) (int64, error) {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 256<<10)
	err = sys.Dump(ctx, storePath, w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
