package bucket

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Redirects. Whoever answers for a bucket may redirect a request, and Go's
// client resends it: with X-Amz-Security-Token (a header Go does not know
// to be secret) to any host, and with Authorization to any port of the same
// host. So the clients of this package follow a redirect only within the
// request's origin (scheme, host and port) and refuse anything else,
// naming both URLs.

// guardRedirects returns a copy of c that refuses redirects to another
// origin, then applies c's own redirect policy, if any.
func guardRedirects(c *http.Client) *http.Client {
	guarded := *c
	next := c.CheckRedirect
	guarded.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := CheckRedirect(req, via); err != nil {
			return err
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &guarded
}

// CheckRedirect is an http.Client CheckRedirect that refuses, with
// ErrRedirect, a redirect whose origin is not the first request's.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) == 0 || origin(req.URL) == origin(via[0].URL) {
		return nil
	}
	return redirectError(via[len(via)-1].URL, req.URL)
}

func redirectError(from, to *url.URL) error {
	return fmt.Errorf("%w: from %s to %s: a bucket's requests and credentials go to its own scheme, host and port only (if the bucket moved, change its URL)",
		ErrRedirect, oneLine(redact(from.String())), oneLine(redact(to.String())))
}

// origin is a URL's scheme, host and port, the port made explicit.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// RedirectGuard is an http.RoundTripper for clients that do not follow
// redirects themselves (minio-go): it turns a redirect to another origin
// into an ErrRedirect error naming both URLs, so the caller sees why
// instead of a bare 3xx status.
type RedirectGuard struct{ Next http.RoundTripper }

// RoundTrip sends req with Next and checks a redirect's Location.
func (g RedirectGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.Next.RoundTrip(req)
	if err != nil || resp.StatusCode < 300 || resp.StatusCode > 399 {
		return resp, err
	}
	loc, err := req.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" || origin(loc) == origin(req.URL) {
		return resp, nil
	}
	resp.Body.Close()
	return nil, redirectError(req.URL, loc)
}

// transportError is the error of a request the client could not complete:
// the bucket is unreachable, and a refused redirect says so in one line
// and stays usable with errors.Is.
func transportError(op, key string, s Store, err error) error {
	if !errors.Is(err, ErrRedirect) {
		return fmt.Errorf("%s %s: %w: %s: %v", op, key, ErrUnreachable, s, err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("%s %s: %w: %s: %w", op, key, ErrUnreachable, s, err)
}
