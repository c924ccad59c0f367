package bucket

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Options tune Open.
type Options struct {
	// Create makes a file:// bucket's directory if it is missing (init).
	Create bool
	// Credentials for s3://. Nil means the environment (AWS_ACCESS_KEY_ID /
	// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, then MINIO_ROOT_USER /
	// MINIO_ROOT_PASSWORD), else anonymous. The CLI passes the full AWS
	// chain here (package bucket/awscreds); the agent a static or file one.
	Credentials *credentials.Credentials
	// Transport for s3:// and the client for http(s)://; nil means default.
	Transport  http.RoundTripper
	HTTPClient *http.Client
}

// Open returns the Store a bucket URL names (DESIGN.md §7):
//
//	file:///abs/path
//	s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&region=R&scheme=http|https&profile=P
//	https://HOST/PREFIX  (read-only; http:// on a LAN and in tests)
func Open(raw string, opts Options) (Store, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrInvalidURL, redact(raw), err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("%w: %s: want file:///abs/path (three slashes)", ErrInvalidURL, raw)
		}
		if u.RawQuery != "" {
			return nil, fmt.Errorf("%w: %s: file:// takes no query", ErrInvalidURL, raw)
		}
		return openFile(u.Path, opts.Create)
	case "s3":
		cfg, err := ParseS3URL(raw)
		if err != nil {
			return nil, err
		}
		return openS3(cfg, opts.Credentials, opts.Transport)
	case "http", "https":
		return openHTTP(u, opts.HTTPClient)
	case "":
		if strings.HasPrefix(raw, "/") {
			return nil, fmt.Errorf("%w: %q: write a directory as file://%s", ErrInvalidURL, raw, raw)
		}
	}
	return nil, fmt.Errorf("%w: %q: scheme must be file://, s3://, https:// or http://", ErrInvalidURL, redact(raw))
}
