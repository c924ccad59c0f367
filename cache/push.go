package cache

import (
	"context"
	"errors"
	"fmt"
	"path"
	"runtime"
	"slices"
	"sort"
	"sync"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/delta"
)

// Progress is reported after each path.
type Progress struct {
	Done, Total       int    // paths looked at
	Uploaded, Skipped int    // paths written / already complete in the cache
	Bytes             int64  // compressed bytes uploaded so far
	NarBytes          int64  // NAR bytes of the paths uploaded so far
	Path              string // the path just finished
	Deltas            int    // uploaded paths that also got a delta
	DeltaBytes        int64  // bytes of those deltas
	DeltaFullBytes    int64  // compressed NAR bytes of the same paths
	PathDelta         int64  // bytes of the delta written for Path (0: none)
}

// Result sums up a push.
type Result = Progress

// Phases of ByteProgress. A NAR streams: it is dumped, compressed and
// uploaded at once, so the two phases move together, upload a compressed
// block behind.
const (
	PhaseCompress = "compress" // Done of NarSize NAR bytes dumped and compressed
	PhaseUpload   = "upload"   // Done of NarSize NAR bytes whose compressed form the bucket has taken
)

// ByteProgress is reported while one path's NAR is compressed and
// uploaded, after every block: a large path shows it is moving long
// before Progress reports it done.
type ByteProgress struct {
	Path        string
	Phase       string // PhaseCompress or PhaseUpload
	Done, Total int64  // bytes; Total is 0 when unknown
}

// Pusher uploads closures into a bucket's cache.
type Pusher struct {
	Store bucket.Store
	Key   signature.SecretKey
	Nix   Nix
	// Jobs is how many paths upload at once; 0 means DefaultJobs().
	// Narinfos are looked up Lookups at once (or Jobs, if more).
	Jobs int
	// Progress is called after each path (optional), from one goroutine
	// at a time, with totals that only grow.
	Progress func(Progress)
	// Bytes is called with byte counts within each path (optional). It is
	// called often, from the goroutines that read and write NARs, for
	// several paths at once; the receiver throttles what it prints.
	Bytes func(ByteProgress)
	// Bases are store paths devices are likely to hold (the closures of
	// recent revisions): each uploaded path at least delta.MinNarSize
	// large also gets a delta against the most similar of them, when that
	// is at most half its compressed NAR. Nil: no deltas.
	Bases []delta.Candidate
	// Warn is told why a path got no delta (optional): a delta only saves
	// devices bytes, so failing to make one never fails the push.
	Warn func(storePath string, err error)

	deltaOnce sync.Once
	deltas    chan struct{}
}

// DefaultJobs is how many paths a push uploads at once unless told: at
// least 4, so upload latency overlaps with compression even on 2 cores,
// and at most 16, which bounds memory (a job's S3 parts wait in kernel
// memory, up to 32 MiB; zstd encoders, about 3 MiB each, are one a core).
func DefaultJobs() int { return min(max(4, runtime.GOMAXPROCS(0)), 16) }

// EnsureInfo writes cache/nix-cache-info if it is missing.
func EnsureInfo(ctx context.Context, s bucket.Store) error {
	info := "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
	_, err := bucket.PutBytes(ctx, s, InfoKey, []byte(info), bucket.PutOptions{ContentType: "text/x-nix-cache-info", CreateOnly: true})
	if errors.Is(err, bucket.ErrExists) {
		return nil
	}
	return err
}

// signedHere reports whether the cache already has a narinfo for path that
// this pusher's key signed. Anything else at that key (junk, another key's
// narinfo) is pushed over: skipping it would leave devices a path they
// cannot fetch, and publish's closure check would count it present.
func (p *Pusher) signedHere(ctx context.Context, path string) (bool, error) {
	ni, err := ReadNarinfo(ctx, p.Store, path)
	switch {
	case errors.Is(err, bucket.ErrNotFound):
		return false, nil
	case err != nil && (errors.Is(err, bucket.ErrUnreachable) || errors.Is(err, bucket.ErrAccessDenied)):
		return false, err
	case err != nil:
		return false, nil // unreadable or malformed: replace it
	}
	return signature.VerifyFirst(ni.Fingerprint(), ni.Signatures, []signature.PublicKey{p.Key.ToPublicKey()}), nil
}

