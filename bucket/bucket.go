// Package bucket is nix-ota's only storage seam: one small object-store
// interface with a directory backend (file://), an S3 backend (s3://, via
// minio-go) and a read-only HTTP backend (https://, http://).
//
// Threat model: a bucket is untrusted transport. Nothing read from a Store
// is trusted until the manifest package has verified it; this package only
// promises bounded reads (every Get has a size limit) and the write
// semantics publishing relies on: create-only puts for immutable history and
// compare-and-swap (put-if-match) for the channel pointer, so two racing
// publishers cannot lose or duplicate a revision. It also keeps a bucket
// from turning the reader against its own machine or credentials: a
// file:// bucket (which anyone who can write the directory or the USB stick
// controls) is reached through no symlink and yields only regular files,
// without blocking (beneath.go); HTTP clients follow redirects only within
// the bucket's scheme, host and port (redirect.go).
//
// Every backend passes the same conformance suite (bucket_test.go); the S3
// one runs against a real MinIO server.
package bucket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Errors, usable with errors.Is.
var (
	ErrNotFound     = errors.New("not found")
	ErrNotModified  = errors.New("not modified")
	ErrExists       = errors.New("already exists")
	ErrChanged      = errors.New("changed since read")
	ErrTooLarge     = errors.New("object too large")
	ErrReadOnly     = errors.New("read-only bucket")
	ErrUnsupported  = errors.New("not supported by this bucket type")
	ErrInvalidKey   = errors.New("invalid object key")
	ErrInvalidURL   = errors.New("invalid bucket URL")
	ErrUnreachable  = errors.New("bucket unreachable")
	ErrAccessDenied = errors.New("access denied")
	// ErrSymlink: a file:// bucket holds a symlink where a key's path
	// goes; nothing below a bucket's root is reached through one.
	ErrSymlink = errors.New("symlink refused")
	// ErrNotRegular: a file:// bucket holds a FIFO, device, socket or
	// directory where an object should be.
	ErrNotRegular = errors.New("not a regular file")
	// ErrRedirect: a server redirected a request to another scheme, host
	// or port, where the bucket's credentials must not go.
	ErrRedirect = errors.New("redirect to another origin refused")
)

// Store is an object store holding nix-ota's layout (docs/design.md,
// Bucket layout). Keys are relative, '/'-separated, and checked by
// ValidateKey before any I/O.
// ETags are opaque strings without quotes; an ETag changes when the content
// does.
type Store interface {
	// Get reads an object of at most opts.MaxSize bytes (ErrTooLarge past
	// it). With opts.IfNoneMatch set to the current ETag it returns
	// ErrNotModified and no body: the one-request idle poll.
	Get(ctx context.Context, key string, opts GetOptions) (*Object, error)
	// Put writes an object. With opts.CreateOnly it fails with ErrExists if
	// the key exists; with opts.IfMatch it fails with ErrChanged unless the
	// current ETag equals IfMatch. Readers never see a partial object.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (etag string, err error)
	// Stat returns an object's metadata (ErrNotFound if absent).
	Stat(ctx context.Context, key string) (Info, error)
	// List calls fn for every object whose key starts with prefix, in
	// lexical order, with its size, ETag and modification time.
	// ErrUnsupported on stores that cannot list.
	List(ctx context.Context, prefix string, fn func(Info) error) error
	// ListAfter is List of only the keys that sort after after (S3's
	// start-after): a reader that knows where new objects go lists just
	// those.
	ListAfter(ctx context.Context, prefix, after string, fn func(Info) error) error
	// Delete removes an object; deleting an absent object is not an error.
	Delete(ctx context.Context, key string) error
	// String is the bucket URL without credentials, for messages.
	String() string
}

// GetOptions tune a Get.
type GetOptions struct {
	MaxSize     int64  // 0 means DefaultMaxSize
	IfNoneMatch string // an ETag from an earlier Get
}

// DefaultMaxSize bounds reads that name no limit.
const DefaultMaxSize = 4 << 20

// PutOptions tune a Put.
type PutOptions struct {
	ContentType  string
	CacheControl string
	CreateOnly   bool   // fail with ErrExists if the key exists
	IfMatch      string // fail with ErrChanged unless the current ETag matches
	// UnsignedPayload leaves the body out of an S3 request's signature
	// (UNSIGNED-PAYLOAD), sparing client and server a SHA-256 pass over
	// it; over https minio-go does so anyway, TLS protecting the body.
	// Only for bodies their readers check end to end, as devices check a
	// NAR against its signed hash: on plain http an attacker on the path
	// could replace the body, which then fails that check.
	UnsignedPayload bool
}

// Object is a read object.
type Object struct {
	Data        []byte
	ETag        string
	ContentType string
	ModTime     time.Time
}

// Info is an object's metadata.
type Info struct {
	Key     string
	Size    int64
	ETag    string
	ModTime time.Time
}

// ValidateKey refuses keys that could escape a prefix or a directory, or
// that object stores treat inconsistently.
func ValidateKey(key string) error {
	if key == "" || len(key) > 1024 || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") ||
		strings.ContainsAny(key, "\\\x00\r\n") {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, tempPrefix) {
			return fmt.Errorf("%w: %q", ErrInvalidKey, key)
		}
	}
	return nil
}

// ReadLimited reads at most max bytes from r, failing with ErrTooLarge past it.
func ReadLimited(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	}
	return b, nil
}

// Limit is the most bytes a Get with these options may return.
func (o GetOptions) Limit() int64 {
	if o.MaxSize <= 0 {
		return DefaultMaxSize
	}
	return o.MaxSize
}

// PutBytes is Put for an in-memory body.
func PutBytes(ctx context.Context, s Store, key string, data []byte, opts PutOptions) (string, error) {
	return s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), opts)
}

// TrimETag turns an ETag header value into the bare form Stores use.
func TrimETag(e string) string {
	e = strings.TrimPrefix(e, "W/")
	return strings.Trim(e, "\"")
}
