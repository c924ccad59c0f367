package agent_test

import (
	"context"
	"crypto/subtle"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/internal/testenv"
)

// TestPrivateCacheNetrc: a binary cache behind HTTP basic auth, the way
// docs/private-caches.md sets one up. The agent passes no credentials of
// its own: Nix reads them from its netrc-file. Without that setting the
// update fails and nothing changes; with it the device updates. On NixOS
// nix-daemon does this fetching, so the setting goes in nix.settings
// (netrc-file); here, with single-user Nix, the same setting reaches the
// nix-store the agent runs through NIX_CONFIG.
func TestPrivateCacheNetrc(t *testing.T) {
	f := newFleet(t, "file")
	var refused atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != "kiosk-1" || subtle.ConstantTimeCompare([]byte(pass), []byte("cache-secret")) != 1 {
			refused.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="cache"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		http.FileServer(http.Dir(f.cache.Dir)).ServeHTTP(w, r)
	}))
	defer srv.Close()
	f.substitute = srv.URL // the manifest and the device name only this cache
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)

	run := func(nixConfig string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, agentBin, d.args()...)
		cmd.Env = append(os.Environ(), "NIX_OTA_TEST_LOG="+d.sw, "NIX_CONFIG="+nixConfig)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}

	// No credentials for the cache: refused, the fetch fails, nothing changes.
	if code, out := run("netrc-file = /nonexistent"); code != 1 || refused.Load() == 0 {
		t.Fatalf("without a netrc: exit %d, %d refused requests, want exit 1 and refusals\n%s", code, refused.Load(), out)
	}
	expectSwitches(t, d)

	netrc := filepath.Join(t.TempDir(), "netrc")
	host := strings.Split(strings.TrimPrefix(srv.URL, "http://"), ":")[0]
	if err := os.WriteFile(netrc, []byte("machine "+host+" login kiosk-1 password cache-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := run("netrc-file = " + netrc); code != 0 {
		t.Fatalf("with the netrc: exit %d\n%s", code, out)
	}
	expectSwitches(t, d, "switch "+f.a)
	testenv.Cmd(t, "nix-store", "--check-validity", f.a)
}
