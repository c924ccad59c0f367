package bucket_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
)

// recorder is an HTTP server that answers 200 to everything and keeps the
// headers of every request it gets.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []http.Header
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, req.Header.Clone())
		r.mu.Unlock()
		w.Header().Set("ETag", `"e"`)
		fmt.Fprint(w, "stolen")
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) got() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs
}

// redirector is a bucket endpoint on 127.0.0.1 that redirects paths ending
// in /moved.json to the same path on itself with /here.json, everything
// else to the same path on target; it answers the redirected same-origin
// requests with 200 and keeps their headers.
type redirector struct {
	*httptest.Server
	target string
	mu     sync.Mutex
	here   []http.Header
}

func newRedirector(t *testing.T, target string) *redirector {
	r := &redirector{target: target}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case strings.HasSuffix(req.URL.Path, "/here.json"):
			r.mu.Lock()
			r.here = append(r.here, req.Header.Clone())
			r.mu.Unlock()
			w.Header().Set("ETag", `"e"`)
			fmt.Fprint(w, "here")
		case strings.HasSuffix(req.URL.Path, "/moved.json"):
			http.Redirect(w, req, strings.TrimSuffix(req.URL.Path, "moved.json")+"here.json", http.StatusTemporaryRedirect)
		default:
			http.Redirect(w, req, r.target+req.URL.Path, http.StatusTemporaryRedirect)
		}
	}))
	t.Cleanup(r.Close)
	return r
}

// redirectCases are the other origins a redirect may point at: another
// port (where Go's client would still send Authorization) and another host
// (where it would still send X-Amz-Security-Token).
func redirectCases(t *testing.T) map[string]*recorder {
	return map[string]*recorder{"port": newRecorder(t), "host": newRecorder(t)}
}

func targetURL(name string, r *recorder) string {
	if name == "host" {
		return strings.Replace(r.URL, "127.0.0.1", "localhost", 1)
	}
	return r.URL
}

// checkRefused asserts that err is a refused redirect naming both URLs and
// that the other origin got no request at all, so no credential.
func checkRefused(t *testing.T, what string, err error, from, to string, other *recorder) {
	t.Helper()
	wantErr(t, what, err, bucket.ErrRedirect, from, to)
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("%s: error spans lines: %q", what, err)
	}
	if n := len(other.got()); n != 0 {
		t.Fatalf("%s: the other origin got %d requests (headers %v)", what, n, other.got())
	}
	t.Logf("%s: %v", what, err)
}

func TestRedirectBuiltinS3(t *testing.T) {
	for name, other := range redirectCases(t) {
		t.Run(name, func(t *testing.T) {
			to := targetURL(name, other)
			origin := newRedirector(t, to)
			endpoint := strings.TrimPrefix(origin.URL, "http://")
			s, err := bucket.Open("s3://bkt?endpoint="+endpoint+"&scheme=http&region=us-east-1",
				bucket.Options{Credentials: bucket.StaticCredentials("AKIDEXAMPLE", "secret", "session-token")})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Get(ctx, "channels/prod.json", bucket.GetOptions{})
			checkRefused(t, "get", err, origin.URL+"/bkt/channels/prod.json", to+"/bkt/channels/prod.json", other)
			_, err = bucket.PutBytes(ctx, s, "devices/d1/status.json", []byte("{}"), bucket.PutOptions{})
			checkRefused(t, "put", err, origin.URL+"/bkt/devices/d1/status.json", to+"/bkt/devices/d1/status.json", other)
			_, err = s.Stat(ctx, "channels/prod.json")
			checkRefused(t, "stat", err, origin.URL, to, other)

			// A redirect within the origin is followed, credentials and all.
			o, err := s.Get(ctx, "channels/moved.json", bucket.GetOptions{})
			if err != nil || string(o.Data) != "here" {
				t.Fatalf("same-origin redirect: %v", err)
			}
			if h := origin.here[0]; h.Get("Authorization") == "" || h.Get("X-Amz-Security-Token") != "session-token" {
				t.Fatalf("same-origin redirect lost its credentials: %v", h)
			}
		})
	}
}

