// Package benchutil holds what the measurement programs in bench/ share.
package benchutil

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Proxy is a loopback TCP proxy that counts bytes and HTTP requests, so a
// benchmark measures what really crosses the wire.
type Proxy struct {
	l        net.Listener
	Up, Down atomic.Int64
	Requests atomic.Int64
}

// StartProxy listens on a loopback port and forwards to target.
func StartProxy(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	return p, nil
}

// countingWriter counts bytes and the request lines among them.
type countingWriter struct {
	w       io.Writer
	n       *atomic.Int64
	reqs    *atomic.Int64
	scanReq bool
}

func (cw countingWriter) Write(b []byte) (int, error) {
	cw.n.Add(int64(len(b)))
	if cw.scanReq {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := sc.Text()
			for _, m := range []string{"GET ", "PUT ", "HEAD ", "POST ", "DELETE "} {
				if strings.HasPrefix(line, m) && strings.HasSuffix(line, "HTTP/1.1") {
					cw.reqs.Add(1)
				}
			}
		}
	}
	return cw.w.Write(b)
}

func (p *Proxy) serve(c net.Conn, target string) {
	defer c.Close()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		io.Copy(countingWriter{u, &p.Up, &p.Requests, true}, c)
		u.(*net.TCPConn).CloseWrite()
		wg.Done()
	}()
	go func() {
		io.Copy(countingWriter{c, &p.Down, nil, false}, u)
		c.(*net.TCPConn).CloseWrite()
		wg.Done()
	}()
	wg.Wait()
}

// Reset zeroes the counters.
func (p *Proxy) Reset() { p.Up.Store(0); p.Down.Store(0); p.Requests.Store(0) }

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// Close stops accepting connections.
func (p *Proxy) Close() error { return p.l.Close() }

// MinMedMax returns the minimum, median and maximum of xs.
func MinMedMax[T int64 | float64](xs []T) (T, T, T) {
	s := append([]T(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[0], s[len(s)/2], s[len(s)-1]
}
