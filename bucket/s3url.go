package bucket

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// S3Config is a parsed s3:// URL. The query parameters are the ones Nix uses
// for its S3 binary caches, so one URL style serves both:
//
//	s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&region=R&scheme=http|https&profile=P
type S3Config struct {
	Bucket   string
	Prefix   string // without leading or trailing '/'
	Endpoint string // host[:port]
	Region   string
	Secure   bool
	Profile  string // an AWS shared-config profile; used by the CLI's credential chain
}

// nixOnlyParams are s3:// parameters that Nix understands for binary
// caches and nix-ota has no use for; they are accepted so one URL can serve
// both, and ignored.
var nixOnlyParams = map[string]bool{
	"secret-key": true, "compression": true, "parallel-compression": true,
	"multipart-upload": true, "buffer-size": true, "write-nar-listing": true,
	"narinfo-compression": true, "ls-compression": true, "log-compression": true,
	"index-debug-info": true, "want-mass-query": true, "priority": true,
}

// ParseS3URL parses an s3:// bucket URL.
func ParseS3URL(raw string) (S3Config, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" {
		return S3Config{}, fmt.Errorf("%w: %q: want s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&region=R&scheme=http|https", ErrInvalidURL, redact(raw))
	}
	if u.User != nil {
		return S3Config{}, fmt.Errorf("%w: %s: credentials do not belong in the URL; use the AWS environment, a profile or a credentials file", ErrInvalidURL, redact(raw))
	}
	c := S3Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Endpoint: "s3.amazonaws.com", Region: "us-east-1", Secure: true}
	if c.Bucket == "" {
		return S3Config{}, fmt.Errorf("%w: %s: no bucket name", ErrInvalidURL, raw)
	}
	if err := checkBucketName(c.Bucket); err != nil {
		return S3Config{}, fmt.Errorf("%w: %s: %v", ErrInvalidURL, raw, err)
	}
	if c.Prefix != "" {
		if err := ValidateKey(c.Prefix); err != nil {
			return S3Config{}, fmt.Errorf("%w: %s: bad prefix", ErrInvalidURL, raw)
		}
	}
	for k, vs := range u.Query() {
		v := vs[len(vs)-1]
		switch k {
		case "endpoint":
			if strings.HasPrefix(v, "http://") {
				c.Secure = false
			}
			v = strings.TrimPrefix(strings.TrimPrefix(v, "https://"), "http://")
			c.Endpoint = strings.TrimSuffix(v, "/")
		case "region":
			c.Region = v
		case "scheme":
			switch v {
			case "http":
				c.Secure = false
			case "https":
				c.Secure = true
			default:
				return S3Config{}, fmt.Errorf("%w: %s: scheme must be http or https", ErrInvalidURL, raw)
			}
		case "profile":
			c.Profile = v
		default:
			if !nixOnlyParams[k] {
				return S3Config{}, fmt.Errorf("%w: %s: unknown parameter %q (known: endpoint, region, scheme, profile)", ErrInvalidURL, raw, k)
			}
		}
	}
	return c, nil
}

// checkBucketName applies S3's bucket naming rules (as MinIO accepts
// them): 3 to 63 characters, letters, digits, '.', '-', '_' and ':',
// starting and ending with a letter or digit, no "..", ".-" or "-.", and
// not an IP address.
func checkBucketName(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return fmt.Errorf("bucket name %q: must be 3 to 63 characters", name)
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !alnum(c) && (i == 0 || i == len(name)-1 || !strings.ContainsRune(".-_:", rune(c))) {
			return fmt.Errorf("bucket name %q: character %q not allowed there", name, c)
		}
	}
	for _, bad := range []string{"..", ".-", "-."} {
		if strings.Contains(name, bad) {
			return fmt.Errorf("bucket name %q: contains %q", name, bad)
		}
	}
	if net.ParseIP(name) != nil {
		return fmt.Errorf("bucket name %q: looks like an IP address", name)
	}
	return nil
}

// redact drops a password from a URL before it goes into a message.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
