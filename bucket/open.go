package bucket

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Options tune Open.
type Options struct {
	// Create makes a file:// bucket's directory if it is missing (init).
	Create bool
	// S3 opens s3:// URLs. Nil means the built-in client (Get, Put, Stat,
	// Delete: what a device needs); publisher tools pass bucket/s3store's
	// minio-go backend, which also lists and uploads large objects.
	S3 func(S3Config) (Store, error)
	// Credentials for the built-in s3:// client. Nil means EnvCredentials;
	// the agent passes FileCredentials.
	Credentials CredentialsFunc
	// HTTPClient for the built-in s3:// client and for http(s)://; nil
	// means a default client with a 60 s timeout. Either way the store
	// uses a copy that follows redirects only within the bucket's origin
	// (CheckRedirect).
	HTTPClient *http.Client
}

// Open returns the Store a bucket URL names (docs/design.md, Bucket URLs):
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
		if opts.S3 != nil {
			return opts.S3(cfg)
		}
		return openS3HTTP(cfg, opts.Credentials, opts.HTTPClient)
	case "http", "https":
		return openHTTP(u, opts.HTTPClient)
	case "":
		if strings.HasPrefix(raw, "/") {
			return nil, fmt.Errorf("%w: %q: write a directory as file://%s", ErrInvalidURL, raw, raw)
		}
	}
	return nil, fmt.Errorf("%w: %q: scheme must be file://, s3://, https:// or http://", ErrInvalidURL, redact(raw))
}
