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
	// Registry is the newest device registry this machine accepted: an
	// older one in the bucket is then refused (a rollback).
	Registry manifest.RegistryState
	// RegistryCache is that registry as a full read verified it.
	RegistryCache *CachedRegistry
}

// Record is one device in a snapshot.
type Record struct {
	Checkin   bucket.Info   // its newest check-in: key, size, ETag, LastModified
	Heartbeat time.Duration // how often it promised to check in
	Device    Device        // what the check-in said, before any derived state
	Key       string        // the key that signed it (status.EncodeKey); "" when unsigned
	SignedAt  time.Time     // when it was signed, by the device's clock
	// Accepted is the device's last check-in that passed verification,
	// when that is not the newest; NewestAccepted says the newest is (the
	// usual case, kept without a second copy of the row).
	Accepted       *Accepted
	NewestAccepted bool
}

// accepted is the record's last verified check-in, or nil.
func (r *Record) accepted() *Accepted {
	if r.NewestAccepted {
		return &Accepted{Checkin: r.Checkin, Heartbeat: r.Heartbeat, Device: r.Device, Key: r.Key, SignedAt: r.SignedAt}
	}
	return r.Accepted
}

// snapshotMagic starts every encoded snapshot; a new encoding gets a new
// magic, and an old snapshot is then simply not used.
const snapshotMagic = "nix-ota fleet snapshot 3\n"

// MaxSnapshot bounds a snapshot read back (about 40x a 100,000-device one).
const MaxSnapshot = 1 << 30

// batch is how many records go in one gob message: encoding and decoding
// then stream, instead of building the whole snapshot as one message.
const batch = 1024

// preallocMax bounds the room a snapshot's head can make a reader set
// aside before any record is read.
const preallocMax = 1 << 18

// ErrSnapshot: a snapshot that cannot be used; the read is then a full one.
var ErrSnapshot = errors.New("unusable fleet snapshot")

// snapshotHead is the first gob message.
type snapshotHead struct {
	Bucket         string
	ReadAt, FullAt time.Time
	Records        int
	Registry       manifest.RegistryState
	RegistryCache  *CachedRegistry
}

