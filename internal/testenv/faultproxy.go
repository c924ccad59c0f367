package testenv

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is what the FaultProxy does to a matching request.
type Fault int

const (
	Pass     Fault = iota
	Down           // the connection is dropped: a bucket that is gone
	Error500       // S3 answers 500 InternalError
	Slow           // every response is delayed by Delay
	Hang           // the request blocks until the next Set (or the client gives up), then fails with 503: it never reaches the server
)

// FaultProxy is an HTTP proxy on loopback in front of a real server (MinIO)
// that injects faults into the requests a rule selects. It keeps the Host
// header, so S3 signatures made for the proxy's address still verify.
type FaultProxy struct {
	URL     string // http://127.0.0.1:PORT
	Addr    string // 127.0.0.1:PORT
	Delay   time.Duration
	mu      sync.Mutex
	fault   Fault
	match   func(*http.Request) bool
	release chan struct{}
	// Hanging counts requests currently held by Hang.
	Hanging atomic.Int32
	// Hits counts requests that met the rule.
	Hits atomic.Int32
	srv  *http.Server
}

// StartFaultProxy proxies to target (host:port) until the test ends.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{Addr: l.Addr().String(), URL: "http://" + l.Addr().String(), release: make(chan struct{}), Delay: time.Second}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	orig := rp.Director
	rp.Director = func(r *http.Request) {
		host := r.Host
		orig(r)
		r.Host = host
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		fault, match, release := p.fault, p.match, p.release
		p.mu.Unlock()
		if fault != Pass && (match == nil || match(r)) {
			p.Hits.Add(1)
			switch fault {
			case Down:
				if hj, ok := w.(http.Hijacker); ok {
					if c, _, err := hj.Hijack(); err == nil {
						c.Close()
						return
					}
				}
				http.Error(w, "down", http.StatusBadGateway)
				return
			case Error500:
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusInternalServerError)
				w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected</Message></Error>`))
				return
			case Slow:
				time.Sleep(p.Delay)
			case Hang:
				p.Hanging.Add(1)
				select {
				case <-release:
				case <-r.Context().Done():
				case <-time.After(2 * time.Minute):
				}
				p.Hanging.Add(-1)
				// Never forwarded: its client has usually been killed, and
				// the proxy may not have seen the connection close yet. A
				// late PUT would change the bucket behind the test's back.
				http.Error(w, "held by the fault proxy, then dropped", http.StatusServiceUnavailable)
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go p.srv.Serve(l)
	t.Cleanup(func() {
		p.Set(Pass, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.srv.Shutdown(ctx)
	})
	return p
}

// Set applies fault to the requests match selects (nil: all), releasing
// any request held by an earlier Hang.
func (p *FaultProxy) Set(f Fault, match func(*http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.release)
	p.release = make(chan struct{})
	p.fault, p.match = f, match
	p.Hits.Store(0)
}

// PathHas selects requests whose path contains s (and, if method is not
// "", use that method).
func PathHas(method, s string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return (method == "" || r.Method == method) && strings.Contains(r.URL.Path, s)
	}
}

// WaitHanging waits until at least one request is held.
func (p *FaultProxy) WaitHanging(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for p.Hanging.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no request reached the hang")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
