package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/nix-ota/nix-ota/bucket"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/atomicfile"
)

// readFleet is dashboard.Collect through this machine's snapshot of the
// bucket's fleet: a read after an earlier one lists only the check-in
// windows written since and reads only the blobs that changed
// (dashboard.Snapshot). The snapshot lives in $NIX_OTA_CACHE_DIR
// (default $XDG_CACHE_HOME/nix-ota or ~/.cache/nix-ota); "off" reads the
// whole fleet every time. A snapshot that cannot be read or written costs a
// full read, never a wrong fleet.
func readFleet(ctx context.Context, env *Env, s bucket.Store, o dashboard.Options) (*dashboard.Fleet, error) {
	path := snapshotPath(env, s.String())
	if path != "" && o.Snapshot == nil {
		o.Snapshot = loadSnapshot(path, s.String())
	}
	if o.Snapshot != nil && env.Getenv("GOMEMLIMIT") == "" {
		// The fleet's size is known: keep the heap near what it needs
		// (about 1,000 bytes a device, its row and check-in, and its entry
		// in the device registry the snapshot keeps: bench/dashboard) instead
		// of letting it grow to twice that between collections.
		debug.SetMemoryLimit(48<<20 + 1000*int64(len(o.Snapshot.Records)))
	}
	f, err := dashboard.Collect(ctx, s, o)
	if err != nil {
		return nil, err
	}
	if path != "" {
		if err := saveSnapshot(path, f.Snapshot); err != nil {
			fmt.Fprintf(env.Stderr, "warning: fleet snapshot not saved (the next read lists every device again): %s\n", oneLine(err.Error(), 300))
		}
	}
	return f, nil
}

// snapshotPath is where the snapshot of a bucket's fleet is kept, or "".
func snapshotPath(env *Env, bucketURL string) string {
	dir := env.Getenv("NIX_OTA_CACHE_DIR")
	switch {
	case dir == "off":
		return ""
	case dir != "":
	case env.Getenv("XDG_CACHE_HOME") != "":
		dir = filepath.Join(env.Getenv("XDG_CACHE_HOME"), "nix-ota")
	case env.Getenv("HOME") != "":
		dir = filepath.Join(env.Getenv("HOME"), ".cache", "nix-ota")
	default:
		return ""
	}
	sum := sha256.Sum256([]byte(bucketURL))
	return filepath.Join(dir, "fleet-"+hex.EncodeToString(sum[:8])+".snapshot")
}

func loadSnapshot(path, bucketURL string) *dashboard.Snapshot {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	s, err := dashboard.DecodeSnapshot(f, bucketURL)
	if err != nil {
		return nil
	}
	return s
}

func saveSnapshot(path string, s *dashboard.Snapshot) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	var b bytes.Buffer
	if err := s.Encode(&b); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b.Bytes(), 0o600)
}