func TestRedirectHTTP(t *testing.T) {
	for name, other := range redirectCases(t) {
		t.Run(name, func(t *testing.T) {
			to := targetURL(name, other)
			origin := newRedirector(t, to)
			// The default client, and one a caller passes in (the CLI's
			// doctor does), get the same policy.
			for _, client := range []*http.Client{nil, {}} {
				s, err := bucket.Open(origin.URL+"/b", bucket.Options{HTTPClient: client})
				if err != nil {
					t.Fatal(err)
				}
				_, err = s.Get(ctx, "channels/prod.json", bucket.GetOptions{})
				checkRefused(t, "get", err, origin.URL+"/b/channels/prod.json", to+"/b/channels/prod.json", other)
				_, err = s.Stat(ctx, "channels/prod.json")
				checkRefused(t, "stat", err, origin.URL, to, other)
				if o, err := s.Get(ctx, "channels/moved.json", bucket.GetOptions{}); err != nil || string(o.Data) != "here" {
					t.Fatalf("same-origin redirect: %v", err)
				}
			}
		})
	}
}

// TestRedirectMinioGo: the publisher's S3 client (bucket/s3store) sends no
// request to another origin either, and says why.
func TestRedirectMinioGo(t *testing.T) {
	for name, other := range redirectCases(t) {
		t.Run(name, func(t *testing.T) {
			to := targetURL(name, other)
			origin := newRedirector(t, to)
			endpoint := strings.TrimPrefix(origin.URL, "http://")
			creds := credentials.NewStaticV4("AKIDEXAMPLE", "secret", "session-token")
			s, err := s3store.Open("s3://bkt?endpoint="+endpoint+"&scheme=http&region=us-east-1", bucket.Options{}, creds)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Get(ctx, "channels/prod.json", bucket.GetOptions{})
			checkRefused(t, "get", err, origin.URL+"/bkt/channels/prod.json", to+"/bkt/channels/prod.json", other)
			_, err = bucket.PutBytes(ctx, s, "devices/d1/status.json", []byte("{}"), bucket.PutOptions{})
			checkRefused(t, "put", err, origin.URL+"/bkt/devices/d1/status.json", to+"/bkt/devices/d1/status.json", other)
			_, err = s.Stat(ctx, "channels/prod.json")
			checkRefused(t, "stat", err, origin.URL, to, other)
			if !errors.Is(err, bucket.ErrUnreachable) {
				t.Fatalf("stat: %v, want also ErrUnreachable", err)
			}
		})
	}
}

