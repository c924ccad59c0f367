package cli_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/nix"
)

// minioCache is a MinIO bucket with anonymous read on cache/, how devices
// substitute from it over HTTP.
func minioCache(t *testing.T) (fixture, string) {
	f := fixtures(t)["minio"](t)
	m := testenv.SharedMinIO(t)
	name := strings.TrimPrefix(strings.SplitN(f.url, "?", 2)[0], "s3://")
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/cache/*"]}]}`, name)
	if err := m.Admin().SetBucketPolicy(context.Background(), name, policy); err != nil {
		t.Fatal(err)
	}
	return f, fmt.Sprintf("http://%s/%s/cache", m.Endpoint, name)
}

func cacheKeys(t *testing.T, f fixture) []string {
	var keys []string
	f.store.List(context.Background(), "cache/", func(i bucket.Info) error { keys = append(keys, i.Key); return nil })
	sort.Strings(keys)
	return keys
}

// TestPushAndFetch: push uploads a closure once, only new paths after
// that, and real Nix fetches it back from MinIO, checking the signature.
func TestPushAndFetch(t *testing.T) {
	testenv.RequireNix(t)
	f, subst := minioCache(t)
	c := testenv.NewCache(t) // only for its key pair
	shared1 := testenv.BuildSystem(t, "shared1", testenv.SystemOptions{})
	shared2 := testenv.BuildSystem(t, "shared2", testenv.SystemOptions{})
	a := testenv.BuildSystem(t, "a", testenv.SystemOptions{Deps: []string{shared1, shared2}})
	b := testenv.BuildSystem(t, "b", testenv.SystemOptions{Deps: []string{shared1, shared2}})

	out := mustRun(t, f.env, "push", "--bucket", f.url, "--store-path", a, "--cache-key", c.SecretKey)
	if !strings.Contains(out, "pushed 3 paths") || !strings.Contains(out, "0 were already there") {
		t.Fatalf("first push: %s", out)
	}
	out = mustRun(t, f.env, "push", "--bucket", f.url, "--store-path", a, "--cache-key", c.SecretKey)
	if !strings.Contains(out, "pushed 0 paths") || !strings.Contains(out, "3 were already there") {
		t.Fatalf("second push uploaded again: %s", out)
	}
	out = mustRun(t, f.env, "push", "--bucket", f.url, "--store-path", b, "--cache-key", c.SecretKey)
	if !strings.Contains(out, "pushed 1 paths") || !strings.Contains(out, "2 were already there") {
		t.Fatalf("push of a system sharing most paths: %s", out)
	}
	if n := len(cacheKeys(t, f)); n != 1+2*4 {
		t.Fatalf("%d cache objects, want %d", n, 1+2*4)
	}

	testenv.Forget(t, a, b, shared1, shared2)
	l := &nix.Local{SwitchVia: nix.SwitchViaDirect}
	wrong := testenv.NewCache(t)
	if err := l.Realise(context.Background(), a, []string{subst}, []string{wrong.PublicKey}); err == nil {
		t.Fatal("Nix accepted the pushed closure under another cache key")
	}
	if err := l.Realise(context.Background(), a, []string{subst}, []string{c.PublicKey}); err != nil {
		t.Fatalf("fetch the pushed closure from MinIO: %v", err)
	}
	if out, err := exec.Command("nix-store", "--verify-path", a).CombinedOutput(); err != nil {
		t.Fatalf("fetched path does not verify: %v %s", err, out)
	}
}

// TestPushResumes: a push cut off midway leaves no narinfo without its NAR,
// and the next push uploads only what is missing.
func TestPushResumes(t *testing.T) {
	testenv.RequireNix(t)
	f, subst := minioCache(t)
	c := testenv.NewCache(t)
	libs := []string{testenv.BuildSystem(t, "l1", testenv.SystemOptions{}), testenv.BuildSystem(t, "l2", testenv.SystemOptions{}), testenv.BuildSystem(t, "l3", testenv.SystemOptions{})}
	sys := testenv.BuildSystem(t, "top", testenv.SystemOptions{Deps: libs})
	key, err := cache.LoadKey(c.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	cut := &cutStore{Store: f.store, after: 5} // nix-cache-info and 4 more, of 9
	p := &cache.Pusher{Store: cut, Key: key, Nix: cache.LocalNix{}}
	res, err := p.Push(context.Background(), []string{sys})
	if err == nil {
		t.Fatal("the cut did not happen")
	}
	// Every narinfo present has its NAR.
	narinfos := 0
	for _, k := range cacheKeys(t, f) {
		if strings.HasSuffix(k, ".narinfo") {
			narinfos++
			ni, err := cache.ParseNarinfo(parseStorePath(t, getObj(t, f.store, k)), getObj(t, f.store, k))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.store.Stat(context.Background(), "cache/"+ni.URL); err != nil {
				t.Fatalf("narinfo %s points at a missing NAR", k)
			}
		}
	}
	// A narinfo stored as the cut cancels its request is not counted.
	if res.Uploaded > narinfos || narinfos == 4 {
		t.Fatalf("before the cut: %+v, %d narinfos in the cache", res, narinfos)
	}
	out := mustRun(t, f.env, "push", "--bucket", f.url, "--store-path", sys, "--cache-key", c.SecretKey)
	if !strings.Contains(out, fmt.Sprintf("pushed %d paths", 4-narinfos)) || !strings.Contains(out, fmt.Sprintf("%d were already there", narinfos)) {
		t.Fatalf("resumed push after %d narinfos: %s", narinfos, out)
	}
	testenv.Forget(t, append([]string{sys}, libs...)...)
	if err := (&nix.Local{SwitchVia: nix.SwitchViaDirect}).Realise(context.Background(), sys, []string{subst}, []string{c.PublicKey}); err != nil {
		t.Fatalf("fetch after a resumed push: %v", err)
	}
}

func parseStorePath(t *testing.T, narinfo []byte) string {
	for _, l := range strings.Split(string(narinfo), "\n") {
		if p, ok := strings.CutPrefix(l, "StorePath: "); ok {
			return p
		}
	}
	t.Fatalf("no StorePath in %s", narinfo)
	return ""
}

// cutStore fails every Put after the first `after`: the network dropping
// in the middle of a push (whose paths upload at once).
type cutStore struct {
	bucket.Store
	mu          sync.Mutex
	after, puts int
}

func (c *cutStore) Put(ctx context.Context, key string, r io.Reader, size int64, o bucket.PutOptions) (string, error) {
	c.mu.Lock()
	c.puts++
	cut := c.puts > c.after
	c.mu.Unlock()
	if cut {
		return "", fmt.Errorf("put %s: %w: connection reset (injected)", key, bucket.ErrUnreachable)
	}
	return c.Store.Put(ctx, key, r, size, o)
}

// TestGC: with 5 revisions and --keep-revisions 2, gc frees exactly the
// objects only the 3 oldest systems needed, and the kept revisions can
// still be fetched.
func TestGC(t *testing.T) {
	testenv.RequireNix(t)
	f, subst := minioCache(t)
	c := testenv.NewCache(t)
	key, _ := keygen(t, "fleet-1")
	shared := testenv.BuildSystem(t, "shared", testenv.SystemOptions{})
	var systems, libs []string
	for i := 1; i <= 5; i++ {
		lib := testenv.BuildSystem(t, fmt.Sprintf("lib%d", i), testenv.SystemOptions{})
		libs = append(libs, lib)
		systems = append(systems, testenv.BuildSystem(t, fmt.Sprintf("sys%d", i), testenv.SystemOptions{Deps: []string{shared, lib}}))
	}
	for _, sp := range systems {
		mustRun(t, f.env, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", sp,
			"--push", "--cache-key", c.SecretKey, "--substituter", subst, "--no-dashboard")
	}
	before := cacheKeys(t, f)
	if len(before) != 1+2*11 {
		t.Fatalf("%d cache objects before gc, want %d", len(before), 1+2*11)
	}
	want := map[string]bool{"cache/nix-cache-info": true}
	for _, sp := range []string{systems[3], systems[4], libs[3], libs[4], shared} {
		k, _ := cache.NarinfoKey(sp)
		want[k] = true
		ni, err := cache.ParseNarinfo(sp, getObj(t, f.store, k))
		if err != nil {
			t.Fatal(err)
		}
		want["cache/"+ni.URL] = true
	}

	out := mustRun(t, f.env, "gc", "--bucket", f.url, "--keep-revisions", "2", "--min-age", "0s", "--dry-run")
	if strings.Count(out, "would delete cache/") != 12 || len(cacheKeys(t, f)) != len(before) {
		t.Fatalf("dry run:\n%s", out)
	}
	out = mustRun(t, f.env, "gc", "--bucket", f.url, "--keep-revisions", "2", "--min-age", "0s")
	if !strings.Contains(out, "deleted 12 objects") {
		t.Fatalf("gc: %s", out)
	}
	after := cacheKeys(t, f)
	if len(after) != len(want) {
		t.Fatalf("after gc: %v", after)
	}
	for _, k := range after {
		if !want[k] {
			t.Fatalf("gc kept %s, which no kept revision needs", k)
		}
	}
	// The default --min-age spares everything this young.
	if out := mustRun(t, f.env, "gc", "--bucket", f.url, "--keep-revisions", "1"); !strings.Contains(out, "deleted 0 objects") || !strings.Contains(out, "4 unreachable objects younger than 1h0m0s spared") {
		t.Fatalf("gc within min-age: %s", out)
	}

	all := append(append([]string{shared}, systems...), libs...)
	testenv.Forget(t, all...)
	l := &nix.Local{SwitchVia: nix.SwitchViaDirect}
	for _, sp := range systems[3:] {
		if err := l.Realise(context.Background(), sp, []string{subst}, []string{c.PublicKey}); err != nil {
			t.Fatalf("kept revision %s cannot be fetched: %v", sp, err)
		}
	}
	if err := l.Realise(context.Background(), systems[0], []string{subst}, []string{c.PublicKey}); err == nil {
		t.Fatal("a collected system could still be fetched")
	}
}

// TestRollbackAndResign: rollback republishes an earlier system under a
// new revision; resign refreshes the expiry of the current one.
func TestRollbackAndResign(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	a, b := storePath("sys-a"), storePath("sys-b")
	publishKnownGood(t, f, key, a, 1)
	mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", b, "--expires", "2h")
	current := func() *manifest.Payload {
		v, err := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json"))
		if err != nil {
			t.Fatal(err)
		}
		return v.Payload
	}
	out := mustRun(t, nil, "rollback", "--bucket", f.url, "--key", key, "--channel", "prod")
	p := current()
	if p.Revision != 3 || p.StorePath != a || !strings.Contains(p.Message, "rollback from revision 2") || !strings.Contains(out, "to revision 1") {
		t.Fatalf("rollback: %s %+v", out, p)
	}
	mustRun(t, nil, "rollback", "--bucket", f.url, "--key", key, "--channel", "prod", "--to", "2", "--expires", "2h")
	if p := current(); p.Revision != 4 || p.StorePath != b {
		t.Fatalf("rollback --to 2: %+v", p)
	}
	if r := run(t, nil, "rollback", "--bucket", f.url, "--key", key, "--channel", "prod", "--to", "9"); r.code != 2 {
		t.Fatalf("rollback to a future revision: %d %s", r.code, r.stderr)
	}
	old := current()
	out = mustRun(t, nil, "resign", "--bucket", f.url, "--key", key, "--channel", "prod", "--if-expires-within", "1h")
	if !strings.Contains(out, "nothing to do") || current().Revision != 4 {
		t.Fatalf("resign too early: %s", out)
	}
	mustRun(t, nil, "resign", "--bucket", f.url, "--key", key, "--channel", "prod", "--expires", "720h")
	p = current()
	if p.Revision != 5 || p.StorePath != old.StorePath || !p.ExpiresAt.After(old.ExpiresAt) || p.Rollout != old.Rollout {
		t.Fatalf("resign: %+v (was %+v)", p, old)
	}
	mustRun(t, nil, "verify", "--bucket", f.url, "--channel", "prod", "--public-key", pub)
}

// TestPublisherKilled: a publisher killed between the history write and
// the channel write leaves the channel pointer as it was (devices see
// nothing new), verify reports the gap, and the next publish moves on.
func TestPublisherKilled(t *testing.T) {
	f := fixtures(t)["minio"](t)
	m := testenv.SharedMinIO(t)
	px := testenv.StartFaultProxy(t, m.Endpoint)
	proxied := strings.Replace(f.url, m.Endpoint, px.Addr, 1)
	key, pub := keygen(t, "fleet-1")
	mustRun(t, f.env, "publish", "--skip-closure-check", "--bucket", proxied, "--key", key, "--channel", "prod", "--store-path", storePath("a"), "--no-dashboard")

	px.Set(testenv.Hang, testenv.PathHas("PUT", "/channels/prod.json"))
	cmd := exec.Command(nixOta, "publish", "--skip-closure-check", "--bucket", proxied, "--key", key, "--channel", "prod", "--store-path", storePath("b"), "--no-dashboard")
	cmd.Env = append(append(os.Environ(), "AWS_EC2_METADATA_DISABLED=true"), f.env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	px.WaitHanging(t, 60*time.Second)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	px.Set(testenv.Pass, nil)

	if keys := historyKeys(t, f); len(keys) != 2 {
		t.Fatalf("history: %v", keys)
	}
	v, err := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json"))
	if err != nil || v.Payload.Revision != 1 {
		t.Fatalf("the channel pointer moved: %v %+v", err, v)
	}
	if r := run(t, f.env, "verify", "--bucket", f.url, "--channel", "prod", "--public-key", pub); r.code != 3 || !strings.Contains(r.stderr, "older than accepted revision 2") {
		t.Fatalf("verify after an interrupted publish: %d %s", r.code, r.stderr)
	}
	out := mustRun(t, f.env, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", storePath("b"), "--no-dashboard")
	if !strings.Contains(out, "revision 3") {
		t.Fatalf("next publish: %s", out)
	}
	mustRun(t, f.env, "verify", "--bucket", f.url, "--channel", "prod", "--public-key", pub)
}

func historyKeys(t *testing.T, f fixture) []string {
	var keys []string
	f.store.List(context.Background(), "channels/prod/", func(i bucket.Info) error { keys = append(keys, i.Key); return nil })
	return keys
}
