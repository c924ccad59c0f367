package cli

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/minio/minio-go/v7"
)

// hinted is an error with what to do about it appended.
type hinted struct {
	err  error
	hint string
}

func (h hinted) Error() string { return h.err.Error() + " (" + h.hint + ")" }
func (h hinted) Unwrap() error { return h.err }

// explain adds what to do to the errors whose text alone does not say it:
// an s3:// URL with the wrong scheme or region.
func explain(err error) error {
	var h hinted
	if err == nil || errors.As(err, &h) {
		return err
	}
	if hint := hintFor(err); hint != "" {
		return hinted{err, hint}
	}
	return err
}

// tlsToPlain is how net/http reports a TLS handshake answered with a TLS
// alert: the server speaks TLS and the client plain HTTP.
var tlsToPlain = regexp.MustCompile(`malformed HTTP response "\\x15\\x03`)

// expectingRegion finds the region S3 and MinIO name in a wrong-region
// error ("… the region is wrong; expecting 'eu-central-1'").
var expectingRegion = regexp.MustCompile(`expecting '([a-z0-9-]+)'`)

// regionCodes are S3 error codes whose usual cause is a region= that is
// not the bucket's.
var regionCodes = map[string]bool{"AuthorizationHeaderMalformed": true, "PermanentRedirect": true, "InvalidRegion": true, "IllegalLocationConstraintException": true}

func hintFor(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, http.ErrSchemeMismatch.Error()):
		return "the server speaks plain HTTP: add &scheme=http to the bucket URL"
	case tlsToPlain.MatchString(msg):
		return "the server speaks HTTPS: drop scheme=http from the bucket URL"
	}
	var er minio.ErrorResponse
	if !errors.As(err, &er) || !regionCodes[er.Code] {
		return ""
	}
	region := er.Region
	if m := expectingRegion.FindStringSubmatch(er.Message); region == "" && m != nil {
		region = m[1]
	}
	if region == "" {
		return "is region= in the bucket URL the bucket's region? set &region=REGION"
	}
	return fmt.Sprintf("the bucket is in region %s: set &region=%s in the bucket URL", region, region)
}