// TestCheckRedirect: which redirect targets share the bucket's origin.
func TestCheckRedirect(t *testing.T) {
	for _, c := range []struct {
		from, loc string
		ok        bool
	}{
		{"http://minio.lan:9000/bkt/k", "/bkt/other", true},
		{"http://minio.lan:9000/bkt/k", "other?x=1", true},
		{"http://minio.lan:9000/bkt/k", "HTTP://MINIO.lan:9000/x", true},
		{"http://minio.lan/bkt/k", "http://minio.lan:80/x", true},
		{"https://s3.example/bkt/k", "https://s3.example:443/x", true},
		{"http://minio.lan:9000/bkt/k", "https://minio.lan:9000/x", false},
		{"https://minio.lan/bkt/k", "http://minio.lan/x", false},
		{"http://minio.lan:9000/bkt/k", "http://minio.lan:9001/x", false},
		{"http://minio.lan:9000/bkt/k", "http://minio.lan/x", false},
		{"http://minio.lan:9000/bkt/k", "http://evil.example:9000/x", false},
		{"http://minio.lan:9000/bkt/k", "//evil.example:9000/x", false},
		{"http://minio.lan:9000/bkt/k", "http://minio.lan:9000@evil.example:9000/x", false},
		{"http://minio.lan:9000/bkt/k", "http://minio.lan.:9000/x", false},
		{"http://127.0.0.1:9000/bkt/k", "http://[::1]:9000/x", false},
		{"http://127.0.0.1:9000/bkt/k", "http://localhost:9000/x", false},
	} {
		from, _ := url.Parse(c.from)
		to, err := from.Parse(c.loc)
		if err != nil {
			t.Fatalf("%s: %v", c.loc, err)
		}
		err = bucket.CheckRedirect(&http.Request{URL: to}, []*http.Request{{URL: from}})
		if (err == nil) != c.ok {
			t.Errorf("%s -> %s: %v, want allowed=%v", c.from, c.loc, err, c.ok)
		}
		if err != nil && (!errors.Is(err, bucket.ErrRedirect) || !strings.Contains(err.Error(), c.from) || !strings.Contains(err.Error(), to.Redacted())) {
			t.Errorf("%s -> %s: error %q should be ErrRedirect and name both URLs", c.from, c.loc, err)
		}
	}
	// A chain is judged against its first request: A -> A' -> B is refused.
	a, _ := url.Parse("http://minio.lan:9000/bkt/k")
	a2, _ := url.Parse("http://minio.lan:9000/bkt/k2")
	b, _ := url.Parse("http://evil.example/x")
	if err := bucket.CheckRedirect(&http.Request{URL: b}, []*http.Request{{URL: a}, {URL: a2}}); !errors.Is(err, bucket.ErrRedirect) || !strings.Contains(err.Error(), a2.String()) {
		t.Errorf("second hop to another origin: %v", err)
	}
}

// staticRedirect answers every request with a 307 to loc.
type staticRedirect string

func (loc staticRedirect) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusTemporaryRedirect, Header: http.Header{"Location": {string(loc)}}, Body: http.NoBody, Request: req}, nil
}

// FuzzCheckRedirect: for any Location a server sends, a redirect is
// allowed exactly when the target's scheme, host (in any case) and port
// are the bucket's; RedirectGuard (minio-go's transport) decides the same;
// a refusal is one line.
func FuzzCheckRedirect(f *testing.F) {
	for _, s := range []string{"/x", "http://minio.lan:9000/y", "https://minio.lan:9000/", "//evil/", "http://minio.lan:9000@evil/", "HTTP://Minio.LAN:9000", "http://minio.lan:09000/", "http://[::1]:9000/", "\n", "http://minio.lan:9000/\r\nX: y"} {
		f.Add(s)
	}
	from, _ := url.Parse("http://minio.lan:9000/bkt/k")
	f.Fuzz(func(t *testing.T, loc string) {
		to, err := from.Parse(loc)
		if err != nil {
			return // Go's client refuses a Location it cannot parse
		}
		err = bucket.CheckRedirect(&http.Request{URL: to}, []*http.Request{{URL: from}})
		same := to.Scheme == "http" && strings.EqualFold(to.Hostname(), "minio.lan") && (to.Port() == "9000")
		if (err == nil) != same {
			t.Fatalf("%q (%s): allowed=%v, want %v", loc, to, err == nil, same)
		}
		if err != nil && (!errors.Is(err, bucket.ErrRedirect) || strings.ContainsAny(err.Error(), "\r\n")) {
			t.Fatalf("%q: bad error %q", loc, err)
		}
		if loc == "" {
			return // no Location: nothing to follow
		}
		resp, gerr := bucket.RedirectGuard{Next: staticRedirect(loc)}.RoundTrip(&http.Request{URL: from})
		if (gerr == nil) != same || (gerr == nil && resp.StatusCode != http.StatusTemporaryRedirect) {
			t.Fatalf("%q: RedirectGuard says %v, CheckRedirect %v", loc, gerr, err)
		}
	})
}
