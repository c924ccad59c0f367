package bucket

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/aws/smithy-go/aws-http-auth/credentials"
	"github.com/aws/smithy-go/aws-http-auth/sigv4"
	v4 "github.com/aws/smithy-go/aws-http-auth/v4"
)

// s3HTTPStore is the built-in s3:// client: S3's REST API over net/http,
// signed with SigV4 by AWS's standalone signer (smithy-go's aws-http-auth,
// not the SDK). It does what a device needs — conditional GET, PUT
// (including create-only and put-if-match), HEAD, DELETE — and no listing
// or multipart uploads; publisher tools open buckets through package
// bucket/s3store (minio-go) for those. Keeping minio-go out of the agent
// takes its start-up work out of every timer-driven poll.
//
// Requests are path-style (https://ENDPOINT/BUCKET/KEY), which S3, MinIO
// and R2 all accept, with the region from the URL: no location lookup, so
// an idle poll is one request.
type s3HTTPStore struct {
	cfg    S3Config
	base   string // scheme://endpoint
	creds  CredentialsFunc
	client *http.Client
	signer *sigv4.Signer
}

var _ Store = (*s3HTTPStore)(nil)

func openS3HTTP(cfg S3Config, creds CredentialsFunc, client *http.Client) (*s3HTTPStore, error) {
	scheme := "https"
	if !cfg.Secure {
		scheme = "http"
	}
	if cfg.Endpoint == "" || strings.ContainsAny(cfg.Endpoint, "/?#@ ") {
		return nil, fmt.Errorf("%w: s3://%s: bad endpoint %q", ErrInvalidURL, cfg.Bucket, cfg.Endpoint)
	}
	if creds == nil {
		creds = EnvCredentials
	}
	if client == nil {
		client = defaultClient()
	}
	signer := sigv4.New(func(o *v4.SignerOptions) {
		o.DisableDoublePathEscape = true // S3 signs the path escaped once
		o.AddPayloadHashHeader = true    // S3 requires X-Amz-Content-Sha256
	})
	return &s3HTTPStore{cfg: cfg, base: scheme + "://" + cfg.Endpoint, creds: creds, client: guardRedirects(client), signer: signer}, nil
}

func (s *s3HTTPStore) String() string {
	p := ""
	if s.cfg.Prefix != "" {
		p = "/" + s.cfg.Prefix
	}
	return fmt.Sprintf("s3://%s%s?endpoint=%s&scheme=%s&region=%s", s.cfg.Bucket, p, s.cfg.Endpoint, strings.SplitN(s.base, ":", 2)[0], s.cfg.Region)
}

// objectURL is the path-style URL of key. The path is escaped the way
// SigV4 canonicalises it for S3 (everything but unreserved characters and
// '/'), so what is signed is exactly what is sent.
func (s *s3HTTPStore) objectURL(key string) (*url.URL, error) {
	u, err := url.Parse(s.base)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidURL, s, err)
	}
	full := key
	if s.cfg.Prefix != "" {
		full = s.cfg.Prefix + "/" + key
	}
	u.Path = "/" + s.cfg.Bucket + "/" + full
	u.RawPath = s3EscapePath(u.Path)
	return u, nil
}

