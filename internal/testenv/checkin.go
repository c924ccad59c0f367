package testenv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
)

// PutCheckin writes a device's check-in blob as the device would at time
// at, and returns its key. On a file:// bucket the object is dated at
// (readers take its modification time as the check-in time); on S3 the
// server dates it now.
func PutCheckin(t testing.TB, s bucket.Store, device string, at time.Time, body []byte) string {
	t.Helper()
	key := bucket.CheckinKey(device, at)
	if _, err := bucket.PutBytes(context.Background(), s, key, body, bucket.JSONPut()); err != nil {
		t.Fatal(err)
	}
	if err := bucket.Touch(s, key, at); err != nil && !errors.Is(err, bucket.ErrUnsupported) {
		t.Fatal(err)
	}
	return key
}
