package dashboard

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
)

// Snapshot is what a fleet read leaves for the next one: every device's
// newest check-in and what it said. With it, the next read lists only the
// check-in windows written since (bucket.CheckinWindow) and reads only the
// blobs whose ETag it has not seen, so its cost follows what changed, not
// the fleet's size. Liveness is recomputed from the check-ins' times at
// every read, so a snapshot never keeps a device online.
type Snapshot struct {
	Bucket  string    // the bucket it describes (its URL without credentials)
	ReadAt  time.Time // when the read that made it listed, by this machine's clock
	FullAt  time.Time // when the last read of every window listed
	Records []Record  // one per device, sorted by device id
}

// Record is one device in a snapshot.
type Record struct {
	Checkin   bucket.Info   // its newest check-in: key, size, ETag, LastModified
	Heartbeat time.Duration // how often it promised to check in
	Device    Device        // what the check-in said, before any derived state
}

// snapshotMagic starts every encoded snapshot; a new encoding gets a new
// magic, and an old snapshot is then simply not used.
const snapshotMagic = "nix-ota fleet snapshot 1\n"

// MaxSnapshot bounds a snapshot read back (about 40x a 100,000-device one).
const MaxSnapshot = 1 << 30

// ErrSnapshot: a snapshot that cannot be used; the read is then a full one.
var ErrSnapshot = errors.New("unusable fleet snapshot")

// Encode writes the snapshot compressed (zstd over gob).
func (s *Snapshot) Encode(w io.Writer) error {
	if _, err := io.WriteString(w, snapshotMagic); err != nil {
		return err
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return err
	}
	if err := gob.NewEncoder(zw).Encode(s); err != nil {
		zw.Close()
		return err
	}
	return zw.Close()
}

// DecodeSnapshot reads a snapshot written by Encode for bucketURL and
// checks it: the right bucket, records sorted by valid, unique device
// ids, every check-in key belonging to its device. Anything else is
// ErrSnapshot, and the caller reads the whole fleet instead.
func DecodeSnapshot(r io.Reader, bucketURL string) (*Snapshot, error) {
	head := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(r, head); err != nil || string(head) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a snapshot of this version", ErrSnapshot)
	}
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxSnapshot))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	var s Snapshot
	if err := gob.NewDecoder(io.LimitReader(zr, MaxSnapshot)).Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	if s.Bucket != bucketURL {
		return nil, fmt.Errorf("%w: it describes %s, not %s", ErrSnapshot, s.Bucket, bucketURL)
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	s.intern()
	return &s, nil
}

func (s *Snapshot) check() error {
	for i, r := range s.Records {
		id := r.Device.ID
		if i > 0 && s.Records[i-1].Device.ID >= id {
			return fmt.Errorf("record %d: device ids out of order", i)
		}
		if key, _, ok := bucket.ParseCheckinKey(r.Checkin.Key); !ok || key != id {
			return fmt.Errorf("record %d: %q is not a check-in of %q", i, r.Checkin.Key, id)
		}
		if r.Device.State != Invalid && manifest.ValidateName("device id", id) != nil {
			return fmt.Errorf("record %d: invalid device id", i)
		}
	}
	return nil
}

// intern makes the records share the strings most devices repeat (store
// paths, channels, versions): a 100,000-device fleet keeps a few copies
// rather than 100,000.
func (s *Snapshot) intern() {
	seen := map[string]string{}
	in := func(v *string) {
		if u, ok := seen[*v]; ok {
			*v = u
		} else {
			seen[*v] = *v
		}
	}
	for i := range s.Records {
		d := &s.Records[i].Device
		in(&d.Channel)
		in(&d.Class)
		in(&d.StorePath)
		in(&d.AgentVersion)
		in(&d.State)
		in(&d.Reported)
		in(&d.LastError)
	}
}

// find returns the record of device id, or nil.
func (s *Snapshot) find(id string) *Record {
	if s == nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(s.Records, id, func(r Record, id string) int { return strings.Compare(r.Device.ID, id) })
	if !ok {
		return nil
	}
	return &s.Records[i]
}