func s3EscapePath(p string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-._~/", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// do sends one signed request for key and returns a 2xx response; any
// other status becomes this package's error for op.
func (s *s3HTTPStore) do(ctx context.Context, op, method, key string, body []byte, hdr http.Header) (*http.Response, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	u, err := s.objectURL(key)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, key, err)
	}
	req.URL = u // keep RawPath exactly as escaped above
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", userAgent)
	if body != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		req.ContentLength = int64(len(body))
	}
	c, err := s.creds(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, key, err)
	}
	if !c.Anonymous() {
		// A request without a body is signed with S3's UNSIGNED-PAYLOAD
		// marker (16 bytes on the wire rather than a 64-byte hash of
		// nothing; it keeps a signed poll under 1 KB). A body is always
		// signed by its hash.
		hash := v4.UnsignedPayload()
		if body != nil {
			sum := sha256.Sum256(body)
			hash = sum[:]
		}
		err := s.signer.SignRequest(&sigv4.SignRequestInput{
			Request:     req,
			PayloadHash: hash,
			Credentials: credentials.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken},
			Service:     "s3",
			Region:      s.cfg.Region,
		})
		if err != nil {
			return nil, fmt.Errorf("%s %s: sign: %w", op, key, err)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, transportError(op, key, s, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, fmt.Errorf("%s %s: %w", op, key, s.statusError(resp))
}

// s3Error is the XML body S3 sends with a failed request.
type s3Error struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

// statusError maps an S3 error response onto this package's errors.
func (s *s3HTTPStore) statusError(resp *http.Response) error {
	var e s3Error
	if resp.Request.Method != http.MethodHead && resp.StatusCode != http.StatusNotModified {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = xml.Unmarshal(body, &e) // a missing or odd body leaves Code empty
	}
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return ErrNotModified
	case e.Code == "NoSuchBucket":
		return fmt.Errorf("%w: bucket %q does not exist at %s", ErrUnreachable, s.cfg.Bucket, s.cfg.Endpoint)
	case resp.StatusCode == http.StatusNotFound:
		return ErrNotFound
	case e.Code == "AuthorizationHeaderMalformed" || e.Code == "PermanentRedirect":
		// The usual cause is a region that is not the bucket's.
		return fmt.Errorf("%w: %s: %s (is region=%s right? set &region= in the bucket URL)", ErrAccessDenied, oneLine(e.Code), oneLine(e.Message), s.cfg.Region)
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		if e.Code == "" {
			e.Code = resp.Status
		}
		return fmt.Errorf("%w: %s", ErrAccessDenied, oneLine(e.Code))
	case resp.StatusCode == http.StatusPreconditionFailed, e.Code == "ConditionalRequestConflict":
		return ErrChanged
	}
	msg := resp.Status
	if e.Code != "" {
		msg += ": " + oneLine(e.Code)
	}
	return fmt.Errorf("%s: %s", s, msg)
}

// oneLine keeps server-supplied text from breaking a one-line error.
func oneLine(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func (s *s3HTTPStore) Get(ctx context.Context, key string, opts GetOptions) (*Object, error) {
	hdr := http.Header{}
	if opts.IfNoneMatch != "" {
		hdr.Set("If-None-Match", strconv.Quote(TrimETag(opts.IfNoneMatch)))
	}
	resp, err := s.do(ctx, "get", http.MethodGet, key, nil, hdr)
	if err != nil {
		return nil, err
	}
	return readObject(key, resp, opts.Limit())
}

// maxS3HTTPPut bounds a single PUT from this client: status blobs and
// manifests are kilobytes; large objects go through bucket/s3store.
const maxS3HTTPPut = 16 << 20

func (s *s3HTTPStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (string, error) {
	if size > maxS3HTTPPut {
		return "", fmt.Errorf("put %s: %w: %d bytes; this client writes at most %d (publish with the nix-ota CLI)", key, ErrUnsupported, size, maxS3HTTPPut)
	}
	body, err := ReadLimited(r, maxS3HTTPPut)
	if err != nil {
		return "", fmt.Errorf("put %s: %w", key, err)
	}
	if size >= 0 && int64(len(body)) != size {
		return "", fmt.Errorf("put %s: body is %d bytes, expected %d", key, len(body), size)
	}
	hdr := http.Header{}
	if opts.ContentType != "" {
		hdr.Set("Content-Type", opts.ContentType)
	}
	if opts.CacheControl != "" {
		hdr.Set("Cache-Control", opts.CacheControl)
	}
	if opts.CreateOnly {
		hdr.Set("If-None-Match", "*")
	} else if opts.IfMatch != "" {
		hdr.Set("If-Match", strconv.Quote(TrimETag(opts.IfMatch)))
	}
	resp, err := s.do(ctx, "put", http.MethodPut, key, body, hdr)
	if err != nil {
		if opts.CreateOnly && errors.Is(err, ErrChanged) {
			return "", fmt.Errorf("put %s: %w", key, ErrExists)
		}
		return "", err
	}
	resp.Body.Close()
	return TrimETag(resp.Header.Get("ETag")), nil
}

func (s *s3HTTPStore) Stat(ctx context.Context, key string) (Info, error) {
	resp, err := s.do(ctx, "stat", http.MethodHead, key, nil, nil)
	if err != nil {
		return Info{}, err
	}
	resp.Body.Close()
	return responseInfo(key, resp), nil
}

func (s *s3HTTPStore) List(ctx context.Context, prefix string, fn func(Info) error) error {
	return s.ListAfter(ctx, prefix, "", fn)
}

func (s *s3HTTPStore) ListAfter(ctx context.Context, prefix, after string, fn func(Info) error) error {
	return fmt.Errorf("list %s: %w: the built-in s3:// client does not list (publisher tools use bucket/s3store)", prefix, ErrUnsupported)
}

func (s *s3HTTPStore) Delete(ctx context.Context, key string) error {
	resp, err := s.do(ctx, "delete", http.MethodDelete, key, nil, nil)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	resp.Body.Close()
	return nil
}