// Push uploads the closures of paths: for each path whose narinfo is not
// in the cache yet, the zstd-compressed NAR, then the signed narinfo once
// the narinfos of its references are there. Up to Jobs paths upload at
// once, largest first; the first error stops the rest, and what is
// complete stays complete.
func (p *Pusher) Push(ctx context.Context, paths []string) (Result, error) {
	info := make(chan error, 1) // one request, while nix path-info runs
	go func() { info <- EnsureInfo(ctx, p.Store) }()
	closure, err := p.Nix.Closure(ctx, paths)
	if ierr := <-info; ierr != nil {
		return Result{}, ierr
	}
	if err != nil {
		return Result{}, err
	}
	return newPushRun(p, closure).run(ctx)
}

// pushRun is one Push: the closure, largest NAR first, a channel per path
// closed once its narinfo is in the cache, and the running totals.
type pushRun struct {
	p       *Pusher
	closure []PathInfo
	written map[string]chan struct{}
	slots   chan struct{} // one token per job
	lookups sync.WaitGroup
	nars    narGroup

	mu  sync.Mutex // guards res and serialises Progress calls
	res Result
}

func newPushRun(p *Pusher, closure []PathInfo) *pushRun {
	jobs := p.Jobs
	if jobs <= 0 {
		jobs = DefaultJobs()
	}
	// Largest first: the push ends when its largest NAR does, so that one
	// starts at once, and small ones fill the other jobs. Narinfos still
	// wait for their references, so the order of uploads is free.
	closure = slices.Clone(closure)
	sort.SliceStable(closure, func(i, j int) bool { return closure[i].NarSize > closure[j].NarSize })
	r := &pushRun{p: p, closure: closure, written: map[string]chan struct{}{}, slots: make(chan struct{}, jobs)}
	r.nars.compress = make(chan struct{}, min(jobs, runtime.GOMAXPROCS(0)))
	for _, info := range closure {
		r.written[info.Path] = make(chan struct{})
	}
	r.res.Total = len(closure)
	return r
}

