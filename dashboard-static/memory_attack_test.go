package dashboard_test

import (
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/internal/testenv"
)

// TestAttackMemoryWipe: on a file:// bucket, whoever can write it (and so
// set a file's mtime) plants one check-in dated 20 minutes ahead, then
// rolls the registry back. Only the planted record is dropped from the
// snapshot: the reader still remembers version 2 and refuses version 1.
func TestAttackMemoryWipe(t *testing.T) {
	f := newSignedFleet(t)
	testenv.WriteRegistry(t, f.st, f.signer, 2, testenv.Registered("kiosk-1", f.k1)) // kiosk-2 removed
	fl := f.read(t, nil)
	if fl.Snapshot.Registry.Version != 2 {
		t.Fatalf("registry %+v", fl.Snapshot.Registry)
	}
	testenv.PutCheckin(t, f.st, "zz-plant", now.Add(20*time.Minute), []byte(`{}`))
	fl = f.read(t, fl.Snapshot)
	testenv.ClearRegistry(t, f.st) // a bucket writer deletes version 2 and puts 1 back
	testenv.WriteRegistry(t, f.st, f.signer, 1, testenv.Registered("kiosk-1", f.k1), testenv.Registered("kiosk-2", f.k2))
	fl = f.read(t, fl.Snapshot)
	counted, _ := rows(fl)
	t.Logf("after the plant: registry %+v, snapshot remembers %+v, kiosk-2 counted: %v", fl.Registry, fl.Snapshot.Registry, counted["kiosk-2"].Verified)
	if fl.Registry.Version == 1 && fl.Registry.Problem == "" {
		t.Errorf("a reader that had accepted version 2 accepted version 1 again (its snapshot was dropped)")
	}
}
