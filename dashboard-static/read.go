package dashboard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// CheckinSlack is how far before the previous read an incremental read
// starts listing windows: a device whose clock is this much behind still
// lands in a listed window. One further behind is seen by the next full
// read (Options.FullEvery), as are deletions.
const CheckinSlack = MaxClockSkew

// DefaultFullEvery is how old the last full read may be before a read
// lists every window again.
const DefaultFullEvery = time.Hour

// ReadStats say what a fleet read cost and found.
type ReadStats struct {
	Full         bool     `json:"full"`         // every window was listed
	Listed       int      `json:"listed"`       // check-ins listed
	Fetched      int      `json:"fetched"`      // status blobs read
	Unrecognised int      `json:"unrecognised"` // objects under devices/ that are no check-in
	Superseded   []string `json:"-"`            // listed objects no read uses: older check-ins of devices that wrote newer ones, and non-check-ins
	Pruned       int      `json:"pruned"`       // of those, deleted by the caller
}

// listed is what one listing found: each device's newest check-in in the
// listed windows, and the older ones.
type listed struct {
	newest     map[string]bucket.Info
	superseded []string
	count      int
	junk       int
}

func listCheckins(ctx context.Context, s bucket.Store, after string) (*listed, error) {
	l := &listed{newest: map[string]bucket.Info{}}
	err := s.ListAfter(ctx, bucket.DevicesPrefix, after, func(i bucket.Info) error {
		l.count++
		id, _, ok := bucket.ParseCheckinKey(i.Key)
		if !ok {
			l.junk++ // no reader uses it; a device may have put it there
			l.superseded = append(l.superseded, i.Key)
			return nil
		}
		switch cur, seen := l.newest[id]; {
		case !seen:
			l.newest[id] = i
		case bucket.Newer(i, cur):
			l.superseded = append(l.superseded, cur.Key)
			l.newest[id] = i
		default:
			l.superseded = append(l.superseded, i.Key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list device check-ins: %w", err)
	}
	return l, nil
}

// readFleet reads every device's newest check-in: all windows without a
// usable snapshot or when a full read is due, else only the windows since
// the snapshot's read, merged into it. It returns the next snapshot.
func readFleet(ctx context.Context, s bucket.Store, o Options) (*Snapshot, ReadStats, error) {
	prev, full := previous(s, o)
	after := ""
	if !full {
		after = bucket.CheckinsFrom(prev.ReadAt.Add(-CheckinSlack))
	}
	forgotten, err := ReadForgotten(ctx, s)
	if err != nil {
		return nil, ReadStats{}, err
	}
	l, err := listCheckins(ctx, s, after)
	if err != nil {
		return nil, ReadStats{}, err
	}
	next := &Snapshot{Bucket: s.String(), ReadAt: o.Now, FullAt: o.Now}
	if !full {
		next.FullAt = prev.FullAt
	}
	fetch := next.merge(prev, l, full)
	if prev != nil {
		prev.Records = nil // merged into next: let the collector have them
	}
	slices.Sort(l.superseded)
	l.superseded = slices.Compact(l.superseded)
	st := ReadStats{Full: full, Listed: l.count, Fetched: len(fetch), Unrecognised: l.junk, Superseded: l.superseded}
	if err := fetchAll(ctx, s, next.Records, fetch, o.Concurrency); err != nil {
		return nil, st, err
	}
	next.Records = slices.DeleteFunc(next.Records, forgotten.dropper(o.Now))
	return next, st, nil
}

// previous is the snapshot a read may build on (nil: none usable) and
// whether the read must list every window anyway.
func previous(s bucket.Store, o Options) (*Snapshot, bool) {
	prev := o.Snapshot
	if prev == nil || prev.Bucket != s.String() || !prev.plausible(o.Now) {
		return nil, true
	}
	prev.dropAhead()
	return prev, o.Full || o.Now.Sub(prev.FullAt) >= o.FullEvery
}

// merge fills s.Records from the previous snapshot and what was listed,
// in device id order, and returns the indexes of records whose blob must
// be read. A full read keeps only listed devices (the others are gone); an
// incremental one keeps every previous device and moves forward those
// with a newer check-in.
func (s *Snapshot) merge(prev *Snapshot, l *listed, full bool) []int {
	ids := make([]string, 0, len(l.newest))
	for id := range l.newest {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var old []Record
	if prev != nil {
		old = prev.Records
	}
	s.Records = make([]Record, 0, max(len(ids), len(old)))
	var fetch []int
	i, j := 0, 0
	for i < len(old) || j < len(ids) {
		switch {
		case j == len(ids) || i < len(old) && old[i].Device.ID < ids[j]:
			if !full {
				s.Records = append(s.Records, old[i])
			}
			i++
		case i == len(old) || ids[j] < old[i].Device.ID:
			fetch = s.add(nil, l.newest[ids[j]], fetch, l, full)
			j++
		default:
			fetch = s.add(&old[i], l.newest[ids[j]], fetch, l, full)
			i, j = i+1, j+1
		}
	}
	return fetch
}

// add appends the record of a listed check-in, reusing what the previous
// record read when the blob is the same.
//
// Only a listing decides what is superseded (listCheckins): a snapshot is
// local state and never gets a check-in deleted. The previous newest
// check-in of a device that wrote a newer one is pruned by the next full
// read, which lists both.
func (s *Snapshot) add(prev *Record, in bucket.Info, fetch []int, l *listed, full bool) []int {
	if prev != nil && !full && in.Key != prev.Checkin.Key && !bucket.Newer(in, prev.Checkin) {
		s.Records = append(s.Records, *prev) // an older check-in of this device
		return fetch
	}
	id, _, _ := bucket.ParseCheckinKey(in.Key)
	if prev != nil && sameBlob(prev.Checkin, in) {
		r := *prev
		r.Checkin = in
		s.Records = append(s.Records, r)
		return fetch
	}
	r := Record{Checkin: in, Device: Device{ID: id, State: Invalid}}
	if prev != nil {
		r.Accepted = prev.accepted()
	}
	if err := manifest.ValidateName("device id", id); err != nil {
		r.Device.LastError = "status blob under an invalid device id"
		s.Records = append(s.Records, r)
		return fetch
	}
	s.Records = append(s.Records, r)
	return append(fetch, len(s.Records)-1)
}

// sameBlob: two check-ins hold the same bytes. ETags are content hashes
// on every backend nix-ota writes with (MD5 on S3 for a single PUT).
func sameBlob(a, b bucket.Info) bool { return a.ETag != "" && a.ETag == b.ETag && a.Size == b.Size }

// fetchAll reads the blobs of records[i] for i in idx, n at a time.
func fetchAll(ctx context.Context, s bucket.Store, records []Record, idx []int, n int) error {
	var wg sync.WaitGroup
	work := make(chan int)
	for range min(n, max(len(idx), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				fetch(ctx, s, &records[i])
			}
		}()
	}
	for _, i := range idx {
		work <- i
	}
	close(work)
	wg.Wait()
	return ctx.Err()
}

// fetch reads one check-in into r. A blob that does not parse is kept as
// invalid under its ETag (it will not parse next time either); one that
// could not be read is not (ETag cleared), so the next read tries again.
func fetch(ctx context.Context, s bucket.Store, r *Record) {
	id := r.Device.ID
	obj, err := s.Get(ctx, r.Checkin.Key, bucket.GetOptions{MaxSize: status.MaxSize})
	switch {
	case errors.Is(err, bucket.ErrTooLarge):
		r.Device = Device{ID: id, State: Invalid, LastError: "status blob too large"}
		return
	case err != nil:
		r.Device = Device{ID: id, State: Invalid, LastError: "unreadable status blob: " + status.Clean(err.Error(), 1024)}
		r.Checkin.ETag = ""
		return
	}
	signed, err := status.Open(id, obj.Data)
	if err != nil {
		r.Device = Device{ID: id, State: Invalid, LastError: err.Error()}
		return
	}
	st := signed.Status
	r.SignedAt, r.Key = signed.SignedAt, ""
	if signed.Key != nil {
		r.Key = status.EncodeKey(signed.Key)
	}
	r.Heartbeat = time.Duration(st.HeartbeatSeconds) * time.Second
	r.Device = Device{ID: id, Channel: st.Channel, Class: st.Class, State: st.State, Reported: st.State, Revision: st.Revision,
		StorePath: st.StorePath, NeedsReboot: st.NeedsReboot, LastError: st.LastError,
		Note: st.Note, AgentVersion: st.AgentVersion, Attempted: st.Attempted}
	if st.Fetch != (status.Fetch{}) {
		r.Device.Fetched = &st.Fetch
	}
}

// live is a record's row as of now: checked in when the bucket last wrote
// its check-in, offline after three heartbeats without one.
func (r Record) live(now time.Time) Device {
	d := r.Device
	d.CheckedAt = r.Checkin.ModTime
	if d.State == Invalid {
		return d
	}
	if ahead := d.CheckedAt.Sub(now); ahead > MaxClockSkew {
		d.State = Invalid
		d.LastError = fmt.Sprintf("clock ahead: checked in at %s, %s after this machine's clock (allowed skew %s); fix the clock of this machine or of the bucket's host", d.CheckedAt.UTC().Format(time.RFC3339), ahead.Round(time.Second), MaxClockSkew)
		return d
	}
	hb := r.Heartbeat
	if hb <= 0 {
		hb = DefaultHeartbeat
	}
	d.Offline = now.Sub(d.CheckedAt) > 3*hb
	return d
}
