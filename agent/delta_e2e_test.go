package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/delta"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
)

// TestDeltaUpdate: the real CLI publishes system S1 and then S2, whose
// one large dependency changed a little, with --push; the push writes a
// delta for it. A real agent that runs S1 then installs S2 with the full
// NAR of that dependency gone from the bucket: only the delta can have
// made it. Two more devices, given a corrupted delta (under its correct
// name, with the index rewritten to it, as a bucket writer could): one
// garbled, one well formed but rebuilding another NAR, fall back to the
// full NAR, say so in their status, and end with the very same store
// path contents.
func TestDeltaUpdate(t *testing.T) {
	for _, backend := range []string{"file", "minio"} {
		t.Run(backend, func(t *testing.T) { testDeltaUpdate(t, backend) })
	}
}

func testDeltaUpdate(t *testing.T, backend string) {
	f := newFleet(t, backend)
	var env []string
	if backend == "file" {
		f.substitute = f.url + "/cache"
	} else {
		env = f.minio.Env()
	}
	key, pub := cliKeygen(t)
	f.pub = pub
	app1, app2 := appVersions(t)
	s1 := testenv.BuildSystem(t, "delta", testenv.SystemOptions{Deps: []string{app1}})
	s2 := testenv.BuildSystem(t, "delta", testenv.SystemOptions{Deps: []string{app2}})
	publish := func(sp string) string {
		return mustCLI(t, env, "publish", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", sp,
			"--push", "--cache-key", f.cache.SecretKey, "--substituter", f.substitute, "--no-dashboard")
	}
	publish(s1)
	testenv.Forget(t, s1, app1)
	d := f.device(t, "kiosk-1")
	d.mustOnce(t, 0)
	if d.current(t) != s1 {
		t.Fatalf("device runs %s, want S1", d.current(t))
	}
	if out := publish(s2); !strings.Contains(out, "deltas for 1 paths") {
		t.Fatalf("publish of S2 made no delta:\n%s", out)
	}
	testenv.Forget(t, s2, app2)
	ni, err := cache.ReadNarinfo(context.Background(), f.store, app2)
	if err != nil {
		t.Fatal(err)
	}
	full := getObj(t, f.store, "cache/"+ni.URL)
	if err := f.store.Delete(context.Background(), "cache/"+ni.URL); err != nil {
		t.Fatal(err)
	}

	r := d.mustOnce(t, 0)
	st := d.localStatus(t)
	t.Logf("delta install: %+v\n%s", st.Fetch, grepLines(r.stderr, "delta:"))
	if d.current(t) != s2 || st.Fetch.DeltaPaths != 1 || st.Fetch.Fallbacks != 0 || st.Fetch.DeltaBytes*5 > int64(len(full)) {
		t.Fatalf("device runs %s with fetch %+v; want S2 from one delta under a fifth of the %d-byte NAR", d.current(t), st.Fetch, len(full))
	}
	viaDelta := storeFacts(t, app2, s2)
	if want := ni.NarHash.String(); viaDelta[0] != want {
		t.Fatalf("NAR hash of %s after the delta: %s, narinfo says %s", app2, viaDelta[0], want)
	}

	// Corrupted deltas: the device must fall back to the full NAR.
	putObj(t, f.store, "cache/"+ni.URL, full)
	os.RemoveAll(filepath.Dir(d.profile)) // the profile's roots go, so S2 can
	for i, c := range []struct{ name, why string }{
		{"garbled", "corrupt delta"},
		{"wrong NAR", "does not match the narinfo's NarHash"},
	} {
		testenv.Forget(t, s2, app2)
		if c.name == "garbled" {
			replaceDelta(t, f, app2, garble(getDelta(t, f, app2)))
		} else {
			replaceDelta(t, f, app2, wrongNAR(t, app1, full))
		}
		dn := f.device(t, fmt.Sprintf("kiosk-%d", i+2))
		r = dn.mustOnce(t, 0)
		st = dn.localStatus(t)
		t.Logf("%s delta: %+v\n%s", c.name, st.Fetch, grepLines(r.stderr, "delta:"))
		if dn.current(t) != s2 || st.Fetch.DeltaPaths != 0 || st.Fetch.Fallbacks != 1 || !strings.Contains(st.Fetch.Fallback, c.why) {
			t.Fatalf("%s delta: device runs %s with fetch %+v; want S2 from the full NAR, one fallback saying %q", c.name, dn.current(t), st.Fetch, c.why)
		}
		if viaFull := storeFacts(t, app2, s2); strings.Join(viaFull, "\n") != strings.Join(viaDelta, "\n") {
			t.Fatalf("store paths differ after a normal substitution:\n%v\nafter the delta:\n%v", viaFull, viaDelta)
		}
		if dn.remoteStatus(t).Fetch != st.Fetch {
			t.Fatalf("check-in says %+v, the device %+v", dn.remoteStatus(t).Fetch, st.Fetch)
		}
		os.RemoveAll(filepath.Dir(dn.profile))
	}
}