// Encode writes the snapshot compressed: zstd over gob, the records in
// batches.
func (s *Snapshot) Encode(w io.Writer) error {
	if _, err := io.WriteString(w, snapshotMagic); err != nil {
		return err
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	enc := gob.NewEncoder(zw)
	err = enc.Encode(snapshotHead{s.Bucket, s.ReadAt, s.FullAt, len(s.Records), s.Registry, s.RegistryCache})
	for i := 0; err == nil && i < len(s.Records); i += batch {
		err = enc.Encode(s.Records[i:min(i+batch, len(s.Records))])
	}
	if err != nil {
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
	dec := gob.NewDecoder(io.LimitReader(zr, MaxSnapshot))
	var h snapshotHead
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	if h.Bucket != bucketURL {
		return nil, fmt.Errorf("%w: it describes %s, not %s", ErrSnapshot, h.Bucket, bucketURL)
	}
	if h.Records < 0 || h.Records > MaxSnapshot/64 {
		return nil, fmt.Errorf("%w: %d records", ErrSnapshot, h.Records)
	}
	// Room for every record at once: growing a slice of 100,000 records
	// copies them over and over (1.2 s of a warm read). A head claiming
	// more than preallocMax gets that much room and grows from there.
	s := &Snapshot{Bucket: h.Bucket, ReadAt: h.ReadAt, FullAt: h.FullAt, Registry: h.Registry, RegistryCache: h.RegistryCache, Records: make([]Record, 0, min(h.Records, preallocMax))}
	seen := map[string]string{}
	for len(s.Records) < h.Records {
		var part []Record
		if err := dec.Decode(&part); err != nil || len(part) == 0 || len(part) > batch {
			return nil, fmt.Errorf("%w: records %d of %d: %v", ErrSnapshot, len(s.Records), h.Records, err)
		}
		intern(part, seen)
		s.Records = append(s.Records, part...)
	}
	if len(s.Records) != h.Records {
		return nil, fmt.Errorf("%w: %d records, the head says %d", ErrSnapshot, len(s.Records), h.Records)
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	return s, nil
}

func (s *Snapshot) check() error {
	if c := s.RegistryCache; c != nil {
		if c.Registry.Version != s.Registry.Version || !slices.IsSortedFunc(c.Registry.Devices, func(a, b manifest.DeviceEntry) int { return strings.Compare(a.ID, b.ID) }) {
			return fmt.Errorf("cached device registry: version %d, snapshot says %d, or unsorted", c.Registry.Version, s.Registry.Version)
		}
	}
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
		if a := r.Accepted; a != nil {
			if key, _, ok := bucket.ParseCheckinKey(a.Checkin.Key); !ok || key != id || a.Device.ID != id {
				return fmt.Errorf("record %d: accepted check-in %q is not one of %q", i, a.Checkin.Key, id)
			}
		}
	}
	return nil
}

// intern makes records share the strings most devices repeat (store
// paths, channels, versions) through seen: a 100,000-device fleet keeps a
// few copies rather than 100,000.
func intern(records []Record, seen map[string]string) {
	in := func(v *string) {
		if u, ok := seen[*v]; ok {
			*v = u
		} else if len(seen) < 4096 {
			seen[*v] = *v
		}
	}
	for i := range records {
		d := &records[i].Device
		in(&d.Channel)
		in(&d.Class)
		in(&d.StorePath)
		in(&d.AgentVersion)
		in(&d.State)
		in(&d.Reported)
		in(&d.LastError)
		if a := records[i].Accepted; a != nil {
			in(&a.Device.Channel)
			in(&a.Device.StorePath)
			in(&a.Device.AgentVersion)
			in(&a.Device.State)
			in(&a.Device.Reported)
		}
	}
}

// plausible: the snapshot's own dates are not after now (plus the clock
// skew readers allow). A snapshot from the future would keep a full read
// from ever being due; it is not used, and the read is a full one.
func (s *Snapshot) plausible(now time.Time) bool {
	return !s.ReadAt.After(now.Add(MaxClockSkew)) && !s.FullAt.After(s.ReadAt)
}

// dropAhead removes what is dated after its read (a bucket clock ahead, or
// a file:// object whose time a writer set): such a record would win over
// real check-ins, such an accepted check-in would refuse them as replays.
// Only those go, so one object dated ahead cannot wipe what the snapshot
// remembers (the registry version, other devices' accepted check-ins); a
// read that dropped any is a full one.
func (s *Snapshot) dropAhead() {
	limit := s.ReadAt.Add(MaxClockSkew)
	n := len(s.Records)
	s.Records = slices.DeleteFunc(s.Records, func(r Record) bool { return r.Checkin.ModTime.After(limit) })
	for i := range s.Records {
		if a := s.Records[i].Accepted; a != nil && (a.SignedAt.After(limit) || a.Checkin.ModTime.After(limit)) {
			s.Records[i].Accepted = nil
			n++ // not a record less, but a reason to read everything
		}
	}
	if len(s.Records) != n {
		s.FullAt = time.Time{}
	}
}

// keepAccepted drops from superseded the check-ins records still count
// (their newest was refused), and every check-in of a contested device:
// pruning must not delete a device's own status because something newer
// was written under its id.
func (s *Snapshot) keepAccepted(superseded []string, contested map[string]bool) []string {
	keep := map[string]bool{}
	for _, r := range s.Records {
		if r.Accepted != nil {
			keep[r.Accepted.Checkin.Key] = true
		}
	}
	if len(keep) == 0 && len(contested) == 0 {
		return superseded
	}
	return slices.DeleteFunc(superseded, func(k string) bool {
		id, _, _ := bucket.ParseCheckinKey(k)
		return keep[k] || contested[id]
	})
}