// run starts one goroutine per path to upload (missing) as job slots free
// up, and waits for all of them and the lookups. The first error cancels
// the others.
func (r *pushRun) run(ctx context.Context) (Result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for info := range r.missing(ctx, cancel) {
		if !r.acquire(ctx) {
			continue // drained: the lookups stop on ctx too
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.path(ctx, info); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	r.lookups.Wait()
	err := context.Cause(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.res, err
}

// Lookups is how many narinfos a push looks up at once (more if Jobs is
// larger): they are small requests, and a push that finds most of a
// closure in the cache is made of little else.
const Lookups = 16

// missing sends the paths to upload, largest first: those whose narinfo
// this key did not sign, as lookUp finds them. It closes the channel when
// every path is looked at or ctx is done.
func (r *pushRun) missing(ctx context.Context, cancel context.CancelCauseFunc) <-chan PathInfo {
	out := make(chan PathInfo)
	upload := make([]chan bool, len(r.closure))
	for i := range upload {
		upload[i] = make(chan bool, 1)
	}
	r.lookups.Add(1)
	go r.lookUp(ctx, cancel, upload)
	go func() {
		defer close(out)
		for i, info := range r.closure {
			select {
			case up := <-upload[i]:
				if !up {
					continue
				}
				select {
				case out <- info:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// lookUp reads every path's narinfo, Lookups at once (or Jobs, if more),
// counts those this key signed as done, and says on upload[i] whether
// closure[i] is to be uploaded. An error cancels the push.
func (r *pushRun) lookUp(ctx context.Context, cancel context.CancelCauseFunc, upload []chan bool) {
	defer r.lookups.Done()
	sem := make(chan struct{}, max(Lookups, cap(r.slots)))
	for i, info := range r.closure {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		r.lookups.Add(1)
		go func() {
			defer func() { <-sem; r.lookups.Done() }()
			present, err := r.p.signedHere(ctx, info.Path)
			switch {
			case err != nil:
				cancel(fmt.Errorf("push %s: %w", info.Path, err))
			case present:
				close(r.written[info.Path])
				r.done(info.Path, nil, nil)
				upload[i] <- false
			default:
				upload[i] <- true
			}
		}()
	}
}

// acquire takes a job slot, or reports false once ctx is done.
func (r *pushRun) acquire(ctx context.Context) bool {
	select {
	case r.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *pushRun) release() { <-r.slots }

// path uploads one path, holding the slot run took for it while it
// uploads the NAR. Waiting for its references holds no slot, so a path
// never keeps a job from the paths it waits for.
func (r *pushRun) path(ctx context.Context, info PathInfo) error {
	nar, err := r.nars.upload(ctx, r.p, info)
	r.release()
	if err != nil {
		return fmt.Errorf("push %s: %w", info.Path, err)
	}
	dr, err := r.p.writeDelta(ctx, info, nar)
	if err != nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if err != nil && r.p.Warn != nil {
		r.p.Warn(info.Path, err)
	}
	if err := r.waitReferences(ctx, info); err != nil {
		return err
	}
	if !r.acquire(ctx) {
		return context.Cause(ctx)
	}
	err = r.p.putNarinfo(ctx, info, nar)
	r.release()
	if err != nil {
		return fmt.Errorf("push %s: %w", info.Path, err)
	}
	close(r.written[info.Path])
	r.done(info.Path, nar, dr)
	return nil
}

// waitReferences blocks until the narinfo of every reference of info is
// in the cache.
func (r *pushRun) waitReferences(ctx context.Context, info PathInfo) error {
	for _, ref := range info.References {
		if ref == info.Path {
			continue
		}
		ch, ok := r.written[ref]
		if !ok {
			return fmt.Errorf("push %s: its reference %s is not in the closure (nix path-info)", info.Path, ref)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// done counts a finished path (nar is nil when it was already there) and
// reports the totals.
func (r *pushRun) done(storePath string, nar *pushedNAR, dr *deltaResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Done++
	r.res.Path, r.res.PathDelta = storePath, 0
	if nar == nil {
		r.res.Skipped++
	} else {
		r.res.Uploaded++
		if !nar.shared {
			r.res.Bytes += nar.compressed
		}
		r.res.NarBytes += nar.narSize
	}
	if dr != nil {
		r.res.Deltas++
		r.res.DeltaBytes += dr.size
		r.res.DeltaFullBytes += dr.full
		r.res.PathDelta = dr.size
	}
	if r.p.Progress != nil {
		r.p.Progress(r.res)
	}
}

// putNarinfo writes the signed narinfo of a path whose NAR is uploaded.
func (p *Pusher) putNarinfo(ctx context.Context, info PathInfo, nar *pushedNAR) error {
	key, err := NarinfoKey(info.Path)
	if err != nil {
		return err
	}
	ni, err := p.narinfo(info, nar)
	if err != nil {
		return err
	}
	_, err = bucket.PutBytes(ctx, p.Store, key, []byte(ni.String()), bucket.PutOptions{ContentType: "text/x-nix-narinfo"})
	return err
}

// narinfo is the signed narinfo of a pushed path. It has no FileHash or
// FileSize: the NAR's object is named by its NAR hash, which is what Nix
// checks after decompressing, and a later push may store the same NAR
// compressed differently under the same key.
func (p *Pusher) narinfo(info PathInfo, nar *pushedNAR) (*narinfo.NarInfo, error) {
	ni := &narinfo.NarInfo{
		StorePath:   info.Path,
		URL:         nar.url,
		Compression: "zstd",
		NarHash:     nixhash.MustNewHashWithEncoding(nixhash.SHA256, nar.digest, nixhash.NixBase32, true),
		NarSize:     uint64(nar.narSize),
	}
	for _, r := range info.References {
		ni.References = append(ni.References, path.Base(r))
	}
	sort.Strings(ni.References)
	if info.Deriver != "" {
		ni.Deriver = path.Base(info.Deriver)
	}
	sig, err := p.Key.Sign(nil, ni.Fingerprint())
	if err != nil {
		return nil, err
	}
	ni.Signatures = append(ni.Signatures, sig)
	return ni, nil
}