// appVersions adds two versions of a 2 MiB program tree to the store:
// app-1.1 changes a few hundred bytes of app-1.0 and adds a file.
func appVersions(t *testing.T) (string, string) {
	nonce := fmt.Sprint(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(1, 2))
	bin := make([]byte, 2<<20)
	for i := 0; i < len(bin); {
		n := 1 + r.IntN(64)
		if r.IntN(3) == 0 { // runs of repeated words, as code and tables have
			copy(bin[i:min(i+n, len(bin))], bytes.Repeat([]byte{byte(r.IntN(8))}, n))
		} else {
			for j := i; j < min(i+n, len(bin)); j++ {
				bin[j] = byte(r.Uint32())
			}
		}
		i += n
	}
	var paths []string
	for v, name := range []string{"app-1.0", "app-1.1"} {
		dir := filepath.Join(t.TempDir(), name)
		os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
		b := bytes.Clone(bin)
		if v == 1 {
			copy(b[1<<20:], "a security fix, a few hundred bytes long, in the middle of the binary "+strings.Repeat("x", 300))
			os.WriteFile(filepath.Join(dir, "CHANGES"), []byte("1.1: fixed\n"), 0o644)
		}
		os.WriteFile(filepath.Join(dir, "bin", "app"), b, 0o755)
		os.WriteFile(filepath.Join(dir, "nonce"), []byte(nonce), 0o644)
		paths = append(paths, strings.TrimSpace(testenv.Cmd(t, "nix-store", "--add", dir)))
	}
	return paths[0], paths[1]
}

// storeFacts is what Nix records of each path (NAR hash, references) and
// the sha256 of its dump.
func storeFacts(t *testing.T, paths ...string) []string {
	var out []string
	for _, p := range paths {
		testenv.Cmd(t, "nix-store", "--verify-path", p)
		dump := sha256.Sum256([]byte(testenv.Cmd(t, "nix-store", "--dump", p)))
		out = append(out, strings.TrimSpace(testenv.Cmd(t, "nix-store", "--query", "--hash", p)),
			strings.Join(strings.Fields(testenv.Cmd(t, "nix-store", "--query", "--references", p)), " "), hex.EncodeToString(dump[:]))
	}
	return out
}

func getDelta(t *testing.T, f *fleet, storePath string) []byte {
	key, _ := delta.IndexKey(storePath)
	ix, err := delta.ParseIndex(storePath, getObj(t, f.store, "cache/"+key))
	if err != nil {
		t.Fatal(err)
	}
	return getObj(t, f.store, "cache/"+ix.Delta)
}

// garble flips bytes inside a delta's op stream.
func garble(d []byte) []byte {
	d = bytes.Clone(d)
	for i := len(delta.Magic) + 20; i < len(d)-8; i += 7 {
		d[i] ^= 0x5a
	}
	return d
}

// wrongNAR is a well-formed delta from base's NAR to the NAR in the
// compressed full, one byte of a file changed.
func wrongNAR(t *testing.T, base string, full []byte) []byte {
	zr, err := zstd.NewReader(bytes.NewReader(full))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	target, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	target[len(target)/2] ^= 1
	var out bytes.Buffer
	if _, err := delta.Encode(&out, []byte(testenv.Cmd(t, "nix-store", "--dump", base)), target); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// replaceDelta stores d under its own (correct) content name and points
// the path's index at it: everything a bucket writer can do without the
// cache key.
func replaceDelta(t *testing.T, f *fleet, storePath string, d []byte) {
	key, _ := delta.IndexKey(storePath)
	var ix delta.Index
	if err := json.Unmarshal(getObj(t, f.store, "cache/"+key), &ix); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(d)
	ix.Delta, ix.DeltaSize = delta.ObjectKey(nixbase32.EncodeToString(sum[:])), int64(len(d))
	putObj(t, f.store, "cache/"+ix.Delta, d)
	b, _ := json.Marshal(ix)
	putObj(t, f.store, "cache/"+key, b)
}

var (
	cliOnce sync.Once
	cliBin  string
	cliErr  error
)

// mustCLI runs the real nix-ota, built once.
func mustCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cliOnce.Do(func() {
		cliBin = filepath.Join(filepath.Dir(agentBin), "nix-ota")
		out, err := exec.Command("go", "build", "-o", cliBin, "../cmd/nix-ota").CombinedOutput()
		if err != nil {
			cliErr = fmt.Errorf("build nix-ota: %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBin, args...)
	cmd.Env = append(append(os.Environ(), "AWS_EC2_METADATA_DISABLED=true", "NIX_OTA_BUCKET=", "NIX_OTA_KEY="), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		t.Fatalf("nix-ota %s: %v\n%s%s", strings.Join(args, " "), err, so.String(), se.String())
	}
	t.Logf("nix-ota %s:\n%s", args[0], se.String())
	return so.String()
}

func cliKeygen(t *testing.T) (string, manifest.PublicKey) {
	file := filepath.Join(t.TempDir(), "fleet.key")
	pub, err := manifest.ParsePublicKey(strings.TrimSpace(mustCLI(t, nil, "keygen", "--out", file, "--name", "fleet-1")))
	if err != nil {
		t.Fatal(err)
	}
	return file, pub
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
