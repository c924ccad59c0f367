package bucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
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
	if err := s3utils.CheckValidBucketName(c.Bucket); err != nil {
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

// s3Store talks to S3, MinIO, R2 or any S3-compatible service with
// minio-go. It sets the region explicitly so no request is spent on a
// bucket-location lookup: an idle poll is one conditional GET.
type s3Store struct {
	core   minio.Core
	cfg    S3Config
	scheme string
}

var _ Store = (*s3Store)(nil)

func openS3(cfg S3Config, creds *credentials.Credentials, transport http.RoundTripper) (*s3Store, error) {
	if creds == nil {
		creds = credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.EnvMinio{}})
	}
	cl, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:      creds,
		Secure:     cfg.Secure,
		Region:     cfg.Region,
		MaxRetries: 3,
		Transport:  transport,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: s3://%s: %v", ErrInvalidURL, cfg.Bucket, err)
	}
	scheme := "https"
	if !cfg.Secure {
		scheme = "http"
	}
	return &s3Store{core: minio.Core{Client: cl}, cfg: cfg, scheme: scheme}, nil
}

func (s *s3Store) String() string {
	p := ""
	if s.cfg.Prefix != "" {
		p = "/" + s.cfg.Prefix
	}
	return fmt.Sprintf("s3://%s%s?endpoint=%s&scheme=%s", s.cfg.Bucket, p, s.cfg.Endpoint, s.scheme)
}

func (s *s3Store) key(k string) string {
	if s.cfg.Prefix == "" {
		return k
	}
	return s.cfg.Prefix + "/" + k
}

// mapErr turns minio-go's errors into this package's.
func (s *s3Store) mapErr(op, key string, err error) error {
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w: %s: %v", op, key, ErrUnreachable, s, err)
	}
	er := minio.ToErrorResponse(err)
	switch {
	case er.StatusCode == http.StatusNotModified:
		return fmt.Errorf("%s %s: %w", op, key, ErrNotModified)
	case er.Code == "NoSuchKey" || (er.StatusCode == http.StatusNotFound && er.Code != "NoSuchBucket"):
		return fmt.Errorf("%s %s: %w", op, key, ErrNotFound)
	case er.Code == "NoSuchBucket":
		return fmt.Errorf("%s %s: %w: bucket %q does not exist at %s", op, key, ErrUnreachable, s.cfg.Bucket, s.cfg.Endpoint)
	case er.StatusCode == http.StatusForbidden || er.Code == "AccessDenied" || er.Code == "InvalidAccessKeyId" || er.Code == "SignatureDoesNotMatch":
		return fmt.Errorf("%s %s: %w: %s", op, key, ErrAccessDenied, er.Code)
	case er.StatusCode == http.StatusPreconditionFailed || er.Code == "PreconditionFailed":
		return fmt.Errorf("%s %s: %w", op, key, ErrChanged)
	}
	return fmt.Errorf("%s %s: %s: %w", op, key, s, err)
}

func (s *s3Store) Get(ctx context.Context, key string, opts GetOptions) (*Object, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	var o minio.GetObjectOptions
	if opts.IfNoneMatch != "" {
		if err := o.SetMatchETagExcept(trimETag(opts.IfNoneMatch)); err != nil {
			return nil, err
		}
	}
	body, info, _, err := s.core.GetObject(ctx, s.cfg.Bucket, s.key(key), o)
	if err != nil {
		return nil, s.mapErr("get", key, err)
	}
	defer body.Close()
	max := maxSize(opts)
	if info.Size > max {
		return nil, fmt.Errorf("get %s: %w: %d bytes, limit %d", key, ErrTooLarge, info.Size, max)
	}
	data, err := readLimited(body, max)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return &Object{Data: data, ETag: trimETag(info.ETag), ContentType: info.ContentType, ModTime: info.LastModified}, nil
}

func (s *s3Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	o := minio.PutObjectOptions{ContentType: opts.ContentType, CacheControl: opts.CacheControl}
	if opts.CreateOnly {
		o.SetMatchETagExcept("*")
	} else if opts.IfMatch != "" {
		o.SetMatchETag(trimETag(opts.IfMatch))
	}
	info, err := s.core.Client.PutObject(ctx, s.cfg.Bucket, s.key(key), r, size, o)
	if err != nil {
		err = s.mapErr("put", key, err)
		if opts.CreateOnly && errors.Is(err, ErrChanged) {
			return "", fmt.Errorf("put %s: %w", key, ErrExists)
		}
		return "", err
	}
	return trimETag(info.ETag), nil
}

func (s *s3Store) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	info, err := s.core.Client.StatObject(ctx, s.cfg.Bucket, s.key(key), minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.mapErr("stat", key, err)
	}
	return Info{Key: key, Size: info.Size, ETag: trimETag(info.ETag), ModTime: info.LastModified}, nil
}

func (s *s3Store) List(ctx context.Context, prefix string, fn func(Info) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine on an early return
	strip := ""
	if s.cfg.Prefix != "" {
		strip = s.cfg.Prefix + "/"
	}
	for obj := range s.core.Client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: strip + prefix, Recursive: true}) {
		if obj.Err != nil {
			return s.mapErr("list", prefix, obj.Err)
		}
		if err := fn(Info{Key: strings.TrimPrefix(obj.Key, strip), Size: obj.Size, ETag: trimETag(obj.ETag), ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	return nil
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := s.core.Client.RemoveObject(ctx, s.cfg.Bucket, s.key(key), minio.RemoveObjectOptions{}); err != nil {
		err = s.mapErr("delete", key, err)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
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
