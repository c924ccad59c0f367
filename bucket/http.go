package bucket

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// httpStore reads a bucket over plain HTTP(S): a public bucket's website
// endpoint, any static web host, or a CDN. It is read-only; TLS is welcome
// but carries no trust, signatures do.
type httpStore struct {
	base   string // without trailing '/'
	client *http.Client
}

var _ Store = (*httpStore)(nil)

func openHTTP(u *url.URL, client *http.Client) (*httpStore, error) {
	if u.Host == "" {
		return nil, fmt.Errorf("%w: %s: no host", ErrInvalidURL, redact(u.String()))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: %s: query or fragment not allowed", ErrInvalidURL, redact(u.String()))
	}
	if client == nil {
		client = defaultClient()
	}
	return &httpStore{base: strings.TrimSuffix(u.String(), "/"), client: guardRedirects(client)}, nil
}

func (s *httpStore) String() string { return redact(s.base) }

func (s *httpStore) do(ctx context.Context, method, key, ifNoneMatch string) (*http.Response, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+"/"+key, nil)
	if err != nil {
		return nil, err
	}
	if ifNoneMatch != "" {
		req.Header.Set("If-None-Match", strconv.Quote(TrimETag(ifNoneMatch)))
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, transportError(strings.ToLower(method), key, s, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp, nil
	case http.StatusNotModified:
		err = ErrNotModified
	case http.StatusNotFound:
		err = ErrNotFound
	case http.StatusForbidden, http.StatusUnauthorized:
		err = ErrAccessDenied
	default:
		err = fmt.Errorf("%s: HTTP %s", s, resp.Status)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return nil, fmt.Errorf("%s %s: %w", strings.ToLower(method), key, err)
}

func (s *httpStore) Get(ctx context.Context, key string, opts GetOptions) (*Object, error) {
	resp, err := s.do(ctx, http.MethodGet, key, opts.IfNoneMatch)
	if err != nil {
		return nil, err
	}
	return readObject(key, resp, opts.Limit())
}

// readObject reads a successful GET's body (at most max bytes) and
// metadata, and closes the body.
func readObject(key string, resp *http.Response, max int64) (*Object, error) {
	defer resp.Body.Close()
	if resp.ContentLength > max {
		return nil, fmt.Errorf("get %s: %w: %d bytes, limit %d", key, ErrTooLarge, resp.ContentLength, max)
	}
	data, err := ReadLimited(resp.Body, max)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	info := responseInfo(key, resp)
	return &Object{Data: data, ETag: info.ETag, ContentType: resp.Header.Get("Content-Type"), ModTime: info.ModTime}, nil
}

// responseInfo is an object's metadata from a GET or HEAD response.
func responseInfo(key string, resp *http.Response) Info {
	mod, _ := http.ParseTime(resp.Header.Get("Last-Modified"))
	return Info{Key: key, Size: resp.ContentLength, ETag: TrimETag(resp.Header.Get("ETag")), ModTime: mod}
}

func (s *httpStore) Stat(ctx context.Context, key string) (Info, error) {
	resp, err := s.do(ctx, http.MethodHead, key, "")
	if err != nil {
		return Info{}, err
	}
	resp.Body.Close()
	return responseInfo(key, resp), nil
}

func (s *httpStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (string, error) {
	return "", fmt.Errorf("put %s: %w: %s (use s3:// or file:// to write)", key, ErrReadOnly, s)
}

func (s *httpStore) List(ctx context.Context, prefix string, fn func(Info) error) error {
	return s.ListAfter(ctx, prefix, "", fn)
}

func (s *httpStore) ListAfter(ctx context.Context, prefix, after string, fn func(Info) error) error {
	return fmt.Errorf("list %s: %w: %s cannot list objects (use s3:// or file://)", prefix, ErrUnsupported, s)
}

func (s *httpStore) Delete(ctx context.Context, key string) error {
	return fmt.Errorf("delete %s: %w: %s", key, ErrReadOnly, s)
}

// userAgent names nix-ota in bucket access logs, in few bytes: it is sent
// with every poll of every device.
const userAgent = "nix-ota"

// defaultClient is the HTTP client of the built-in backends. Objects are
// small JSON; asking for gzip would add a header to every poll and save
// nothing on a 304.
func defaultClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	return &http.Client{Timeout: 60 * time.Second, Transport: tr}
}
